"""Benchmark: read + summarise 1,000 abcx run records x 1,000 logged steps (16 metrics each).

Prints the report engine's time and its ratio to a baseline measured in the same process on the same
files: `json.loads` of every metrics.jsonl line (the least a pure-Python reader must do).
Target: <= 3 s on a 2-core machine.

    PYTHONPATH=. .venv/bin/python bench/bench_report.py [--runs 1000] [--steps 1000] [--keep DIR]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--keep", help="write the records here and keep them")
    args = ap.parse_args(argv)

    from abcx.report.sources.discover import read_sources
    from abcx.report.synth import synth_sweep
    from abcx.report.table import default_group_keys, group_summary, run_summary

    root = args.keep or tempfile.mkdtemp(prefix="abcx-bench-report-")
    try:
        t0 = time.perf_counter()
        synth_sweep(os.path.join(root, "runs"), args.runs, args.steps)
        print(f"synthesised {args.runs} runs x {args.steps} steps in {time.perf_counter() - t0:.1f} s")
        files = glob.glob(os.path.join(root, "runs", "*", "metrics.jsonl"))
        size = sum(os.path.getsize(f) for f in files)

        t0 = time.perf_counter()
        n = 0
        for f in files:
            with open(f) as fh:
                for line in fh:
                    json.loads(line)
                    n += 1
        baseline = time.perf_counter() - t0

        t0 = time.perf_counter()
        rs = read_sources([root])
        t_read = time.perf_counter() - t0
        keys = default_group_keys(rs.runs)
        per_run = run_summary(rs, last_n=10, group_keys=keys)
        group_summary(per_run, keys)
        total = time.perf_counter() - t0

        print(f"metrics.jsonl: {len(files)} files, {n} lines, {size / 1e6:.0f} MB")
        print(f"history rows: {len(rs.history):,}; runs: {len(rs.runs)}; group keys: {keys}")
        print(f"baseline json.loads of every line: {baseline:.2f} s")
        print(f"report engine: read {t_read:.2f} s + summarise {total - t_read:.2f} s = {total:.2f} s "
              f"({total / baseline:.2f}x the baseline) -> target 3 s: {'OK' if total <= 3 else 'MISSED'}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
