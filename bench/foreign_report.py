"""The report over runs abcx did not train, on the project's own foreign runs (results/foreign/).

Trains stock TRL (bench/stock_trl.py: `trl.GRPOTrainer` itself) with grpo's and dapo's clip settings
and abcx's grpo and abc_grpo presets, all with the same testbed settings, then writes one mixed
report with no labels given: stock TRL's method and model are inferred from its W&B config.

    python bench/foreign_report.py [--steps 50] [--seeds 0 1] [--work /tmp/abcx-foreign] [--out results/foreign]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--work", default="/tmp/abcx-foreign")
    ap.add_argument("--out", default=str(REPO / "results" / "foreign"))
    a = ap.parse_args()
    work, out = Path(a.work), Path(a.out)
    common = [f"train.max_steps={a.steps}", f"train.save_steps={a.steps}", "eval.at_end=false", "eval.every_steps=0"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    for seed in a.seeds:
        for name, method in (("stock-grpo", "grpo"), ("stock-dapo", "dapo")):
            folder = work / f"{name}-s{seed}"
            if not (folder / f"checkpoint-{a.steps}").exists():
                subprocess.run([sys.executable, str(REPO / "bench" / "stock_trl.py"), str(folder), *common,
                                f"method={method}", f"seed={seed}"], env=env, check=True)
        for method in ("grpo", "abc_grpo"):
            subprocess.run([sys.executable, "-m", "abcx.cli", "train", *common, f"method={method}", f"seed={seed}",
                            "logger=none", f"results_dir={work / 'abcx'}"], env=env, check=True)
    out.mkdir(parents=True, exist_ok=True)
    from abcx.report.command import run_report

    sources = [str(work / "abcx"), *(str(p / "wandb") for p in sorted(work.glob("stock-*")))]
    # Relative paths, so the report's notes name the folder as the reader of results/ sees it.
    run_report(sources, fmt="markdown", out=os.path.relpath(out / "report.md"), plots_dir=os.path.relpath(out / "plots"))
    print(f"wrote {out / 'report.md'}")


if __name__ == "__main__":
    main()
