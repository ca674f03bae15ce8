"""Benchmark: cold start of `abcx --help` against `python -c pass`, measured in the same run.

Each sample is a fresh subprocess (so nothing is warm in Python, only in the OS file cache, which the
first, discarded, run of each command fills). Also checks that the heavy libraries are not imported
on the way: after `abcx --help` runs inside a subprocess, none of HEAVY may be in its sys.modules.
Target (issue): median <= 0.3 s.

    PYTHONPATH=. .venv/bin/python bench/bench_cli_start.py [--runs 10] [--quick]

Prints a human-readable summary, then one machine-readable line `RESULT {json}` (read by run_all.py).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_S = 0.3
HEAVY = ("torch", "trl", "transformers", "wandb", "pandas", "matplotlib", "datasets")

# Runs `abcx --help` in-process, then lists which heavy top-level modules it pulled in.
PROBE = (
    "import sys\n"
    "from abcx.cli import main\n"
    "sys.argv = ['abcx', '--help']\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
    f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
)


def abcx_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m abcx.cli`."""
    script = Path(sys.executable).with_name("abcx")
    if script.exists():
        return [str(script), "--help"]
    found = shutil.which("abcx")
    return [found, "--help"] if found else [sys.executable, "-m", "abcx.cli", "--help"]


def time_runs(cmd: list[str], runs: int, env: dict) -> list[float]:
    subprocess.run(cmd, env=env, capture_output=True, check=True)  # fill the OS file cache; not counted
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True, check=True)
        samples.append(time.perf_counter() - t0)
    return samples


def heavy_imports(env: dict) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("HEAVY=")][-1]
    return [m for m in line[len("HEAVY="):].split(",") if m]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="same measurement (it is already quick)")
    args = ap.parse_args(argv)

    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = abcx_command()
    # Interleave the two commands so that a burst of load from other processes hits both alike.
    base, cli = [], []
    for _ in range(args.runs):
        base += time_runs([sys.executable, "-c", "pass"], 1, env)
        cli += time_runs(cmd, 1, env)
    b, c = statistics.median(base), statistics.median(cli)
    heavy = heavy_imports(env)
    load = os.getloadavg()[0]

    print(f"command: {' '.join(cmd)}; {args.runs} runs each, interleaved; load average {load:.2f}")
    print(f"python -c pass: median {b:.3f} s (min {min(base):.3f}, max {max(base):.3f})")
    print(f"abcx --help:    median {c:.3f} s (min {min(cli):.3f}, max {max(cli):.3f})")
    print(f"heavy modules imported by abcx --help: {', '.join(heavy) or 'none'}")
    met = c <= GOAL_S and not heavy
    print("RESULT " + json.dumps({
        "target": "4. CLI start: abcx --help (cold, median)", "measured": f"{c:.3f} s",
        "baseline": f"python -c pass {b:.3f} s", "ratio": round(c / b, 2),
        "goal": f"<= {GOAL_S} s, no {'/'.join(HEAVY[:5])} imported",
        "met": met, "load": round(load, 2),
        "note": f"heavy imports: {', '.join(heavy) or 'none'}",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
