"""The testbed as an instrument: measure its validity targets and write results/testbed/validity.md.

    make testbed-validity            # = .venv/bin/python bench/testbed_validity.py

What it measures, at the default settings (model `tiny`, task `chain`, train `testbed`):
1. The warm start, before RL: completions of the held-out `chain` problems sampled at T = 1
   (tokens per completion, intermediate steps), held-out Avg@16 and Pass@16 with bootstrap CIs.
2. `sweeps/validity.yaml` (grpo and abc_grpo x 3 seeds, as planned at today's defaults) through
   `abcx sweep run` on the local backend, which trains only what the results folder lacks. The run
   records give the "2-method x 3-seed comparison" wall time (first submission to last end), the time
   per training step (each job trains on one torch thread, so on one core), the entropy curves and the
   held-out evaluation at the end (the same problems, sampling settings and seed as in 1). A fresh
   `--results-dir` times the instrument anew; the default one regenerates the file from the records.
3. GRPO's gain in held-out Avg@16 over the warm start, pooled over seeds: a paired two-level
   bootstrap over problems and seeds (abcx.evaluation.metrics.bootstrap_diff_pooled).
The targets are properties of the instrument, not of which method wins: ABC-GRPO's runs are in the
table only because the time target is about a comparison.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from _env import machine_line  # noqa: E402
from _records import span  # noqa: E402
OUT = REPO / "results" / "testbed" / "validity.md"
BENCHMARK = "chain"
SWEEP = "validity"


def eval_sampling():
    from abcx.config.compose import compose
    from abcx.evaluation.sampling import Sampling

    cfg = compose([])
    return Sampling.from_config(cfg.eval), int(cfg.eval.max_problems), cfg


def warm_start_stats(model_path: Path) -> dict:
    """Sample the warm-start policy on the held-out problems exactly as the runs' final eval does."""
    from abcx.evaluation.metrics import bootstrap_ci, summarise
    from abcx.evaluation.runner import load_for_eval, problems_for
    from abcx.evaluation.sampling import render_prompts, sample_hf

    import torch

    torch.set_num_threads(1)
    sampling, max_problems, cfg = eval_sampling()
    prompts, golds, check = problems_for(BENCHMARK, max_problems)
    model, tok = load_for_eval(str(model_path))
    groups = sample_hf(model, tok, render_prompts(tok, prompts), sampling, batch_size=int(cfg.eval.batch_size))
    flat = [c for g in groups for c in g]
    correct = check(flat, [a for a, g in zip(golds, groups) for _ in g])
    per_problem, i = [], 0
    for g in groups:
        per_problem.append((len(g), int(sum(correct[i:i + len(g)]))))
        i += len(g)
    tokens = [len(tok(c, add_special_tokens=False)["input_ids"]) + 1 for c in flat]  # + the <eos>
    metrics = summarise(per_problem, [sampling.n])
    return {
        "per_problem": per_problem, "problems": len(per_problem), "n": sampling.n, "sampling": sampling.as_dict(),
        "avg": metrics[f"avg@{sampling.n}"], "avg_ci": bootstrap_ci(per_problem, None),
        "pass": metrics[f"pass@{sampling.n}"], "pass_ci": bootstrap_ci(per_problem, sampling.n),
        "tokens": statistics.mean(tokens), "steps": statistics.mean(c.count("=") for c in flat),
    }


def run_sweep(results_dir: Path, overrides: list[str]) -> float:
    """Train what the sweep still lacks (nothing, when it has run), then its wall time from the records."""
    abcx = Path(sys.executable).with_name("abcx")
    subprocess.run([str(abcx), "sweep", "run", SWEEP, "--wait", *overrides, f"results_dir={results_dir}"], check=True,
                   cwd=REPO)
    return sweep_wall_s(results_dir, overrides)


def planned_run_ids(results_dir: Path, overrides: list[str]) -> list[str]:
    """The runs the sweep plans at today's defaults. Its manifest also lists runs of earlier plans (a
    default that has moved since), which say nothing about the instrument as it is now."""
    from abcx.sweep.command import plan_sweep

    return [run.run_id for run in plan_sweep(SWEEP, [*overrides, f"results_dir={results_dir}"])[1]]


