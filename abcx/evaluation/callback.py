"""Periodic evaluation during training: every `eval.every_steps` optimizer steps (and at the end),
the in-memory policy is sampled on the eval benchmarks and a row is appended to the run's eval.jsonl
(and logged to W&B), so a run records Avg@k / Pass@k curves over steps."""
from __future__ import annotations

import sys
from typing import Any

from transformers import TrainerCallback

from abcx.evaluation.record import append_eval
from abcx.evaluation.sampling import Sampling
from abcx.record import RunRecord


class PeriodicEvalCallback(TrainerCallback):
    def __init__(self, cfg: Any, record: RunRecord, tokenizer):
        self.cfg, self.record, self.tokenizer = cfg, record, tokenizer
        self.sampling = Sampling.from_config(cfg.eval)
        self.done_steps: set[int] = set()

    def _run(self, model, step: int) -> None:
        if step in self.done_steps:
            return
        from abcx.evaluation.runner import evaluate

        rows = evaluate(model, self.tokenizer, list(self.cfg.eval.benchmarks), self.sampling,
                        max_problems=self.cfg.eval.max_problems, batch_size=self.cfg.eval.batch_size, step=step,
                        who=self.record.run_id)
        for row in rows:
            append_eval(self.record, row)
            top = max((k for k in row["metrics"] if k.startswith("pass@")), key=lambda k: int(k.split("@")[1]))
            avg_key = f"avg@{row['n']}"
            print(f"[{self.record.run_id}] eval {row['benchmark']} step {step}: "
                  f"{avg_key} {row['metrics'][avg_key]:.3f}  {top} {row['metrics'][top]:.3f}",
                  file=sys.stderr, flush=True)
        self.done_steps.add(step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        every = self.cfg.eval.every_steps
        if every and state.global_step % every == 0 and state.is_world_process_zero:
            self._run(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        # Not when a sweep paused the run before max_steps (a halving rung, a health stop): not the end.
        if self.cfg.eval.at_end and state.is_world_process_zero and state.global_step >= (getattr(state, "max_steps", 0) or 0):
            self._run(model, state.global_step)
