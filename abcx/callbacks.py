"""Trainer callbacks: the run record's metric stream, the progress display, and the non-finite guard."""
from __future__ import annotations

import math
import sys
import time
from typing import Any

from transformers import TrainerCallback

from abcx.record import RunRecord

# TRL's names -> abcx's (docs/architecture.md); every other key is kept as TRL logs it.
RENAME = {"completions/mean_length": "completion_length"}
END_OF_TRAINING_KEYS = ("train_runtime", "train_loss", "train_samples_per_second")


def canonical(logs: dict[str, Any]) -> dict[str, Any]:
    return {RENAME.get(k, k): v for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class NonFiniteError(RuntimeError):
    pass


class RecordCallback(TrainerCallback):
    """Appends each log step to metrics.jsonl (flushed: a crash loses no logged row) and keeps
    status.json's step current."""

    def __init__(self, record: RunRecord, nan_policy: str = "fail"):
        self.record = record
        self.nan_policy = nan_policy
        self.end_of_training: dict[str, float] = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = canonical(logs)
        if any(k in row for k in END_OF_TRAINING_KEYS):
            self.end_of_training.update(row)
            return
        self.record.append_metrics({"step": state.global_step, "time": round(time.time(), 3), **row})
        self.record.set_status("running", step=state.global_step, max_steps=state.max_steps, durable=False)
        loss = row.get("loss")
        if self.nan_policy == "fail" and loss is not None and not math.isfinite(loss):
            raise NonFiniteError(f"non-finite loss ({loss}) at step {state.global_step}")

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        import torch

        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads or all(torch.isfinite(g).all() for g in grads):
            return
        if self.nan_policy == "skip":
            # Zeroed gradients: the step changes nothing through the gradient (Adam's momentum still applies).
            for g in grads:
                g.zero_()
            self.record.append_metrics({"step": state.global_step + 1, "time": round(time.time(), 3),
                                        "skipped_nonfinite_step": 1.0})
            return
        raise NonFiniteError(f"non-finite gradient at step {state.global_step + 1} (train.nan_policy=fail)")


class ProgressCallback(TrainerCallback):
    """A rich progress bar on a terminal; one plain line per log step otherwise (rich prints nothing
    until done when stdout is not a terminal)."""

    KEYS = (("reward", "reward", "{:.3f}"), ("entropy", "entropy", "{:.3f}"), ("clip/clipped", "clipped", "{:.1%}"),
            ("clip/q4", "q4", "{:.1%}"))

    def __init__(self, run_id: str, stream=None):
        self.run_id = run_id
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.progress = None
        self.task = None
        self.t0, self.start_step = time.time(), 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0, self.start_step = time.time(), state.global_step
        if self.tty and state.is_world_process_zero:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
            self.progress.start()
            self.task = self.progress.add_task(self.run_id, total=state.max_steps, completed=state.global_step, info="")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "train_runtime" in logs:
            return
        parts = [f"{label} {fmt.format(logs[key])}" for key, label, fmt in self.KEYS if key in logs]
        info = "  ".join(parts)
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, info=info)
        else:
            rate = (time.time() - self.t0) / max(state.global_step - self.start_step, 1)
            print(f"[{self.run_id}] step {state.global_step}/{state.max_steps}  {info}  ({rate:.2f} s/step)",
                  file=self.stream, flush=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
