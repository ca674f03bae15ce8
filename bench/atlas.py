"""The atlas: every registered clipping rule on the chain testbed under one set of settings, measured
the same way (results/atlas/, `make atlas`).

    .venv/bin/python bench/atlas.py                 # train what is missing, then write results/atlas/
    .venv/bin/python bench/atlas.py --no-train      # only the tables and the figure, from the records

Compute goes where it decides something, within the issue's ~90 minutes on 2 cores. Phase 1 trains
every method with seed 0 (sweeps/atlas.yaml; the five rules `make study` trains reuse its runs): ~23
new runs of ~2.6 min. A rule's mechanics (where its tokens fall, where its gradient goes, what it
zeroes) are measured over 200 steps of ~2,000 completion tokens and barely move between seeds (the
study's 3 seeds agree to a point or two); its accuracy against GRPO is what more seeds can change.
GRPO gets seeds 1 and 2 (the study's runs), and phase 2 gives them to the rules whose seed-0 paired
Avg@64 interval against GRPO's three seeds excludes 0 on either benchmark (a claimed difference is
tested on seeds it was not found on; the reference is the one the tables use). What was cut: a second and third seed for a rule whose first seed
found no difference; with them, "no difference found at this scale" would cost ~60 more minutes and
say the same.

Per rule: tokens out of band per quadrant (A != 0), the share of the gradient each quadrant and the
in-band tokens receive, tokens zeroed and scaled down, entropy first -> last, held-out Avg@64 and
Pass@64 on chain and chain_hard with a paired two-level bootstrap CI against GRPO (problems x seeds),
and the wall time of its runs. The figure places every rule by where its gradient goes.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from _env import machine_line  # noqa: E402
from _records import span  # noqa: E402
from testbed_study import base_model_eval, diff, fmt_ci, pooled  # noqa: E402

BENCHMARKS = ("chain", "chain_hard")
QUADRANTS = ("q1", "q2", "q3", "q4")
SWEEP = "atlas"
CONFIRM_SEEDS = (1, 2)
CONFIRM = "atlas-confirm"  # the phase-2 sweep, written under results/sweeps/ (generated, not a sweeps/ file)


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return statistics.mean(values) if values else None


def run_row(record) -> dict | None:
    """What the atlas reads from one finished run (through RunRecord)."""
    from abcx.record.states import State

    if record.state() != State.FINISHED:
        return None
    rows = [r for r in record.metrics() if "entropy" in r]
    final: dict[str, dict] = {}
    for e in record.evals():
        if e["benchmark"] in BENCHMARKS and (e["benchmark"] not in final or (e["step"] or 0) >= final[e["benchmark"]]["step"]):
            final[e["benchmark"]] = e
    meta, status = record.meta(), record.status()
    entropy = [r["entropy"] for r in rows]
    return {
        "run_id": record.run_id, "method": meta["method"], "seed": meta["seed"],
        "quadrants": meta.get("quadrants"),
        "out": {q: _mean(rows, f"clip/{q}") for q in (*QUADRANTS, "zero_adv_out")},
        "grad": {q: _mean(rows, f"grad/share_{q}") for q in (*QUADRANTS, "in", "zero_adv_out")},
        "zeroed": _mean(rows, "grad/zeroed"), "scaled_down": _mean(rows, "grad/scaled_down"),
        "entropy_first": statistics.mean(entropy[:10]), "entropy_last": statistics.mean(entropy[-10:]),
        "per_problem": {b: [tuple(p) for p in e["per_problem"]] for b, e in final.items()},
        "elapsed_s": float(status.get("elapsed_s") or 0.0),
    }


def collect(results_dir: Path, sweeps=(SWEEP, CONFIRM)) -> dict[str, list[dict]]:
    """method -> its finished runs (one row per run id, from every atlas sweep)."""
    from abcx.record import RunRecord, runs_dir
    from abcx.sweep.manifest import load

    by_method: dict[str, list[dict]] = {}
    seen: set[str] = set()
    for sweep in sweeps:
        seeds = planned_seeds(sweep)
        for entry in (load(results_dir, sweep) or {}).get("runs", []):
            if entry["run_id"] in seen:
                continue
            row = run_row(RunRecord(runs_dir(results_dir) / entry["run_id"]))
            # A run of the sweep's manifest outside its seeds today (an earlier plan's) is not the atlas's.
            if row is not None and int(row["seed"]) in seeds:
                seen.add(entry["run_id"])
                by_method.setdefault(row["method"], []).append(row)
    return by_method


def planned_seeds(sweep: str) -> set[int]:
    """The seeds a phase trains: sweeps/atlas.yaml's grid for phase 1, CONFIRM_SEEDS for phase 2."""
    if sweep == CONFIRM:
        return set(CONFIRM_SEEDS)
    from abcx.sweep.spec import load_sweep

    return {int(seed) for seed in load_sweep(sweep).grid.get("seed", [0])}


