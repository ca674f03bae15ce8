"""The testbed study's own tables and plots: results/testbed/study.md, study.json and plots/*.png.

    .venv/bin/python bench/testbed_study.py --out results/testbed     # (the last steps of `make study`)

It reads the run records of the sweeps `study` (clipping rules x 3 seeds), `epsilons` (ABC-GRPO's
eps3 x eps4) and `regime` (GRPO vs ABC-GRPO in cells that move one axis of the default regime),
evaluates the warm start once as the base model (same problems, sampling and seed as the runs'
final evaluation), and writes, per method or cell: the fraction of tokens clipped and the Q1-Q4
shares of out-of-band tokens, the entropy at the start and the end and its ratio to GRPO's, held-out
Avg@64 and Pass@k for k = 1..64 on `chain` and `chain_hard` pooled over seeds with two-level bootstrap
CIs (problems x seeds), and every difference to GRPO as a paired bootstrap CI. `abcx report` draws the
per-step panels; this script adds what it does not: Pass@k against k with the base model.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from _env import machine_line  # noqa: E402
from _records import span  # noqa: E402
BENCHMARKS = ("chain", "chain_hard")
SWEEPS = ("study", "epsilons", "regime")
KS = (1, 2, 4, 8, 16, 32, 64)


def base_model_eval(results_dir: Path) -> dict[str, list[tuple[int, int]]]:
    """The warm start's per-problem counts, evaluated once and kept beside the sweeps."""
    from abcx.testbed import DEFAULT_RECIPE, ensure_tiny_model

    cache = results_dir / "sweeps" / "study" / "base_eval.json"
    build = DEFAULT_RECIPE.folder_name()
    try:
        cached = json.loads(cache.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: evaluate again
        cached = {}
    if cached.get("model_build") == build:  # a cache of another warm start (or of no recorded one) is redone
        return {k: [tuple(p) for p in v] for k, v in cached["per_problem"].items()}
    from abcx.config.compose import compose
    from abcx.evaluation.runner import evaluate, load_for_eval
    from abcx.evaluation.sampling import Sampling
    from abcx.record import atomic_write_json

    import torch

    torch.set_num_threads(1)
    from abcx.sweep.spec import load_sweep

    # Exactly the study's evaluation: the eval overrides of sweeps/study.yaml.
    cfg = compose([o for o in load_sweep("study").fixed if o.startswith(("eval.", "eval="))])
    model, tok = load_for_eval(str(ensure_tiny_model()))
    rows = evaluate(model, tok, list(BENCHMARKS), Sampling.from_config(cfg.eval), max_problems=cfg.eval.max_problems,
                    batch_size=cfg.eval.batch_size, step=0)
    out = {r["benchmark"]: [tuple(p) for p in r["per_problem"]] for r in rows}
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cache, {"model_build": build, "per_problem": out})  # a kill leaves the old file or the new
    return out


def cost_lines(results_dir: Path) -> list[str]:
    """What each sweep cost, read from its run records: wall time from its first submission to its last
    run's end, and the runs' own elapsed time summed (core-time: each run trains on one torch thread)."""
    from abcx.record import RunRecord, runs_dir
    from abcx.sweep.manifest import load_or_rebuild

    lines = ["| sweep | runs trained | wall time, first submission -> last end | sum of the runs' elapsed time |",
             "|---|---|---|---|"]
    total_wall = 0.0
    for sweep in SWEEPS:
        try:
            entries = load_or_rebuild(results_dir, sweep)["runs"]
        except Exception:  # noqa: BLE001 - a sweep not run yet has no cost
            continue
        status = [RunRecord(runs_dir(results_dir) / e["run_id"]).status() for e in entries]
        # A point shared with an earlier sweep (epsilons' default point is the study's run) was trained there.
        own = [st for st in status if st.get("sweep") == sweep and st.get("submitted") and st.get("updated")]
        if not own:
            continue
        wall, busy = span(own)
        total_wall += wall
        lines.append(f"| `{sweep}` | {len(own)} | {wall / 60:.1f} min | {busy / 60:.1f} min |")
    lines += ["", f"The sweeps' wall time adds up to {total_wall / 60:.1f} min on {os.cpu_count()} cores; `make study` "
              "adds the warm start's evaluation, these tables and the two reports."]
    return lines


