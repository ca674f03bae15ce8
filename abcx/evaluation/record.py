"""Eval rows in the run record (eval.jsonl) and in W&B. On a resume `RunRecord.reconcile` drops the
rows of steps after the resumed checkpoint, as for metrics.jsonl; readers skip unreadable lines."""
from __future__ import annotations

import json
import sys

from abcx.record import RunRecord, read_jsonl


def append_eval(record: RunRecord, row: dict) -> None:
    with open(record.eval_path, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            data = {f"eval/{row['benchmark']}/{k}": v for k, v in row["metrics"].items()}
            if row.get("step") is not None:
                data["train/global_step"] = row["step"]
            wandb.log(data)


def evals(record: RunRecord) -> list[dict]:
    return list(read_jsonl(record.eval_path))
