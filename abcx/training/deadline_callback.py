"""The checkpoint at the warning before a job's end: the trainer's side of abcx.training.deadline (which
says what "the next step boundary" is and why). Armed by train() only in a job whose backend warns it
and requeues it (a Python handler holds the signal: submitit's)."""
from __future__ import annotations

import os
import signal
import statistics
import sys
import threading
import time

from transformers import TrainerCallback

from abcx.training.deadline import WARNING_USE, Notice, next_boundary, time_to_save


class SaveAtWarning(TrainerCallback):
    """Turns the job's warning signal into a checkpoint at the next rollout boundary (module doc).
    `saved` is the step it stopped at; train() then calls `hand_over`, which runs the signal's previous
    handler (submitit's: checkpoint() + requeue + exit)."""

    def __init__(self, notice: Notice, cycle: int, run_id: str = "run"):
        self.notice, self.cycle, self.run_id = notice, max(1, int(cycle)), run_id
        self.previous = None
        self.step, self.max_steps = 0, 0
        self.step_times: list[float] = []
        self.save_s = 0.0
        self.last_end: float | None = None
        self.target: int | None = None  # the boundary it saves at, once warned
        self.saved: int | None = None  # the step it stopped training at, with a checkpoint
        self.ended = False  # training is over (stopped here, by a sweep, or at max_steps)
        self.fallen_back = False
        self.timer: threading.Timer | None = None  # the fallback, should the boundary not come in time

    # --- the signal ------------------------------------------------------------------------------
    def arm(self) -> bool:
        """Take the signal over from a Python handler that requeues (submitit's); False where there is
        none (not in such a job, or not the main thread): nothing changes."""
        if threading.current_thread() is not threading.main_thread():
            return False
        previous = signal.getsignal(self.notice.signum)
        if not callable(previous):
            return False
        self.previous = previous
        signal.signal(self.notice.signum, self._on_signal)
        return True

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(self.notice.signum, self.previous)

    def _on_signal(self, signum, frame) -> None:
        if self.fallen_back or self.target is not None:  # the fallback's own signal, or a second warning
            self.fallen_back = True
            return self.previous(signum, frame)
        target = next_boundary(self.step, self.cycle)
        need = time_to_save(self.step, self.cycle, self.median_step_s(), self.save_s)
        budget = WARNING_USE * self.notice.seconds
        if need > budget:
            self._say(f"the next rollout boundary (step {target}) is ~{need:.0f} s of training and saving away, "
                      f"more than {budget:.3g} s of the {self.notice.seconds:.3g} s warning: requeueing now as "
                      f"before; the run resumes from its newest checkpoint and trains the steps since again")
            self.fallen_back = True
            return self.previous(signum, frame)
        self.target = target
        self._say(f"warned of the job's end at step {self.step}: saving a checkpoint at step {target} "
                  f"(~{need:.0f} s), then requeueing")
        self.timer = threading.Timer(budget, self._too_late)
        self.timer.daemon = True
        self.timer.start()

    @property
    def warned(self) -> bool:
        """Whether the warning came and is this callback's to answer (hand_over), not fallen back."""
        return self.target is not None and not self.fallen_back

    def _too_late(self) -> None:
        """The boundary did not come within the warning's budget: submitit's handler, on the main thread."""
        if self.saved is None and not self.ended and not self.fallen_back:
            self._say(f"step {self.target} did not end within {WARNING_USE * self.notice.seconds:.3g} s of the "
                      f"warning (at step {self.step}): requeueing as before; the run resumes from its newest "
                      f"checkpoint and trains the steps since again")
            self.fallen_back = True
            os.kill(os.getpid(), self.notice.signum)

    def median_step_s(self) -> float:
        return statistics.median(self.step_times) if self.step_times else 0.0

    def _say(self, text: str) -> None:
        print(f"[{self.run_id}] {text}", file=sys.stderr, flush=True)

    # --- the trainer -----------------------------------------------------------------------------
    def on_step_end(self, args, state, control, **kwargs):
        now = time.monotonic()
        if self.last_end is not None and state.global_step == self.step + 1:
            self.step_times = [*self.step_times[-99:], now - self.last_end]
        self.step, self.max_steps, self.last_end = state.global_step, state.max_steps, now
        if self.target is not None and not self.fallen_back and self.saved is None and \
                self.target <= state.global_step < state.max_steps:
            self.saved = state.global_step  # from here the timer leaves it alone: the save is underway
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_log(self, args, state, control, **kwargs):
        self.save_mark = time.monotonic()

    def on_save(self, args, state, control, **kwargs):
        mark = getattr(self, "save_mark", None) or self.last_end or time.monotonic()
        self.save_s = max(self.save_s, time.monotonic() - mark)
        self.last_end = time.monotonic()  # the next step's time does not count the save

    def on_train_end(self, args, state, control, **kwargs):
        self.ended = True

    def hand_over(self) -> None:
        """Once training has ended after the warning: the signal's previous handler (submitit requeues
        and exits). Also when training reached max_steps meanwhile: the requeued job then finishes
        from that last checkpoint without a step (the final model and evaluation may outlast the warning)."""
        where = f"checkpoint-{self.saved} saved" if self.saved is not None else f"training ended at step {self.step}"
        self._say(f"{where} before the job's end; requeueing")
        self.previous(self.notice.signum, None)