def cell_of(overrides: list[str], sweep: str) -> str:
    """A short label of what a point changes beyond the method and seed: the keys its sweep file varies
    in `points` (regime) or the eps3/eps4 axes (epsilons); every point of `study` is the default regime."""
    if sweep == "study":
        return "default"
    from abcx.sweep.overrides import override_key
    from abcx.sweep.spec import load_sweep

    spec = load_sweep(sweep)
    varied = {override_key(o) for point in spec.points for o in point} | set(spec.grid)
    varied -= {"method", "seed", "eval.benchmarks"}
    keep = [o for o in overrides if override_key(o) in varied]
    return " ".join(f"{override_key(o).split('.')[-1]}={o.split('=', 1)[1]}" for o in keep) or "default"


def run_row(record, sweep: str, overrides: list[str]) -> dict | None:
    from abcx.record.states import State

    if record.state() != State.FINISHED:
        return None
    rows = [r for r in record.metrics() if "entropy" in r]
    summary = record.summary()
    final = {}
    for e in record.evals():
        if e["benchmark"] in BENCHMARKS and (e["benchmark"] not in final or (e["step"] or 0) >= final[e["benchmark"]]["step"]):
            final[e["benchmark"]] = e
    entropy = [r["entropy"] for r in rows]
    return {
        "run_id": record.run_id, "sweep": sweep, "method": record.meta()["method"], "seed": record.meta()["seed"],
        "cell": cell_of(overrides, sweep), "clipped": summary.get("mean/clip/clipped"),
        "shares": {q: summary.get(f"share/{q}") for q in ("q1", "q2", "q3", "q4")},
        # Where the update goes, not only where tokens fall: each quadrant's share of sum |weight*A - penalty|
        # (abcx.methods.stats), mean over steps. A = 0 tokens (zero-variance groups) are in no quadrant (a
        # clip event needs A != 0; records before that counted them in Q3/Q4) and carry no gradient.
        "grad": {q: _mean_of(rows, f"grad/share_{q}") for q in ("q1", "q2", "q3", "q4", "in")},
        "entropy_first": statistics.mean(entropy[:10]), "entropy_last": statistics.mean(entropy[-10:]),
        "entropy_curve": [(r["step"], r["entropy"]) for r in rows],
        "per_problem": {b: [tuple(p) for p in e["per_problem"]] for b, e in final.items()},
        "n": {b: e["n"] for b, e in final.items()},
    }


