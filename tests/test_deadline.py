"""The warning before a job's end (abcx.training.deadline): where the run saves, when it gives up and
requeues as before, and how early a job asks to be warned. Real signals to this process, the real
trainer state objects; the handler the warning replaces is a plain function here (submitit's in a job,
exercised on the SLURM cluster by tests/test_slurm_deadline.py)."""
from __future__ import annotations

import os
import signal
import time

import pytest
from transformers import TrainerControl, TrainerState

from abcx.training.deadline import WARNING_USE, Notice, next_boundary, signal_delay_s, time_to_save
from abcx.training.deadline_callback import SaveAtWarning


def test_the_next_boundary_is_the_first_multiple_of_the_generation_cycle_after_the_step():
    assert [next_boundary(s, 4) for s in (0, 3, 4, 5, 7)] == [4, 4, 8, 8, 8]
    assert [next_boundary(s, 1) for s in (0, 6)] == [1, 7]
    assert time_to_save(5, 4, median_step_s=2.0, save_s=7.0) == 3 * 2.0 + 7.0


def test_the_warning_is_sized_from_the_runs_own_pace_within_the_least_and_half_the_time_limit():
    assert signal_delay_s(None, {}, cycle=4) == 90  # nothing known: submitit's default
    assert signal_delay_s(300, {}, cycle=4) == 300  # a profile's least
    # 2 x (4 steps x 30 s + a 20 s save) / 0.75 = 373.3 -> 374
    assert signal_delay_s(90, {"median_step_s": 30.0, "save_s": 20.0}, cycle=4) == 374
    assert signal_delay_s(90, {"median_step_s": 30.0, "save_s": 20.0}, cycle=1) == 134  # 2 x 50 / 0.75
    assert signal_delay_s(90, {"median_step_s": 30.0, "save_s": 20.0}, cycle=4, time_limit_s=600) == 300
    assert signal_delay_s(90, {"median_step_s": 0.1}, cycle=4) == 90  # fast steps: the least stands
    assert signal_delay_s(90, {}, cycle=4, time_limit_s=60) == 30  # never a warning at the job's start


class Run:
    """One trainer's state and control, stepped by hand through the callback's hooks."""

    def __init__(self, callback: SaveAtWarning, max_steps: int = 100):
        self.cb, self.state, self.control = callback, TrainerState(max_steps=max_steps), TrainerControl()

    def step(self, seconds: float = 0.0) -> None:
        time.sleep(seconds)
        self.state.global_step += 1
        self.cb.on_step_end(None, self.state, self.control)


@pytest.fixture
def warned():
    """A SaveAtWarning on SIGUSR1 in front of a handler that records its calls (submitit's, in a job)."""
    calls: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append(signum))
    made: list[SaveAtWarning] = []

    def make(seconds: float, cycle: int) -> SaveAtWarning:
        cb = SaveAtWarning(Notice(int(signal.SIGUSR1), seconds), cycle)
        assert cb.arm()
        made.append(cb)
        return cb

    yield make, calls
    for cb in made:
        cb.disarm()
    signal.signal(signal.SIGUSR1, previous)


def test_a_warning_inside_a_rollout_saves_and_stops_at_its_end_then_hands_over(warned):
    make, calls = warned
    cb = make(90.0, cycle=4)
    run = Run(cb)
    for _ in range(5):
        run.step()
    os.kill(os.getpid(), signal.SIGUSR1)
    assert cb.target == 8 and not calls
    run.step()
    run.step()
    assert not run.control.should_save and not run.control.should_training_stop
    run.step()
    assert (run.state.global_step, cb.saved) == (8, 8)
    assert run.control.should_save and run.control.should_training_stop
    cb.on_train_end(None, run.state, run.control)
    assert cb.warned and not calls
    cb.hand_over()
    assert calls == [signal.SIGUSR1]


def test_a_boundary_further_than_the_warning_allows_requeues_at_once(warned, capsys):
    make, calls = warned
    cb = make(1.0, cycle=8)
    run = Run(cb)
    for _ in range(3):
        run.step(0.2)  # 0.2 s a step: 5 steps to step 8 take ~1 s > 0.75 s of the 1 s warning
    os.kill(os.getpid(), signal.SIGUSR1)
    assert calls == [signal.SIGUSR1] and not cb.warned
    assert "the next rollout boundary (step 8) is ~1 s" in capsys.readouterr().err
    run.step()
    assert not run.control.should_save and cb.saved is None


def test_a_boundary_that_does_not_come_in_time_requeues_as_before(warned, capsys):
    make, calls = warned
    cb = make(0.4, cycle=2)  # the boundary 1 step away fits, but that step takes longer than 0.3 s
    run = Run(cb)
    run.step()
    os.kill(os.getpid(), signal.SIGUSR1)
    assert cb.target == 2 and not calls
    deadline = time.time() + 5
    while not calls and time.time() < deadline:
        time.sleep(0.05)  # the timer signals this process again; the handler runs here, in the main thread
    assert calls == [signal.SIGUSR1] and not cb.warned
    assert f"step 2 did not end within {WARNING_USE * 0.4:.3g} s of the warning" in capsys.readouterr().err
    run.step()
    assert cb.saved is None and not run.control.should_save


def test_a_slurm_array_asks_for_the_warning_its_slowest_run_needs(tmp_path):
    from types import SimpleNamespace

    from abcx.config.compose import compose
    from abcx.launch.slurm import warning_s
    from abcx.record import RunRecord

    cfg = compose(["train=testbed"])  # a rollout spans 4 optimizer steps
    fast, slow = (SimpleNamespace(path=tmp_path / name, cfg=cfg) for name in ("fast", "slow"))
    slow.path.mkdir()
    RunRecord(slow.path).write_heartbeat({"median_step_s": 30.0, "save_s": 20.0})  # its pace in an earlier attempt
    res = {"time_min": 720}
    assert warning_s([(fast, res)], 300) == 300 and warning_s([(fast, res)], None) == 90
    assert warning_s([(fast, res), (slow, res)], 300) == 374
