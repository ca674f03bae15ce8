"""Trainer callbacks: the run record's metric stream (and its reconciliation on resume), the progress
display, the non-finite guard and the policy health check."""
from __future__ import annotations

import math
import os
from pathlib import Path
import sys
import time
from typing import Any

from transformers import TrainerCallback

from abcx.record import RunRecord, fault_point, fault_spec, warn
from abcx.record.states import StopKind
from abcx.record.states import State
from abcx.training.metric_names import RENAME  # TRL's names -> abcx's

END_OF_TRAINING_KEYS = ("train_runtime", "train_loss", "train_samples_per_second")


def canonical(logs: dict[str, Any]) -> dict[str, Any]:
    return {RENAME.get(k, k): v for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class NonFiniteError(RuntimeError):
    pass


class UnhealthyPolicyError(RuntimeError):
    pass


class HealthCheck:
    """Signs that the policy is destroyed (lr=1e30 does it in one step) while the loss stays finite:
    STEPS consecutive logged steps each with
    - entropy at its maximum: >= ENTROPY_FRACTION of ln(vocabulary size), i.e. sampling is all but
      uniform over the vocabulary, which no trained language model is; or
    - grad norm exactly 0 although the latest rollout gave some group a reward spread (TRL's
      frac_reward_zero_std < 1, else reward_std > 0: some advantage is nonzero) and not every token
      was clipped. Otherwise a zero gradient is normal: every group scored alike (all solved, or
      all failed), or the clip rule held every token.
    Five steps: long enough that one odd batch never trips it, short enough to stop a dead run early."""

    STEPS = 5
    ENTROPY_FRACTION = 0.99

    def __init__(self, vocab_size: int | None = None):
        self.max_entropy = math.log(vocab_size) if vocab_size and vocab_size > 1 else None
        self.streak, self.spread, self.reported = 0, False, False

    def update(self, row: dict) -> str | None:
        """Feed one logged row; the problem, once, when the streak reaches STEPS."""
        if isinstance(row.get("frac_reward_zero_std"), (int, float)):
            self.spread = row["frac_reward_zero_std"] < 1
        elif isinstance(row.get("reward_std"), (int, float)):
            self.spread = row["reward_std"] > 0
        entropy, grad_norm = row.get("entropy"), row.get("grad_norm")
        flat = (self.max_entropy is not None and isinstance(entropy, (int, float))
                and entropy >= self.ENTROPY_FRACTION * self.max_entropy)
        stuck = grad_norm == 0 and self.spread and row.get("clip/clipped", 0) < 1
        self.streak = self.streak + 1 if (flat or stuck) else 0
        if self.streak < self.STEPS or self.reported:
            return None
        self.reported = True
        why = (f"entropy {entropy:.3f} at its maximum (ln of the vocabulary = {self.max_entropy:.3f})" if flat
               else "grad norm exactly 0 although rewards differ within a group")
        return f"the policy looks destroyed: {why} for {self.STEPS} steps in a row"


class SweepControl(TrainerCallback):
    """What a sweep asks of this training (the run's control.json, abcx.record.RunRecord.control):
    - `stop_at`: pause at that step (a halving rung) with a checkpoint, so the run can be promoted
      and resume from there into the same record;
    - `stop` (written while it trains, by `abcx sweep stop` through Backend.stop): stop at the next
      generation boundary with a checkpoint. control.json is read again at each boundary;
    - `health`: stop a run whose policy went bad, at a checkpoint, with the reason: entropy under
      `entropy_floor`, or TRL's fraction of zero-reward-variance groups (`frac_reward_zero_std`)
      over `zero_std_frac`, for `steps` logged steps in a row; any non-finite logged value
      (`nonfinite`, default on) at once.
    A requested stop waits for a generation boundary (`cycle` optimizer steps: TRL generates once per
    steps_per_generation x num_iterations micro-batches and keeps the rollout in memory only), so the
    run resumes exactly where an uninterrupted one would be. Under several processes the ranks agree
    on it (one all-reduce per boundary), so all stop at the same step.
    `stopped` says why training stopped early (None: it was not stopped); train() records it."""

    def __init__(self, stop_at: int | None = None, health: dict | None = None, *, record: RunRecord | None = None,
                 cycle: int = 1):
        self.stop_at = int(stop_at) if stop_at else None
        self.health = dict(health or {})
        self.streaks = {"entropy": 0, "zero_std": 0}
        self.stopped: dict | None = None
        self.record, self.cycle = record, max(1, int(cycle))

    def _stop(self, control, **detail) -> None:
        control.should_save = True  # the checkpoint it resumes from, if promoted or resubmitted
        control.should_training_stop = True
        self.stopped = self.stopped or detail

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if self.stop_at and self.stop_at <= step < state.max_steps:
            self._stop(control, kind=StopKind.RUNG.value, step=step, reason=f"paused at step {step} (a rung of the sweep's strategy)")
        elif self.record is not None and step % self.cycle == 0 and step < state.max_steps:
            request = self._agreed(args, self._requested())
            if request:
                why = f": {request['reason']}" if isinstance(request, dict) and request.get("reason") else ""
                self._stop(control, kind=StopKind.USER.value, step=step, reason=f"stopped at step {step} by `abcx sweep stop`{why}",
                           requested=request.get("at") if isinstance(request, dict) else None)
        return control

    def _requested(self) -> dict | bool:
        return self.record.control().get("stop") or False

    @staticmethod
    def _agreed(args, request):
        """The request as every process sees it: any rank's request stops all ranks (rank 0 keeps its reason)."""
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return request
        flag = torch.tensor([1 if request else 0], device=args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return (request or {"reason": "requested on another process"}) if flag.item() else False

    def on_log(self, args, state, control, logs=None, **kwargs):
        problem = self.health_problem(canonical(logs or {}))
        if problem:
            self._stop(control, kind=StopKind.HEALTH.value, step=state.global_step, reason=f"health stop at step "
                       f"{state.global_step}: {problem}")
        return control

    def health_problem(self, row: dict) -> str | None:
        """Feed one logged row; the health limit it breaks, if any."""
        h = self.health
        if h.get("nonfinite", True) and h:
            # eps/* are the clip bounds in use: inf there means "no bound" (grpo's eps2, eps3), not a fault.
            bad = sorted(k for k, v in row.items() if not math.isfinite(v) and not (k.startswith("eps/") and v == math.inf))
            if bad:
                return f"non-finite {', '.join(bad[:3])}"
        steps = int(h.get("steps") or 1)
        checks = (("entropy", "entropy", lambda v: v < float(h["entropy_floor"]), "entropy_floor", "under"),
                  ("zero_std", "frac_reward_zero_std", lambda v: v > float(h["zero_std_frac"]), "zero_std_frac", "over"))
        for name, key, broken, limit, word in checks:
            if h.get(limit) is None or key not in row:
                continue
            self.streaks[name] = self.streaks[name] + 1 if broken(row[key]) else 0
            if self.streaks[name] >= steps:
                return f"{key} {row[key]:.4g} {word} {limit}={h[limit]} for {steps} logged step(s) in a row"
        return None


class RecordCallback(TrainerCallback):
    """Appends each log step to metrics.jsonl (flushed: a crash loses no logged row), keeps
    status.json's step current, and reconciles the record with the state the trainer resumed."""

    def __init__(self, record: RunRecord, nan_policy: str = "fail", *, nonfinite_stops: bool = False):
        self.record = record
        self.nan_policy = nan_policy
        self.nonfinite_stops = nonfinite_stops  # a sweep's health stop handles a non-finite loss (SweepControl)
        self.end_of_training: dict[str, float] = {}
        self.health = HealthCheck()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # Here the trainer has loaded its checkpoint (or none): global_step is what it really resumes.
        if model is not None:
            self.health = HealthCheck(getattr(getattr(model, "config", None), "vocab_size", None))
        if state.is_world_process_zero:
            self.record.reconcile(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = canonical(logs)
        if any(k in row for k in END_OF_TRAINING_KEYS):
            self.end_of_training.update(row)
            return
        self.record.append_metrics({"step": state.global_step, "time": round(time.time(), 3), **row})
        self.record.set_status(State.RUNNING, step=state.global_step, max_steps=state.max_steps, durable=False)
        fault_point("row", state.global_step)
        loss = row.get("loss")
        if self.nan_policy == "fail" and loss is not None and not math.isfinite(loss) and not self.nonfinite_stops:
            raise NonFiniteError(f"non-finite loss ({loss}) at step {state.global_step}")
        problem = self.health.update(row)
        if problem and self.nan_policy == "fail":
            raise UnhealthyPolicyError(f"{problem} at step {state.global_step} (train.nan_policy=fail)")
        if problem:
            warn(self.record.path, f"{problem} (train.nan_policy=skip: training goes on)")
            self.record.set_status(State.RUNNING, warning=problem)

    def on_step_end(self, args, state, control, **kwargs):
        spec = fault_spec()
        if spec and spec[0] == "checkpoint" and spec[1] == state.global_step and state.is_world_process_zero:
            # Fault injection (ABCX_FAULT, tests only): the trainer writes trainer_state.json last; stop
            # this checkpoint halfway through it, as a kill during the write would.
            state.save_to_json = lambda path: _torn_write(state, path)

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


class WandbConfigCallback(TrainerCallback):
    """Adds abcx's resolved config to the W&B run config. Runs after TRL's WandbCallback (callbacks
    given to the trainer come after the reporting ones), whose on_train_begin starts the W&B run."""

    def __init__(self, values: dict):
        self.values = values

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or "wandb" not in sys.modules:
            return
        import wandb

        if wandb.run is not None:
            wandb.run.config.update(self.values, allow_val_change=True)


class ModelCardCallback(TrainerCallback):
    """TRL's model card names a local base model "[None](https://huggingface.co/None)" (it links hub
    ids only): after each save, name the real base model, the run and the method instead."""

    def __init__(self, base_model: str, run_id: str, method: str):
        self.base_model, self.run_id, self.method = base_model, run_id, method

    def on_save(self, args, state, control, **kwargs):
        card = Path(args.output_dir) / "README.md"
        if not state.is_world_process_zero or not card.is_file():
            return
        text = card.read_text(encoding="utf-8")
        local = os.path.isdir(self.base_model)
        base = f"`{self.base_model}` (a local model)" if local else f"[{self.base_model}](https://huggingface.co/{self.base_model})"
        fixed = (text.replace("[None](https://huggingface.co/None)", f"{base}, by abcx run `{self.run_id}` ({self.method})")
                 .replace('model="None"', f'model="{args.output_dir}/checkpoint-{state.global_step}"')
                 .replace("model_name: checkpoints", f"model_name: {self.run_id}")
                 .replace("# Model Card for checkpoints", f"# Model Card for {self.run_id}"))
        if fixed != text:
            card.write_text(fixed, encoding="utf-8")


class ProgressCallback(TrainerCallback):
    """Training progress (abcx.progress): on a terminal a live row (step/max, s/step, ETA, the last
    reward, entropy and clipped share); otherwise one plain line per logged step, and a heartbeat
    line while a step takes longer than abcx.progress.INTERVAL_S. `preparing`: the task that said
    what happened before the first step (imports, the model, W&B), ended here when training begins."""

    KEYS = (("reward", "reward", "{:.3f}"), ("entropy", "entropy", "{:.3f}"), ("clip/clipped", "clipped", "{:.1%}"),
            ("clip/q4", "q4", "{:.1%}"))
    SHORT = (("reward", "r", "{:.3f}"), ("entropy", "H", "{:.3f}"), ("clip/clipped", "clip", "{:.1%}"))

    def __init__(self, run_id: str, stream=None, plain: bool = False, preparing=None):
        from abcx.progress import on_terminal

        self.run_id = run_id
        self.stream = stream
        self.tty = on_terminal(stream) and not plain
        self.preparing = preparing
        self.task = None
        self.last: dict[str, Any] = {}  # reward is logged on generation steps only: the latest stays shown
        self.t0, self.start_step = time.time(), 0

    def on_train_begin(self, args, state, control, **kwargs):
        from abcx import progress

        self.t0, self.start_step = time.time(), state.global_step
        if self.preparing is not None:
            self.preparing.done()
        if not state.is_world_process_zero:
            return
        # At 80 columns the run id without its hash fits beside the step count and the metrics.
        name = self.run_id.rsplit("-", 1)[0] if self.tty and self.run_id.count("-") >= 2 else self.run_id
        resumed = f", resumed at step {state.global_step}" if state.global_step else ""
        self.task = progress.task(f"training to step {state.max_steps}{resumed}", total=state.max_steps, unit="steps",
                                  name=name, stream=self.stream, plain=not self.tty)
        self.task.update(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "train_runtime" in logs:
            return
        self.last.update({k: logs[k] for k, _label, _fmt in self.KEYS if k in logs})
        keys = self.SHORT if self.tty else self.KEYS
        info = (" " if self.tty else "  ").join(f"{label} {_shown(self.last[key], fmt)}" for key, label, fmt in keys
                                                if key in self.last)
        if self.task is None:  # logged without on_train_begin (a test feeding rows): the plain line only
            print(f"[{self.run_id}] step {state.global_step}/{state.max_steps}  {info}", file=self.stream or sys.stderr,
                  flush=True)
            return
        self.task.update(state.global_step, info=info)
        if not self.tty:
            rate = (time.time() - self.t0) / max(state.global_step - self.start_step, 1)
            eta = self.task.eta()
            left = f", ETA {_duration(eta)}" if eta is not None and state.global_step < state.max_steps else ""
            self.task.note(f"[{self.run_id}] step {state.global_step}/{state.max_steps}  {info}  "
                           f"({rate:.2f} s/step{left})")

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        """End the row. on_train_end does it when training ends; when it raises (a crash, a kill) the
        trainer calls no callback, and the row would go on printing "running" beside the error line."""
        if self.task is not None:
            self.task.done()
            self.task = None


def _duration(seconds: float) -> str:
    from abcx.progress import duration

    return duration(seconds)


def _shown(value: Any, fmt: str) -> str:
    """A logged value for the progress line: NaN, inf and None (train.nan_policy=skip lets them
    through) are shown as they are, never a formatting error."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return fmt.format(value)
    return str(value)


def _torn_write(state, path: str) -> None:
    import dataclasses
    import json

    text = json.dumps(dataclasses.asdict(state), indent=2, sort_keys=True) + "\n"
    with open(path, "w") as f:
        f.write(text[: len(text) // 2])
        f.flush()
        os.fsync(f.fileno())
    fault_point("checkpoint", state.global_step)