def sweep_wall_s(results_dir: Path, overrides: list[str]) -> float:
    """The comparison's wall time from its run records: the first job's submission to the last run's
    end (the same figure whether the runs were trained by this call or an earlier one)."""
    from abcx.record import RunRecord, runs_dir

    return span([RunRecord(runs_dir(results_dir) / run_id).status() for run_id in planned_run_ids(results_dir, overrides)])[0]


def run_stats(results_dir: Path, overrides: list[str]) -> dict[str, list[dict]]:
    """Per method, one dict per seed: seconds per step, entropy fall, final eval, completion length."""
    from abcx.record import RunRecord, runs_dir

    out: dict[str, list[dict]] = {}
    for run_id in planned_run_ids(results_dir, overrides):
        record = RunRecord(runs_dir(results_dir) / run_id)
        rows = [r for r in record.metrics() if "entropy" in r]
        times = [r["time"] for r in rows]
        entropy = [r["entropy"] for r in rows]
        evals = [e for e in _evals(record) if e["benchmark"] == BENCHMARK]
        final = max(evals, key=lambda e: e["step"] or 0)
        out.setdefault(record.meta()["method"], []).append({
            "run_id": record.run_id, "seed": record.meta()["seed"], "steps": rows[-1]["step"],
            "s_per_step": (times[-1] - times[0]) / max(1, rows[-1]["step"] - rows[0]["step"]),
            "entropy_first": statistics.mean(entropy[:10]), "entropy_last": statistics.mean(entropy[-10:]),
            "length_last": statistics.mean(r["completion_length"] for r in rows[-10:] if "completion_length" in r),
            "per_problem": [tuple(p) for p in final["per_problem"]], "final_step": final["step"],
            "sampling": final["sampling"],
        })
    return out


def _evals(record) -> list[dict]:
    return record.evals()


def judge(base: dict, runs: dict[str, list[dict]], sweep_s: float) -> list[tuple[str, str, str, bool]]:
    """(target, measured, goal, met) rows."""
    from abcx.evaluation.metrics import avg_at_k, bootstrap_diff_pooled

    grpo = runs["grpo"]
    est, lo, hi = bootstrap_diff_pooled([r["per_problem"] for r in grpo], [base["per_problem"]], None, seed=0)
    falls = [1 - r["entropy_last"] / r["entropy_first"] for r in grpo]
    per_step = [r["s_per_step"] for rs in runs.values() for r in rs]
    after = [avg_at_k(r["per_problem"]) for r in grpo]
    n = base["n"]
    return [
        ("completion length, warm start (tokens, incl. eos)", f"{base['tokens']:.1f}", ">= 20", base["tokens"] >= 20),
        ("intermediate steps per completion, warm start", f"{base['steps']:.2f}", ">= 3", base["steps"] >= 3),
        (f"warm start held-out Avg@{n} (T = 1)", f"{base['avg']:.3f} [{base['avg_ci'][0]:.3f}, {base['avg_ci'][1]:.3f}]",
         "0.15 .. 0.65", 0.15 <= base["avg"] <= 0.65),
        (f"warm start held-out Pass@{n}", f"{base['pass']:.3f} [{base['pass_ci'][0]:.3f}, {base['pass_ci'][1]:.3f}]",
         "<= 0.95", base["pass"] <= 0.95),
        (f"GRPO gain in held-out Avg@{n}, {len(grpo)} seeds x {base['problems']} problems (paired 95% CI)",
         f"{est:+.3f} [{lo:+.3f}, {hi:+.3f}] (after: {', '.join(f'{a:.3f}' for a in after)})",
         ">= +0.10, CI excludes 0", est >= 0.10 and lo > 0),
        ("GRPO entropy fall over the run (first vs last 10 steps)",
         ", ".join(f"{f:.1%}" for f in falls), ">= 40% (each seed)", min(falls) >= 0.40),
        ("seconds per training step, one core (each run, median of runs)",
         f"{statistics.median(per_step):.3f} (max {max(per_step):.3f})", "<= 0.5", max(per_step) <= 0.5),
        (f"{len(runs)}-method x {len(grpo)}-seed comparison, 2 cores (`abcx sweep run {SWEEP}`: first submission to last end)",
         f"{sweep_s / 60:.1f} min", "<= 10 min", sweep_s <= 600),
    ]


