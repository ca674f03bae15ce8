"""Successive halving at the testbed's default scale, against the full epsilons grid that `make study` ran.

    .venv/bin/python bench/halving_vs_study.py --grid-results results [--rungs 48,96] [--eta 3]

bench/bench_halving.py runs a reduced grid and halving side by side (50 steps). This one asks the
issue's question at the default budget (200 steps) without training the grid a second time: the grid is
the `epsilons` sweep of `make study` (eps3 x eps4 x 2 seeds, every point to the end, held-out `chain`
Avg@64 on 100 problems), read from its records; halving runs the same 8 points with rungs on rollout
boundaries, ranked by held-out `chain` Avg@16 on the same 100 problems at each rung (a cheaper estimate of
the same accuracy; n = 64 at every rung would cost more than the steps it saves). Its pick is judged by
the grid: the rank of the same point in the grid's final Avg@64. Compute is core-seconds from the records (elapsed x cpus);
the grid's is counted without its `chain_hard` evaluation, which the halving runs do not do. Run it on an
idle machine, as the grid was: elapsed time under contention is not compute.
Writes <out>/halving_default_scale.md and .json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RUNG_METRIC = "eval/chain/avg@16"
FINAL_METRIC = "eval/chain/avg@64"
AXES = ("method.eps3", "method.eps4", "seed")


def point_of(overrides: list[str]) -> str:
    return " ".join(o for o in overrides if o.split("=")[0] in AXES)


def eval_seconds(record, benchmark: str) -> float:
    from abcx.record import read_jsonl

    return sum(float(r.get("elapsed_s") or 0) for r in read_jsonl(record.eval_path) if r.get("benchmark") == benchmark)


def final_value(record, metric: str) -> float | None:
    from abcx.record import read_jsonl

    _, bench, name = metric.split("/")
    rows = [r for r in read_jsonl(record.eval_path) if r.get("benchmark") == bench and (r.get("metrics") or {}).get(name) is not None]
    return float(rows[-1]["metrics"][name]) if rows else None


def grid_side(results: Path) -> dict:
    from abcx.record import RunRecord
    from abcx.sweep import manifest

    out = {"final": {}, "core_s": 0.0, "steps": 0}
    for entry in manifest.load_or_rebuild(results, "epsilons")["runs"]:
        record = RunRecord(results / "runs" / entry["run_id"])
        st = record.status()
        cpus = int(st.get("cpus") or 1)
        out["core_s"] += (float(st.get("elapsed_s") or 0) - eval_seconds(record, "chain_hard")) * cpus
        out["steps"] += int(st.get("step") or 0)
        out["final"][point_of(entry["overrides"])] = final_value(record, FINAL_METRIC)
    return out


def halving_side(folder: Path, rungs: list[int], eta: int) -> dict:
    from abcx.record import RunRecord
    from abcx.sweep import command, manifest

    results = folder / "halving"
    folder.mkdir(parents=True, exist_ok=True)
    every = rungs[0]
    path = folder / "halving.yaml"
    path.write_text(
        "name: halving\nfixed: [method=abc_grpo, model=tiny, task=chain, train=testbed, eval=testbed, "
        f"method.eps1=0.2, method.eps2=0.2, eval.every_steps={every}, eval.n=16, eval.max_problems=100, "
        f"'eval.benchmarks=[chain]', logger=none, launcher.max_parallel=2, results_dir={results}]\n"
        "grid:\n  method.eps3: [0.2, .inf]\n  method.eps4: [0.2, 0.4]\n  seed: [0, 1]\n"
        f"strategy:\n  name: halving\n  rungs: [{', '.join(map(str, rungs))}]\n  eta: {eta}\n"
        f"  metric: {RUNG_METRIC}\n  mode: max\n")
    command.sweep_run(str(path), [], wait=True, out=lambda line: print(f"  [halving] {line}", flush=True))
    entries = manifest.load(results, "halving")["runs"]
    out = {"core_s": 0.0, "steps": 0, "reached_end": []}
    for entry in entries:
        record = RunRecord(results / "runs" / entry["run_id"])
        st = record.status()
        out["core_s"] += float(st.get("elapsed_s") or 0) * int(st.get("cpus") or 1)
        out["steps"] += int(st.get("step") or 0)
        if st.get("state") == "finished":
            out["reached_end"].append(point_of(entry["overrides"]))
    return out, results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grid-results", default=str(REPO / "results"), help="the results dir of `make study`")
    parser.add_argument("--rungs", default="48,96")
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--work", default=None)
    parser.add_argument("--out", default=str(REPO / "results" / "sweeps_bench"))
    args = parser.parse_args()
    import tempfile

    rungs = [int(r) for r in args.rungs.split(",")]
    grid = grid_side(Path(args.grid_results))
    halving, _ = halving_side(Path(args.work or tempfile.mkdtemp(prefix="abcx-halving-")), rungs, args.eta)
    ranked = sorted(grid["final"], key=lambda p: -(grid["final"][p] or 0))
    picks = halving["reached_end"]
    ratio = halving["core_s"] / grid["core_s"]
    summary = {"rungs": rungs, "eta": args.eta, "grid": grid, "halving": halving, "core_seconds_ratio": ratio,
               "grid_best": ranked[0], "halving_picks": picks, "ranks_in_grid": [ranked.index(p) + 1 for p in picks]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "halving_default_scale.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    lines = [f"# Successive halving vs the full epsilons grid at the default budget (200 steps, rungs {rungs}, eta {args.eta})",
             "", "Generated by `bench/halving_vs_study.py`; the grid is `make study`'s `epsilons` sweep. Grid ranked by "
             f"{FINAL_METRIC} (100 problems); halving ranked at its rungs by {RUNG_METRIC} (same problems). "
             "Compute: core-seconds from the run records.", "",
             "| | grid | halving |", "|---|---|---|",
             f"| core-seconds | {grid['core_s']:.0f} | {halving['core_s']:.0f} ({ratio:.0%} of the grid) |",
             f"| training steps | {grid['steps']} | {halving['steps']} ({halving['steps'] / grid['steps']:.0%}) |",
             f"| best point | {ranked[0]} | {', '.join(picks) or '-'} |", "",
             "Halving's pick in the grid's ranking: " + ", ".join(f"{p} ranks {ranked.index(p) + 1} of {len(ranked)}" for p in picks),
             "", "The grid's final values:", ""]
    lines += [f"- {p}: {grid['final'][p]:.4f}" for p in ranked]
    (out / "halving_default_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