def needs_more_seeds(runs: list[dict], grpo: list[dict]) -> list[str]:
    """The benchmarks on which a rule's paired Avg@64 interval against GRPO's runs excludes 0."""
    out = []
    for bench in BENCHMARKS:
        _est, low, high = diff(runs, grpo, bench, None)
        if not math.isnan(low) and (low > 0 or high < 0):
            out.append(bench)
    return out


def confirm_file(results_dir: Path, methods: list[str]) -> Path:
    """Phase 2 as a sweep file: the chosen rules (and GRPO) at seeds 1 and 2, with the atlas's fixed settings."""
    import yaml

    from abcx.sweep.spec import load_sweep

    spec = load_sweep(SWEEP)
    data = {"name": CONFIRM, "description": "The atlas's seeds 1 and 2 (bench/atlas.py): rules whose seed-0 "
            "difference from GRPO excludes 0, and GRPO.", "fixed": list(spec.fixed),
            "points": [[f"method={m}"] for m in ["grpo", *methods]], "grid": {"seed": list(CONFIRM_SEEDS)}}
    path = results_dir / "sweeps" / f"{CONFIRM}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sweep(target: str, results_dir: Path, overrides: list[str]) -> None:
    cmd = [sys.executable, "-m", "abcx.cli", "sweep", "run", target, *overrides, f"results_dir={results_dir}", "--wait"]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=False, cwd=REPO)


def seed_zero(runs: list[dict]) -> list[dict]:
    return [r for r in runs if int(r["seed"]) == 0]


def train(results_dir: Path, overrides: list[str]) -> list[str]:
    """Phase 1, GRPO's seeds 1 and 2 (the study's runs when `make study` has run), then phase 2 for the
    rules whose seed 0 differs from GRPO's three seeds; returns the rules that got seeds 1 and 2."""
    sweep(SWEEP, results_dir, overrides)
    sweep(str(confirm_file(results_dir, [])), results_dir, overrides)
    by_method = collect(results_dir)
    grpo = by_method.get("grpo", [])
    chosen = [m for m, runs in by_method.items() if m != "grpo" and grpo and needs_more_seeds(seed_zero(runs), grpo)]
    print(f"seeds 1 and 2 for: {', '.join(chosen) or 'none'}", flush=True)
    if chosen:
        sweep(str(confirm_file(results_dir, chosen)), results_dir, overrides)
    return chosen


def pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def mechanics_table(by_method: dict[str, list[dict]], order: list[str]) -> list[str]:
    grpo_last = statistics.mean(r["entropy_last"] for r in by_method["grpo"]) if by_method.get("grpo") else None
    lines = ["| rule | seeds | out of band, % of tokens: Q1 / Q2 / Q3 / Q4 (A=0) | share of the gradient, %: "
             "Q1 / Q2 / Q3 / Q4 / in band | zeroed, % | scaled down, % | entropy first -> last (vs GRPO) | "
             "wall time per run, s |", "|---|---|---|---|---|---|---|---|"]
    for m in order:
        runs = by_method[m]
        out = " / ".join(pct(_avg(runs, "out", q), 3) for q in QUADRANTS) + f" ({pct(_avg(runs, 'out', 'zero_adv_out'), 3)})"
        grad = " / ".join(pct(_avg(runs, "grad", q), 1) for q in (*QUADRANTS, "in"))
        last = statistics.mean(r["entropy_last"] for r in runs)
        ratio = f" ({last / grpo_last:.2f}x)" if grpo_last else ""
        wall = statistics.median(r["elapsed_s"] for r in runs)
        lines.append(f"| `{m}` | {len(runs)} | {out} | {grad} | {pct(_avg1(runs, 'zeroed'))} | "
                     f"{pct(_avg1(runs, 'scaled_down'))} | {statistics.mean(r['entropy_first'] for r in runs):.4f} -> "
                     f"{last:.4f}{ratio} | {wall:.0f} |")
    return lines


def _avg(runs: list[dict], part: str, key: str) -> float | None:
    values = [r[part][key] for r in runs if r[part].get(key) is not None]
    return statistics.mean(values) if values else None


