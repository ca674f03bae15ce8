"""How long `abcx sweep run ... --dry-run` takes to expand, validate and plan a 1,000-point grid, against
composing every point with plain `abcx.config.compose()` (measured on a subset, extrapolated).

    .venv/bin/python bench/bench_sweep.py [--points 1000] [--subset 40]

The grid mixes two methods (two group choices, so two composes on the fast path) with value axes.
Run records are read from an empty temporary results folder, as for a sweep never submitted.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def write_sweep(folder: Path) -> Path:
    path = folder / "bench.yaml"
    path.write_text(
        "name: bench\n"
        "fixed: [train.max_steps=10, logger=none]\n"
        "points:\n  - [method=abc_grpo, method.eps3=0.28]\n  - [method=grpo, method.eps_high=0.28]\n"
        "grid:\n"
        "  seed: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n"
        "  train.learning_rate: [1.0e-4, 2.0e-4, 3.0e-4, 4.0e-4, 5.0e-4]\n"
        "  train.temperature: [0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5]\n"
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subset", type=int, default=40, help="points composed the slow way, extrapolated")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        sweep = write_sweep(Path(tmp))
        from abcx.sweep import command, spec

        lines: list[str] = []
        t0 = time.perf_counter()
        command.sweep_run(str(sweep), [f"results_dir={tmp}/results"], dry_run=True, yes=True, out=lines.append)
        fast = time.perf_counter() - t0
        from abcx.config.compose import compose

        points = spec.expand(spec.with_cli(spec.load_sweep(str(sweep)), []))
        n = len(points)
        assert lines[-1].startswith(f"sweep bench: {n} point(s)"), lines[-1]
        subset = points[:: max(1, len(points) // args.subset)][: args.subset]
        t0 = time.perf_counter()
        for p in subset:
            compose(p)
        slow_each = (time.perf_counter() - t0) / len(subset)
        slow = slow_each * len(points)
    print(f"points: {n}")
    print(f"dry-run plan (fast path, incl. first compose and table): {fast:.2f} s ({fast / n * 1e3:.2f} ms/point)")
    print(f"plain compose() per point: {slow_each * 1e3:.1f} ms -> {slow:.1f} s for {len(points)} points "
          f"(measured on {len(subset)})")
    print(f"speed-up: {slow / fast:.1f}x")


if __name__ == "__main__":
    main()
