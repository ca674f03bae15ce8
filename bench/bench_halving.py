"""Does successive halving pick the grid's best point, and at what share of the grid's compute?

    .venv/bin/python bench/bench_halving.py [--steps 50] [--rung 12] [--eta 4] [--out results/sweeps_bench]

Runs the epsilons grid of sweeps/epsilons.yaml (eps3 x eps4 x 2 seeds = 8 points) twice on the local
backend, at a reduced scale (max_steps, held-out eval every rung on `chain`, n=16, 50 problems):
once as a plain grid (every point to the end), once as `strategy: halving` with one rung, ranked by
eval/chain/avg@16, in a separate results folder so that nothing is shared. Compute is counted in
core-seconds from the run records (status.json elapsed_s x cpus, summed), the baseline being the
grid measured in the same invocation. Prints and writes <out>/halving.md and halving.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

METRIC = "eval/chain/avg@16"


def sweep_text(name: str, results: Path, steps: int, rung: int, strategy: str) -> str:
    return (f"name: {name}\nfixed: [method=abc_grpo, model=tiny, task=chain, train=testbed, eval=testbed, "
            f"method.eps1=0.2, method.eps2=0.2, train.max_steps={steps}, train.save_steps={steps}, "
            f"eval.every_steps={rung}, eval.at_end=true, eval.n=16, eval.max_problems=50, 'eval.benchmarks=[chain]', "
            f"logger=none, launcher.max_parallel=2, results_dir={results}]\n"
            "grid:\n  method.eps3: [0.2, .inf]\n  method.eps4: [0.2, 0.4]\n  seed: [0, 1]\n" + strategy)


def core_seconds(results: Path, run_ids: list[str]) -> float:
    from abcx.record import RunRecord

    total = 0.0
    for rid in run_ids:
        st = RunRecord(results / "runs" / rid).status()
        total += float(st.get("elapsed_s") or 0) * int(st.get("cpus") or 1)
    return total


def run(name: str, folder: Path, steps: int, rung: int, strategy: str) -> dict:
    from abcx.record import RunRecord
    from abcx.sweep import command, manifest
    from abcx.sweep.strategies import metric_at

    results = folder / name
    path = folder / f"{name}.yaml"
    path.write_text(sweep_text(name, results, steps, rung, strategy))
    command.sweep_run(str(path), [], wait=True, out=lambda line: print(f"  [{name}] {line}", flush=True))
    entries = manifest.load(results, name)["runs"]
    ids = [e["run_id"] for e in entries]
    final = {rid: metric_at(RunRecord(results / "runs" / rid), METRIC, steps) for rid in ids}
    points = {e["run_id"]: " ".join(o for o in e["overrides"] if o.split("=")[0] in ("method.eps3", "method.eps4", "seed"))
              for e in entries}
    reached = {rid: v for rid, v in final.items() if v is not None}
    best = max(reached, key=lambda rid: reached[rid])
    return {"core_s": core_seconds(results, ids), "best": best, "best_point": points[best], "best_value": reached[best],
            "final": {points[r]: v for r, v in final.items()},
            "steps": sum(int(RunRecord(results / "runs" / r).status().get("step") or 0) for r in ids)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rung", type=int, default=12)  # a multiple of the testbed's 4-step rollout
    parser.add_argument("--eta", type=int, default=4)
    parser.add_argument("--out", default=str(REPO / "results" / "sweeps_bench"))
    parser.add_argument("--work", default=None, help="folder for the two results dirs (default: a temp folder)")
    args = parser.parse_args()
    import tempfile

    folder = Path(args.work or tempfile.mkdtemp(prefix="abcx-halving-"))
    grid = run("grid", folder, args.steps, args.rung, "")
    halving = run("halving", folder, args.steps, args.rung,
                  f"strategy:\n  name: halving\n  rungs: [{args.rung}]\n  eta: {args.eta}\n  metric: {METRIC}\n  mode: max\n")
    ratio = halving["core_s"] / grid["core_s"]
    same = grid["best_point"] == halving["best_point"]
    rank_in_grid = sorted(grid["final"].values(), reverse=True).index(grid["final"][halving["best_point"]]) + 1
    summary = {"steps": args.steps, "rung": args.rung, "eta": args.eta, "metric": METRIC, "grid": grid,
               "halving": halving, "core_seconds_ratio": ratio, "same_best_point": same,
               "halving_best_rank_in_grid": rank_in_grid}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "halving.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    lines = [f"# Successive halving vs the full epsilons grid (testbed, {args.steps} steps, rung {args.rung}, eta {args.eta})", "",
             f"Ranked by {METRIC} (n=16, 50 held-out problems); compute = core-seconds from the run records.", "",
             "| | grid | halving |", "|---|---|---|",
             f"| core-seconds | {grid['core_s']:.0f} | {halving['core_s']:.0f} ({ratio:.0%} of the grid) |",
             f"| training steps | {grid['steps']} | {halving['steps']} |",
             f"| best point | {grid['best_point']} ({grid['best_value']:.4f}) | {halving['best_point']} ({halving['best_value']:.4f}) |",
             "", f"Same best point: {'yes' if same else 'no'}; halving's pick ranks {rank_in_grid} of {len(grid['final'])} "
             f"in the full grid.", "", "Final values in the grid:", ""]
    lines += [f"- {p}: {v:.4f}" for p, v in sorted(grid["final"].items(), key=lambda kv: -kv[1])]
    (out / "halving.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