def write(out: Path, info: dict, base: dict, runs: dict[str, list[dict]], rows, sweep_s: float,
          overrides: list[str] = ()) -> None:
    lines = [
        "# Testbed validity", "",
        "Generated by `make testbed-validity` (bench/testbed_validity.py); do not edit by hand.", "",
        machine_line(), "",
        *([f"Sweep overrides: `{' '.join(overrides)}` (not the default settings).", ""] if overrides else []),
        f"Model: `tiny` = {info['name']} ({info['parameters']:,} parameters), warm start "
        f"{info['recipe']['warm']['steps']} of {info['recipe']['warm']['planned_steps']} planned SFT steps "
        f"({info['sft']['seconds']:.0f} s to build here). Evaluation: {base['problems']} held-out `chain` problems, "
        f"n = {base['n']} samples each, T = {base['sampling']['temperature']}, top_p {base['sampling']['top_p']}, "
        f"top_k {base['sampling']['top_k']}, the same for the warm start and every run's final model.", "",
        "| target | measured | goal | met |", "|---|---|---|---|",
        *[f"| {t} | {m} | {g} | {'yes' if ok else '**no**'} |" for t, m, g, ok in rows], "",
        "## Runs", "", "| method | seed | steps | s/step | entropy first -> last 10 | tokens/completion, last 10 | "
        f"held-out Avg@{base['n']} |", "|---|---|---|---|---|---|---|",
    ]
    from abcx.evaluation.metrics import avg_at_k

    for method, rs in sorted(runs.items()):
        for r in sorted(rs, key=lambda r: r["seed"]):
            lines.append(f"| {method} | {r['seed']} | {r['steps']} | {r['s_per_step']:.3f} | {r['entropy_first']:.4f} -> "
                         f"{r['entropy_last']:.4f} | {r['length_last']:.1f} | {avg_at_k(r['per_problem']):.3f} |")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += ["", f"Sweep wall time {sweep_s:.0f} s. Entropy is TRL's mean token entropy of the sampled completions. "
              f"Load average (1 / 5 / 15 min) when it was written: {load}; the time targets assume the "
              f"{os.cpu_count()} cores are otherwise idle."]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results-dir", default=str(REPO / "results"), help="where the sweep's run records go")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("overrides", nargs="*", help="sweep overrides, e.g. the pool screen of results/testbed/README.md: "
                    "method=grpo task.options.n_train=200 (with its own --results-dir and --out)")
    args = ap.parse_args(argv)
    from abcx.errors import UserError
    from abcx.testbed import ensure_tiny_model, read_testbed_info

    try:
        planned_run_ids(Path(args.results_dir), args.overrides)  # a bad override: one line, before anything runs
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    model = ensure_tiny_model()
    info = read_testbed_info(model)
    base = warm_start_stats(model)
    print(f"warm start: Avg@{base['n']} {base['avg']:.3f}, Pass@{base['n']} {base['pass']:.3f}, "
          f"{base['tokens']:.1f} tokens, {base['steps']:.2f} steps", flush=True)
    sweep_s = run_sweep(Path(args.results_dir), args.overrides)
    runs = run_stats(Path(args.results_dir), args.overrides)
    rows = judge(base, runs, sweep_s)
    write(Path(args.out), info, base, runs, rows, sweep_s, args.overrides)
    for t, m, g, ok in rows:
        print(f"{'ok  ' if ok else 'MISS'} {t}: {m} (goal {g})")
    print(f"wrote {args.out}")
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