def _mean_of(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return statistics.mean(values) if values else None


def collect(results_dir: Path) -> list[dict]:
    from abcx.record import RunRecord, runs_dir
    from abcx.sweep.manifest import load_or_rebuild

    out, seen = [], set()
    for sweep in SWEEPS:
        try:
            entries = load_or_rebuild(results_dir, sweep)["runs"]
        except Exception as err:  # noqa: BLE001 - a sweep not run yet is left out, and said so
            print(f"note: sweep {sweep}: {err}", file=sys.stderr)
            continue
        for entry in entries:
            record = RunRecord(runs_dir(results_dir) / entry["run_id"])
            row = run_row(record, sweep, list(entry.get("overrides") or []))
            if row is not None and (sweep, row["run_id"]) not in seen:
                seen.add((sweep, row["run_id"]))
                out.append(row)
    return out


def pooled(runs: list[dict], bench: str, k: int | None) -> tuple[float, float, float]:
    from abcx.evaluation.metrics import bootstrap_ci_pooled, pooled_estimate

    matrix = [r["per_problem"][bench] for r in runs if bench in r["per_problem"]]
    if not matrix:
        return math.nan, math.nan, math.nan
    low, high = bootstrap_ci_pooled(matrix, k, seed=0)
    return pooled_estimate(matrix, k), low, high


def diff(runs_a: list[dict], runs_b: list[dict], bench: str, k: int | None) -> tuple[float, float, float]:
    from abcx.evaluation.metrics import bootstrap_diff_pooled

    a = [r["per_problem"][bench] for r in runs_a if bench in r["per_problem"]]
    b = [r["per_problem"][bench] for r in runs_b if bench in r["per_problem"]]
    if not a or not b:
        return math.nan, math.nan, math.nan
    return bootstrap_diff_pooled(a, b, k, seed=0)


def fmt_ci(est: float, low: float, high: float, pct: bool = True, signed: bool = False) -> str:
    if math.isnan(est):
        return "–"
    scale = 100 if pct else 1
    sign = "+" if signed else ""
    return f"{est * scale:{sign}.1f} [{low * scale:{sign}.1f}, {high * scale:{sign}.1f}]"


def mean_sd(values) -> str:
    from abcx.report.stats import mean_ci

    mean, half, n = mean_ci([v for v in values if v is not None])
    return "–" if n == 0 else f"{mean:.4f}" + ("" if math.isnan(half) else f" ± {half:.4f}")


def group(rows: list[dict], sweep: str) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["sweep"] == sweep:
            out.setdefault((r["cell"], r["method"]), []).append(r)
    if sweep == "regime" and out:
        # The regime's default cell is the study's grpo and abc_grpo runs (the same regime, trained once).
        for r in rows:
            if r["sweep"] == "study" and r["method"] in ("grpo", "abc_grpo"):
                out.setdefault(("default", r["method"]), []).append(r)
    return out


def dynamics_table(groups: dict, baseline: dict[str, list[dict]]) -> list[str]:
    lines = ["| cell | method | seeds | tokens clipped | Q1 / Q2 / Q3 / Q4 share of out-of-band tokens "
             "| Q1 / Q2 / Q3 / Q4 / in-band share of the gradient | entropy first 10 -> last 10 "
             "| entropy ratio vs GRPO (same cell) |", "|---|---|---|---|---|---|---|---|"]
    for (cell, method), runs in sorted(groups.items()):
        shares = " / ".join(f"{100 * statistics.mean(r['shares'][q] or 0 for r in runs):.0f}" for q in ("q1", "q2", "q3", "q4"))
        clipped = statistics.mean(r["clipped"] or 0 for r in runs)
        grads = " / ".join(_share_of_gradient(runs, q) for q in ("q1", "q2", "q3", "q4", "in"))
        base = baseline.get(cell)
        ratio = "–" if not base else mean_sd([r["entropy_last"] / statistics.mean(b["entropy_last"] for b in base) for r in runs])
        lines.append(f"| {cell} | {method} | {len(runs)} | {100 * clipped:.2f}% | {shares}% | {grads}% | "
                     f"{statistics.mean(r['entropy_first'] for r in runs):.4f} -> {mean_sd(r['entropy_last'] for r in runs)} | {ratio} |")
    return lines


def _share_of_gradient(runs: list[dict], q: str) -> str:
    values = [r.get("grad", {}).get(q) for r in runs]
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{100 * statistics.mean(values):.{2 if q != 'in' else 0}f}"


def accuracy_table(groups: dict, baseline: dict[str, list[dict]], base: dict) -> list[str]:
    lines = ["| cell | method | benchmark | Avg@64, % | Pass@64, % | Avg@64 vs GRPO, pp | Pass@64 vs GRPO, pp |",
             "|---|---|---|---|---|---|---|"]
    for bench in BENCHMARKS:
        if bench in base:
            avg = pooled([{"per_problem": base}], bench, None)
            p64 = pooled([{"per_problem": base}], bench, 64)
            lines.append(f"| – | warm start | {bench} | {fmt_ci(*avg)} | {fmt_ci(*p64)} | | |")
        for (cell, method), runs in sorted(groups.items()):
            if not any(bench in r["per_problem"] for r in runs):
                continue  # this cell was not evaluated on this benchmark
            ref = baseline.get(cell) if method != "grpo" else None
            d_avg = fmt_ci(*diff(runs, ref, bench, None), signed=True) if ref else ""
            d_p64 = fmt_ci(*diff(runs, ref, bench, 64), signed=True) if ref else ""
            lines.append(f"| {cell} | {method} | {bench} | {fmt_ci(*pooled(runs, bench, None))} | "
                         f"{fmt_ci(*pooled(runs, bench, 64))} | {d_avg} | {d_p64} |")
    return lines


def passk_table(groups: dict, base: dict, bench: str) -> list[str]:
    lines = [f"| cell | method | " + " | ".join(f"Pass@{k}" for k in KS) + " |", "|---|---|" + "---|" * len(KS)]
    if bench in base:
        lines.append("| – | warm start | " + " | ".join(f"{100 * pooled([{'per_problem': base}], bench, k)[0]:.1f}" for k in KS) + " |")
    for (cell, method), runs in sorted(groups.items()):
        if any(bench in r["per_problem"] for r in runs):  # the length cell is evaluated on chain_hard only
            lines.append(f"| {cell} | {method} | " + " | ".join(f"{100 * pooled(runs, bench, k)[0]:.1f}" for k in KS) + " |")
    return lines


def section(title: str, rows: list[dict], sweep: str, base: dict) -> list[str]:
    groups = group(rows, sweep)
    if not groups:
        return [f"## {title}", "", f"(no finished runs of sweep `{sweep}`)", ""]
    baseline = {cell: runs for (cell, method), runs in groups.items() if method == "grpo"}
    if sweep == "epsilons":  # the grid has no GRPO: compare each point with the study's GRPO
        grpo = [r for r in rows if r["sweep"] == "study" and r["method"] == "grpo"]
        baseline = {cell: grpo for cell, _ in groups} if grpo else {}
    return [f"## {title}", "", *dynamics_table(groups, baseline), "", *accuracy_table(groups, baseline, base), "",
            *[line for bench in BENCHMARKS for line in (f"Pass@k against k on `{bench}` (%, pooled over seeds):", "",
                                                         *passk_table(groups, base, bench), "")]]


def plot_pass_at_k(rows: list[dict], base: dict, out: Path, sweep: str, bench: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group(rows, sweep)
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if bench in base:
        ax.plot(KS, [100 * pooled([{"per_problem": base}], bench, k)[0] for k in KS], "k--", label="warm start (base)")
    for (cell, method), runs in sorted(groups.items()):
        if not any(bench in r["per_problem"] for r in runs):
            continue
        est = [pooled(runs, bench, k) for k in KS]
        label = method if cell == "default" else f"{method} {cell}"
        line, = ax.plot(KS, [100 * e[0] for e in est], marker="o", ms=3, label=label)
        ax.fill_between(KS, [100 * e[1] for e in est], [100 * e[2] for e in est], color=line.get_color(), alpha=0.12)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel(f"Pass@k on {bench}, %")
    ax.set_title(f"{sweep}: Pass@k against k (band: 95% CI over problems x seeds)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right", ncol=2 if len(groups) > 6 else 1)
    return _save(fig, ax, out / f"pass_at_k_{sweep}_{bench}.png")


def plot_entropy(rows: list[dict], out: Path, sweep: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = group(rows, sweep)
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (cell, method), runs in sorted(groups.items()):
        steps = sorted({s for r in runs for s, _ in r["entropy_curve"]})
        curves = np.array([[dict(r["entropy_curve"]).get(s, np.nan) for s in steps] for r in runs])
        window = 10  # a rolling mean: per-step entropy of 64 completions is noisy
        smooth = np.array([np.convolve(np.nan_to_num(c), np.ones(window) / window, mode="valid") for c in curves])
        x = steps[window - 1:]
        line, = ax.plot(x, smooth.mean(0), label=method if cell == "default" else f"{method} {cell}")
        ax.fill_between(x, smooth.min(0), smooth.max(0), color=line.get_color(), alpha=0.12)
    ax.set_xlabel("training step")
    ax.set_ylabel("mean token entropy (rolling mean of 10 steps)")
    ax.set_title(f"{sweep}: entropy (band: min-max over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, ax, out / f"entropy_{sweep}.png")


def _save(fig, ax, path: Path) -> Path:
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results-dir", default=str(REPO / "results"))
    ap.add_argument("--out", default=str(REPO / "results" / "testbed"))
    args = ap.parse_args(argv)
    results_dir, out = Path(args.results_dir), Path(args.out)
    rows = collect(results_dir)
    base = base_model_eval(results_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    lines = ["# Testbed study: tables", "", "Generated by bench/testbed_study.py (`make study`); the write-up is README.md.",
             "Accuracy: mean over problems and seeds with a 95% two-level bootstrap CI (problems x seeds); "
             "differences to GRPO are paired over problems. Entropy: mean ± 95% t-interval over seeds.", ""]
    lines += section("Clipping rules (sweep `study`)", rows, "study", base)
    lines += section("ABC-GRPO's A<=0 bounds (sweep `epsilons`; compared with the study's GRPO)", rows, "epsilons", base)
    lines += section("Regime (sweep `regime`; each cell compared with its own GRPO)", rows, "regime", base)
    lines += ["## Cost", "", machine_line(), "", *cost_lines(results_dir), ""]
    (out / "study.md").write_text("\n".join(lines) + "\n")
    drawn = [p for sweep in SWEEPS for p in (plot_entropy(rows, out / "plots", sweep),
                                             *[plot_pass_at_k(rows, base, out / "plots", sweep, b) for b in BENCHMARKS]) if p]
    slim = [{k: v for k, v in r.items() if k not in ("entropy_curve", "per_problem")} for r in rows]
    (out / "study.json").write_text(json.dumps({"runs": slim, "plots": [str(p.relative_to(out)) for p in drawn]}, indent=1))
    print(f"wrote {out / 'study.md'}, {out / 'study.json'} and {len(drawn)} plots from {len(rows)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