def _avg1(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.mean(values) if values else None


def accuracy_table(by_method: dict[str, list[dict]], order: list[str], base: dict) -> list[str]:
    head = "| rule | seeds | " + " | ".join(f"{b} Avg@64 % | {b} vs GRPO, pp | {b} Pass@64 % | {b} Pass@64 vs GRPO, pp"
                                          for b in BENCHMARKS) + " |"
    lines = [head, "|---|---|" + "---|" * 4 * len(BENCHMARKS)]
    if base:
        cells = [f"{fmt_ci(*pooled([{'per_problem': base}], b, None))} | | {fmt_ci(*pooled([{'per_problem': base}], b, 64))} | "
                 for b in BENCHMARKS]
        lines.append("| warm start | – | " + " | ".join(cells) + " |")
    grpo = by_method.get("grpo", [])
    for m in order:
        runs = by_method[m]
        cells = []
        for b in BENCHMARKS:
            ref = m != "grpo" and grpo
            cells.append(f"{fmt_ci(*pooled(runs, b, None))} | {fmt_ci(*diff(runs, grpo, b, None), signed=True) if ref else ''} | "
                         f"{fmt_ci(*pooled(runs, b, 64))} | {fmt_ci(*diff(runs, grpo, b, 64), signed=True) if ref else ''}")
        lines.append(f"| `{m}` | {len(runs)} | " + " | ".join(cells) + " |")
    return lines


def clusters(points: dict[str, tuple[float, float]], radius: float) -> list[list[str]]:
    """Names whose points lie within `radius` (display pixels) of a cluster's first point, greedily in
    x then y order: the rules that sit on one another get one label listing them all."""
    groups: list[tuple[tuple[float, float], list[str]]] = []
    for name, (x, y) in sorted(points.items(), key=lambda kv: kv[1]):
        for (cx, cy), names in groups:
            if math.hypot(x - cx, y - cy) <= radius:
                names.append(name)
                break
        else:
            groups.append(((x, y), [name]))
    return [names for _c, names in groups]


def figure(by_method: dict[str, list[dict]], order: list[str], out: Path) -> Path:
    """Every rule placed by where its gradient goes: the tokens it zeroes (x) against the share of its
    gradient that lands on Q2 + Q4 tokens out of band (y), the two quadrants GRPO leaves unbounded.
    Rules that land on one another share one label (on this testbed many do: that is a finding)."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from abcx import methods as M

    fig, ax = plt.subplots(figsize=(9.0, 6.5))
    kinds = {"four bounds (a preset of the ABC rule)": "tab:blue", "another rule": "tab:orange"}
    xy = {}
    for m in order:
        runs = by_method[m]
        xy[m] = (100 * (_avg1(runs, "zeroed") or 0.0), 100 * ((_avg(runs, "grad", "q2") or 0.0) + (_avg(runs, "grad", "q4") or 0.0)))
        kind = next(iter(kinds)) if M.get(m).bounds is not None else list(kinds)[1]
        ax.scatter([xy[m][0]], [xy[m][1]], s=40, color=kinds[kind], zorder=3, edgecolor="white", linewidth=0.5)
    for label, color in kinds.items():
        ax.scatter([], [], s=40, color=color, label=label)
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set_xlim(-0.002, 200)
    ax.set_ylim(-0.002, 200)
    fig.canvas.draw()  # the scales and limits fixed: data -> pixels is final
    pixels = {m: tuple(ax.transData.transform(p)) for m, p in xy.items()}
    for i, names in enumerate(clusters(pixels, 36.0)):
        x, y = (statistics.mean(xy[n][k] for n in names) for k in (0, 1))
        text = "\n".join(textwrap.wrap(", ".join(names), 34))
        below = len(names) > 1 and i % 2 == 1  # neighbouring clusters' lists alternate above and below
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(6, -8 if below else 6), fontsize=7,
                    va="top" if below else "bottom", zorder=4,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.8", "alpha": 0.85} if len(names) > 1 else None)
    ax.set_xlabel("tokens whose gradient the rule zeroes, % of completion tokens (mean over steps and seeds)")
    ax.set_ylabel("share of the gradient on Q2 + Q4 tokens out of band, %")
    ax.set_title("Where each rule's gradient goes (chain testbed, 200 steps; Q2: A>0, r too low; Q4: A<0, r too high)\n"
                 "a boxed list: rules that land on the same spot", fontsize=9)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "atlas.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def cost_lines(results_dir: Path) -> list[str]:
    """What each phase trained itself (a run reused from `make study` is that sweep's cost, not this one's)."""
    from abcx.record import RunRecord, runs_dir
    from abcx.sweep.manifest import load

    lines = []
    for name in (SWEEP, CONFIRM):
        entries = (load(results_dir, name) or {}).get("runs", [])
        statuses = [RunRecord(runs_dir(results_dir) / e["run_id"]).status() for e in entries]
        done = [s for s in statuses if s.get("state") == "finished" and s.get("submitted") and s.get("updated")]
        own = [s for s in done if s.get("sweep") == name]
        if own:
            wall, busy = span(own)
            lines.append(f"- sweep `{name}`: {len(own)} runs trained, {wall / 60:.1f} min wall clock (first submission "
                         f"to last end), {busy / 60:.1f} core-minutes; {len(done) - len(own)} finished runs reused "
                         f"from other sweeps")
    return lines


def write(results_dir: Path, out: Path) -> None:
    by_method = collect(results_dir)
    if "grpo" not in by_method:
        raise SystemExit(f"no finished grpo run in {results_dir}: run `make atlas` (or bench/atlas.py) first")
    from abcx import methods as M

    order = [m for m in M.names() if m in by_method]
    missing = [m for m in M.names() if m not in by_method]
    base = base_model_eval(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig = figure(by_method, order, out)
    more = sorted(m for m, runs in by_method.items() if len(runs) > 1 and m != "grpo")
    grpo = by_method["grpo"]
    chosen = [m for m in more if needs_more_seeds(seed_zero(by_method[m]), grpo)]
    earlier = [m for m in more if m not in chosen]
    lines = ["# The atlas: every rule under one definition", "",
             "Generated by bench/atlas.py (`make atlas`). The chain testbed at its defaults (sweeps/atlas.yaml): "
             "200 steps, 8 prompts x G = 8, 4 mini-batches per rollout, lr 1e-4; each rule at its registry defaults. "
             "A clip event is a token outside the rule's band with A != 0 (Q1/Q2: A > 0; Q3/Q4: A < 0); "
             "out-of-band tokens with A = 0 are shown apart and carry no gradient.", "",
             f"Seeds: 0 for every rule; 1 and 2 as well for GRPO and for the rules whose seed-0 paired Avg@64 "
             f"interval against GRPO's three seeds excluded 0 on a benchmark ({', '.join(chosen) or 'none'})"
             + (f"; {', '.join(earlier)} have them from an earlier pass that compared with GRPO's seed 0 alone "
                "(replaced: a difference from one GRPO seed is mostly that seed's)" if earlier else "") + ". "
             "Accuracy: held-out Avg@64 / Pass@64 on 100 problems per benchmark, mean over problems and seeds, "
             "95% two-level bootstrap CI (problems x seeds); differences to GRPO paired over problems. The `seeds` "
             "column says what an interval covers: for a rule with 1 seed it covers the problems only, not "
             "training's seed-to-seed variation, so read it as where to look, not as a verdict.", "",
             f"![where each rule's gradient goes]({fig.name})", "",
             "## Mechanics", "", *mechanics_table(by_method, order), "",
             "Wall time per run is the median of its runs' elapsed time. It moved with what else the 2 cores ran "
             "(1 to 4 runs at once, at times a test suite): an order of magnitude, not a ranking of the rules' cost.", "",
             "## Held-out accuracy", "", *accuracy_table(by_method, order, base), "",
             "## Cost", "", machine_line(), "", *cost_lines(results_dir), ""]
    if missing:
        lines += [f"Not in the atlas (no finished run): {', '.join(missing)}.", ""]
    (out / "atlas.md").write_text("\n".join(lines) + "\n")
    slim = {m: [{k: v for k, v in r.items() if k != "per_problem"} for r in runs] for m, runs in by_method.items()}
    (out / "atlas.json").write_text(json.dumps({"runs": slim, "more_seeds": more}, indent=1, default=str))
    print(f"wrote {out / 'atlas.md'}, atlas.json and {fig.name} ({sum(map(len, by_method.values()))} runs, "
          f"{len(order)} rules)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results-dir", default=str(REPO / "results"))
    ap.add_argument("--out", default=str(REPO / "results" / "atlas"))
    ap.add_argument("--no-train", action="store_true", help="only write the tables and figure from the records")
    ap.add_argument("overrides", nargs="*", help="overrides for every point (a smoke run: train.max_steps=4 eval.n=4 ...)")
    args = ap.parse_args(argv)
    results_dir = Path(args.results_dir).resolve()
    if not args.no_train:
        train(results_dir, args.overrides)
    write(results_dir, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
