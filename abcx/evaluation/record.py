"""Eval rows in the run record (eval.jsonl) and in W&B. On a resume `RunRecord.reconcile` drops the
rows of steps after the resumed checkpoint, as for metrics.jsonl; readers skip unreadable lines."""
from __future__ import annotations

import sys

from abcx.record import RunRecord


def append_eval(record: RunRecord, row: dict) -> None:
    record.append_eval(row)
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            data = {f"eval/{row['benchmark']}/{k}": v for k, v in row["metrics"].items()}
            if row.get("step") is not None:
                data["train/global_step"] = row["step"]
            wandb.log(data)

