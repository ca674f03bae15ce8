"""Benchmark (issue 6, target 7): wall time of the testbed ablation, GRPO vs ABC-GRPO x 3 seeds,
through `abcx sweep run demo seed=0,1,2 --wait` on the local backend, with jobs in parallel up to the
core count, against the same sweep run one job at a time (launcher.max_parallel=1) in the same run.

    .venv/bin/python bench/bench_ablation.py [--steps 100] [--quick]

Prints a summary, then one `RESULT {json}` line (read by run_all.py). The testbed model must be
built already (it is cached; the first `abcx train` builds it) so only training is timed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sweep(results: str, steps: int, parallel: int | None) -> float:
    cmd = [sys.executable, "-m", "abcx.cli", "sweep", "run", "demo", "seed=0,1,2", f"train.max_steps={steps}",
           "logger=none", "eval.at_end=false", f"results_dir={results}", "--wait"]
    if parallel:
        cmd.insert(-1, f"launcher.max_parallel={parallel}")
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="30 steps per run")
    args = ap.parse_args(argv)
    steps = 30 if args.quick else args.steps
    subprocess.run([sys.executable, "-c", "from abcx.testbed import ensure_tiny_model; ensure_tiny_model()"],
                   cwd=REPO, check=True)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        parallel = sweep(a, steps, None)  # default: as many at once as cores
        serial = sweep(b, steps, 1)
    cores = os.cpu_count()
    print(f"6 runs (grpo, abc_grpo x seeds 0-2), {steps} steps each, {cores} cores, load {load:.2f}")
    print(f"parallel (max_parallel = {cores}): {parallel:.1f} s; one at a time: {serial:.1f} s")
    print("RESULT " + json.dumps({
        "target": "7. Testbed ablation wall time (GRPO vs ABC-GRPO x 3 seeds)", "measured": f"{parallel:.1f} s",
        "baseline": f"one job at a time {serial:.1f} s", "ratio": round(parallel / serial, 3),
        "goal": "parallel up to the core count, faster than one at a time", "met": parallel < serial,
        "load": round(load, 2), "note": f"{steps} steps per run, 6 runs, {cores} cores",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
