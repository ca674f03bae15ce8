"""Eval rows in the run record (eval.jsonl) and in W&B."""
from __future__ import annotations

import json
import sys

from abcx.record import RunRecord, atomic_write_text, read_jsonl


def append_eval(record: RunRecord, row: dict) -> None:
    with open(record.path / "eval.jsonl", "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            data = {f"eval/{row['benchmark']}/{k}": v for k, v in row["metrics"].items()}
            if row.get("step") is not None:
                data["train/global_step"] = row["step"]
            wandb.log(data)


def truncate_evals_after(record: RunRecord, step: int) -> None:
    path = record.path / "eval.jsonl"
    if path.exists():
        rows = [r for r in read_jsonl(path) if r.get("step") is None or r["step"] <= step]
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def evals(record: RunRecord) -> list[dict]:
    return list(read_jsonl(record.path / "eval.jsonl"))
