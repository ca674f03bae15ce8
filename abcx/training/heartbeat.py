"""The trainer's side of the stall watcher (abcx.training.watchdog): it starts the watcher process when
training begins and writes it one line per sign of progress. Writes never block (a full pipe drops the
line: the next one says as much), and a watcher that died costs the run nothing but its watching."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from transformers import TrainerCallback


class Heartbeat(TrainerCallback):
    """`step N` at each optimizer step's end; `alive` when training begins and before each step (after the
    previous one's logging, evaluation and checkpoint); `save <s>` the seconds a checkpoint took
    (abcx.training.deadline sizes the time-limit warning with it); `end` after the last step (or when
    training stops early). Added after the other callbacks: its on_step_end sees whether training stops."""

    def __init__(self, record, timeout_s: float, retries: int, retry: list[str] | None = None):
        self.record, self.timeout_s, self.retries, self.retry = record, float(timeout_s), int(retries), retry
        self.proc: subprocess.Popen | None = None
        self.mark = time.monotonic()

    def start(self) -> None:
        argv = [sys.executable, "-m", "abcx.training.watchdog", str(self.record.path), repr(self.timeout_s),
                str(self.retries), *(self.retry or [])]
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        except OSError as err:
            print(f"warning: [{self.record.run_id}] no stall watcher ({err}); training goes on unwatched", file=sys.stderr)
            return
        os.set_blocking(self.proc.stdin.fileno(), False)

    def send(self, line: str) -> None:
        if self.proc is None or self.proc.stdin is None:
            return
        try:
            os.write(self.proc.stdin.fileno(), (line + "\n").encode())
        except BlockingIOError:
            pass
        except (BrokenPipeError, OSError, ValueError):
            print(f"warning: [{self.record.run_id}] the stall watcher exited; training goes on unwatched",
                  file=sys.stderr)
            self.close()

    def close(self) -> None:
        """`end`, and the watcher is waited for (it writes its last view and exits)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            os.write(proc.stdin.fileno(), b"end\n")
        except (OSError, ValueError):
            pass
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.proc is None:
            self.start()
        self.send("alive")

    def on_step_begin(self, args, state, control, **kwargs):
        self.send("alive")

    def on_step_end(self, args, state, control, **kwargs):
        self.send(f"step {state.global_step}")
        self.mark = time.monotonic()
        if control.should_training_stop or state.global_step >= state.max_steps:
            self.close()  # the last step: what follows (final save, evaluation, model) makes no steps

    def on_log(self, args, state, control, **kwargs):
        self.mark = time.monotonic()  # the save, if this step has one, follows its logging

    def on_save(self, args, state, control, **kwargs):
        self.send(f"save {time.monotonic() - self.mark:.3f}")

    def on_train_end(self, args, state, control, **kwargs):
        self.close()  # the final model, evaluation and summary are not steps
