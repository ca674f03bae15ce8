"""abcx.progress, the one progress display (issue 29, section 1): what runs is said at once; in a log a
plain line comes at least every INTERVAL_S seconds even while the work holds the main thread; on an
80-column terminal a row keeps its count, rate and ETA whole and its clock ticks between updates;
rates come from progress, and an ETA counts down between updates."""
from __future__ import annotations

import io
import re
import time

import pytest

from abcx import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def visible(text: str) -> list[str]:
    """The terminal's rows as a reader sees them: escape sequences out, one row per line or redraw."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # colours
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "\n", text)  # cursor moves and erases: a new row
    return [line.rstrip() for line in re.split(r"[\r\n]", text) if line.strip()]


def test_what_runs_is_said_at_once_then_a_line_every_interval_while_the_main_thread_is_busy(monkeypatch):
    monkeypatch.setattr(progress, "INTERVAL_S", 0.3)
    out = io.StringIO()
    with progress.task("building the testbed model (first use, about 2-3 min)", name="testbed model",
                       info="importing torch", stream=out):
        assert out.getvalue() == "[testbed model] building the testbed model (first use, about 2-3 min)\n"
        time.sleep(1.3)  # one long call, no update: the heartbeat speaks for it
    lines = out.getvalue().splitlines()
    assert len(lines) >= 4, lines
    assert all(line.startswith("[testbed model] importing torch (") and "so far)" in line for line in lines[1:])


def test_a_plain_count_line_has_done_total_rate_eta_and_the_tasks_own_info(monkeypatch):
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)  # a line at every update
    out = io.StringIO()
    task = progress.task("evaluating chain", total=400, unit="samples", name="eval chain", stream=out)
    task.update(0)
    time.sleep(0.2)
    task.update(100, info="batch 2")
    task.done()
    last = out.getvalue().splitlines()[-1]
    match = re.fullmatch(r"\[eval chain\] 100/400 samples, ([0-9.]+) samples/s, ETA (\d+) s, batch 2", last)
    assert match, last
    rate, eta = float(match[1]), int(match[2])
    assert 250 < rate < 600 and eta == pytest.approx(300 / rate, abs=1)  # 100 samples in ~0.2 s


def test_the_rate_comes_from_progress_and_the_eta_counts_down_between_updates():
    task = progress.task("x", total=10, unit="steps", stream=io.StringIO())
    task.update(0)
    time.sleep(0.3)  # nothing done yet: time before the first step is not part of the rate
    task.update(0)
    task.update(1)
    assert task.rate() is None or task.rate() > 20
    time.sleep(0.1)
    task.update(2)
    rate, first = task.rate(), task.eta()
    time.sleep(0.2)
    task.update(2)  # no progress: no new sample, the ETA only ticks down
    assert task.rate() == rate and task.eta() < first
    task.done()


def test_on_an_80_column_terminal_a_row_keeps_its_numbers_whole_and_its_clock_ticks(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    screen = Terminal()
    task = progress.task("training to step 100", total=100, unit="steps", name="abc_grpo-s0", stream=screen)
    task.update(0)
    time.sleep(0.6)
    task.update(2, info="r 0.512 H 0.048 clip 1.2% and a long tail that has to give way")  # 3.3 steps/s
    time.sleep(2.2)  # the ETA is drawn as rich repaints (4 times a second), counting down on its own
    task.done()
    rows = [line for line in visible(screen.getvalue()) if "2/100" in line]
    assert rows and all(len(row) <= 80 for row in rows), rows
    assert all(re.search(r"abc_grpo-s0 .* 2/100 [0-9.]+ steps/s ETA \d+s r 0\.512", row) for row in rows), rows
    assert len({re.search(r"ETA (\d+)s", row)[1] for row in rows}) >= 2, rows  # it ticked
    assert visible(screen.getvalue())[0] == "[abc_grpo-s0] training to step 100"  # said once, above the row


def test_a_terminal_phase_without_a_count_shows_its_elapsed_time_ticking(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    screen = Terminal()
    with progress.task("preparing the run", name="grpo-s0", info="importing torch", stream=screen):
        time.sleep(2.3)
    shown = {re.search(r"(\d+)s importing torch", row)[1] for row in visible(screen.getvalue())
             if "importing torch" in row}
    assert {"0", "1", "2"} <= shown, shown


def test_durations_read_at_a_glance():
    assert [progress.duration(s) for s in (4.2, 125, 3725)] == ["4 s", "2 min 05 s", "1 h 02 min"]
    assert [progress.duration(s, compact=True) for s in (4.2, 125, 3725)] == ["4s", "2m05s", "1h02m"]


def test_a_training_that_raises_ends_its_progress_row_before_the_error_is_said(monkeypatch):
    """HF's trainer calls no callback when train() raises, so the row of a crashed run would go on
    printing "running" every INTERVAL_S, beside (or after) the run's one error line."""
    import types

    from abcx.config.compose import compose
    from abcx.training.callbacks import ProgressCallback
    from abcx.training.train import _guarded

    monkeypatch.setattr(progress, "INTERVAL_S", 0.2)
    out = io.StringIO()
    row = ProgressCallback("grpo-s0-0123456789", stream=out, plain=True)
    state = types.SimpleNamespace(global_step=2, max_steps=4, is_world_process_zero=True)
    row.on_train_begin(None, state, None)
    task = row.task
    trainer = types.SimpleNamespace(callback_handler=types.SimpleNamespace(callbacks=[row]))
    cfg = compose(["launcher.stall_timeout_s=off"])
    with pytest.raises(RuntimeError, match="crash at step 2"):
        with _guarded(trainer, cfg, None, requeue=None, notice=None):
            raise RuntimeError("crash at step 2")
    assert task.ended and row.task is None
    said = out.getvalue()
    time.sleep(0.8)  # four heartbeats: a live row would print again
    assert out.getvalue() == said
