"""Progress that never leaves the user looking at nothing (issue 29): what abcx is doing is said at
once, and then, while it works,
- on a terminal: one live rich display per process, a row per task (spinner, what, bar, done/total,
  rate, ETA, the task's own info), so a trained run's bar and its evaluation's bar share one screen
  (rich allows one live display at a time);
- in a pipe or a job log: a plain line per task at least every INTERVAL_S seconds, from a heartbeat
  thread, so a CI log shows progress even while one long call (a model build step, a generate batch,
  a library import) holds the main thread. Rich itself prints nothing until done there.

Rates and ETAs are computed here, from the last WINDOW_S seconds of updates, so the terminal and the
log show the same numbers. Nothing heavy is imported until a task starts on a terminal.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from typing import IO, Any

# At most about this long between plain lines while a task runs (issue 29 asks for ~5 s): the margin is
# for a C extension's import (torch's), which holds the interpreter lock for a second or two.
INTERVAL_S = 3.0
WINDOW_S = 30.0  # rates from the updates of the last half minute
PLAIN_ENV = "ABCX_PLAIN_PROGRESS"  # set to 1: plain lines even on a terminal


def on_terminal(stream: IO | None = None) -> bool:
    stream = stream or sys.stderr
    if os.environ.get(PLAIN_ENV, "") not in ("", "0"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def duration(seconds: float | None, compact: bool = False) -> str:
    """`42 s`, `3 min 05 s`, `1 h 02 min` (compact: `42s`, `3m05s`, `1h02m`): an ETA or an elapsed
    time a reader takes in at once."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s" if compact else f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if compact else f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if compact else f"{s // 3600} h {s % 3600 // 60:02d} min"


class Task:
    """One piece of work: a phase without a total (loading, importing) or a count (steps, samples).
    `name` is short (a run id, a benchmark): it names the terminal's row and prefixes plain lines;
    `description` is said once, when the task starts."""

    def __init__(self, display: "_Display", description: str, total: float | None, unit: str, info: str,
                 name: str | None, announce: bool = True) -> None:
        self.display, self.description, self.total, self.unit, self.info = display, description, total, unit, info
        self.name, self.announce = name or description, announce
        self.completed = 0.0
        self.started = self.last_line = time.monotonic()
        self.samples: deque[tuple[float, float]] = deque([(self.started, 0.0)])
        self.rich_id: Any = None
        self.ended = False

    # -- what it shows -------------------------------------------------------------------------
    def rate(self) -> float | None:
        """Units per second over the last WINDOW_S seconds of updates (None before the second one)."""
        if len(self.samples) < 2:
            return None
        (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
        if t1 <= t0 or c1 <= c0:
            return None
        return (c1 - c0) / (t1 - t0)

    def rate_text(self) -> str:
        """`0.41 s/step` below one per second, `52.3 samples/s` above."""
        rate = self.rate()
        if rate is None or not self.unit:
            return ""
        one = self.unit[:-1] if self.unit.endswith("s") else self.unit
        if rate < 1:
            return f"{1 / rate:.2f} s/{one}"
        return f"{rate:.1f} {self.unit}/s"

    def eta(self) -> float | None:
        """Seconds left at the recent rate, counting down between updates (a long step still ticks)."""
        rate = self.rate()
        if self.total is None or rate is None:
            return None
        since = time.monotonic() - self.samples[-1][0]
        return max(max(self.total - self.completed, 0) / rate - since, 0.0)

    def eta_text(self) -> str:
        """`ETA 37s` for a count, the time so far for a phase or a count that has not moved yet (the
        terminal's column: it ticks while the work holds the main thread)."""
        eta = self.eta()
        if eta is None or self.completed >= (self.total or 0):  # not moving yet, or at its end: elapsed
            return duration(time.monotonic() - self.started, compact=True)
        return f"ETA {duration(eta, compact=True)}"

    def count_text(self, compact: bool = False) -> str:
        """`120/380 steps` (compact: `120/380`, where the rate names the unit)."""
        if self.total is None:
            return ""
        return f"{int(self.completed)}/{int(self.total)}" + ("" if compact else f" {self.unit}").rstrip()

    def line(self) -> str:
        """The plain line: `[what] 120/380 steps, 3.2 steps/s, ETA 37 s, loss 0.41`."""
        elapsed = duration(time.monotonic() - self.started)
        if self.total is None:  # a phase: what it is doing, and for how long
            return f"[{self.name}] " + (f"{self.info} ({elapsed} so far)" if self.info else f"{elapsed} so far")
        parts = [self.count_text(), self.rate_text()]
        eta = self.eta()
        if eta is None:
            parts.append(f"{elapsed} so far")
        elif self.completed < self.total:
            parts.append(f"ETA {duration(eta)}")
        parts.append(self.info)
        return f"[{self.name}] " + ", ".join(p for p in parts if p)

    def first_line(self) -> str:
        return self.description if self.name == self.description else f"[{self.name}] {self.description}"

    # -- what the work says ----------------------------------------------------------------------
    def update(self, completed: float | None = None, *, advance: float | None = None, info: str | None = None,
               total: float | None = None, unit: str | None = None) -> None:
        now = time.monotonic()
        with self.display.lock:
            if unit is not None:
                self.unit = unit
            if total is not None and total != self.total:  # a new count: its rate starts now
                self.total = total
                self.samples.clear()
            if info is not None:
                self.info = info
            if advance is not None:
                completed = self.completed + advance
            if completed is not None:
                self._count(float(completed), now)
        self.display.changed(self)

    def _count(self, completed: float, now: float) -> None:
        """The rate is progress between updates that moved: one that did not adds no sample (the ETA
        counts down meanwhile), except before anything is done, where it restarts the clock."""
        if completed < self.completed:  # counted again from the start: a new rate
            self.samples.clear()
        if all(c == completed for _t, c in self.samples):  # nothing done yet: the rate starts now
            self.samples.clear()
        elif self.samples and self.samples[-1][1] == completed:
            return
        self.completed = completed
        self.samples.append((now, completed))
        while len(self.samples) > 2 and self.samples[1][0] < now - WINDOW_S:
            self.samples.popleft()

    def note(self, text: str) -> None:
        """A plain line now, in place of the next heartbeat (a log's own per-step line); nothing on a
        terminal, where the row shows it."""
        if not self.display.rich:
            with self.display.lock:
                self.display._print(text)
                self.last_line = time.monotonic()

    def done(self, text: str | None = None) -> None:
        """End the task; `text`, if given, is printed as a line that stays (on a terminal too)."""
        if self.ended:
            return
        self.ended = True
        self.display.remove(self, text)

    def __enter__(self) -> "Task":
        return self

    def __exit__(self, *exc) -> None:
        self.done()


class _Display:
    """The process's one progress display: rich on a terminal, plain lines with a heartbeat otherwise."""

    def __init__(self, stream: IO, plain: bool = False) -> None:
        self.stream = stream
        self.rich = on_terminal(stream) and not plain
        self.lock = threading.RLock()
        self.tasks: list[Task] = []
        self.progress: Any = None
        self.heart: threading.Thread | None = None

    # -- rich -----------------------------------------------------------------------------------
    def _start_rich(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn
        from rich.table import Column
        from rich.text import Text

        class Ours(ProgressColumn):
            """A column computed from abcx's Task as rich renders it (so the elapsed time ticks while
            the work holds the main thread). `squeeze`: this column gives up width first when the
            row is too wide (the name and the info; counts, rates and ETAs stay whole)."""

            def __init__(self, show, squeeze: bool = False) -> None:
                super().__init__(table_column=Column(no_wrap=not squeeze, overflow="ellipsis"))
                self.show = show

            def render(self, task) -> Text:
                ours = task.fields.get("task")
                return Text(self.show(ours) if ours is not None else "", no_wrap=True, overflow="ellipsis")

        console = Console(file=self.stream)
        narrow = console.width < 110  # at 80 columns: a short bar, counts without their unit
        self.progress = Progress(
            SpinnerColumn(), Ours(lambda t: t.name, squeeze=True), BarColumn(bar_width=8 if narrow else 20),
            Ours(lambda t: t.count_text(compact=narrow)), Ours(Task.rate_text), Ours(Task.eta_text),
            Ours(lambda t: t.info, squeeze=True),
            console=console, refresh_per_second=4, transient=True,
            # Other lines go above the live rows; stdout only when it is this terminal too (piped
            # stdout stays the pipe's).
            redirect_stdout=on_terminal(sys.stdout), redirect_stderr=True)
        self.progress.start()

    # -- tasks ----------------------------------------------------------------------------------
    def add(self, task: Task) -> None:
        with self.lock:
            self.tasks.append(task)
            if self.rich:
                if self.progress is None:
                    self._start_rich()
                if task.announce and task.description != task.name:
                    self.say(task.first_line())
                task.rich_id = self.progress.add_task(task.name, total=task.total, completed=task.completed,
                                                      task=task)
            else:
                if task.announce:
                    self._print(task.first_line())
                    task.last_line = time.monotonic()
                self._heartbeat()

    def changed(self, task: Task) -> None:
        with self.lock:
            if task.ended:
                return
            if self.progress is not None and task.rich_id is not None:
                self.progress.update(task.rich_id, total=task.total, completed=task.completed)
            elif time.monotonic() - task.last_line >= INTERVAL_S:
                self._print(task.line())
                task.last_line = time.monotonic()

    def remove(self, task: Task, text: str | None) -> None:
        with self.lock:
            if task in self.tasks:
                self.tasks.remove(task)
            if self.progress is not None and task.rich_id is not None:
                self.progress.refresh()  # its last state drawn once, however fast it went
                self.progress.remove_task(task.rich_id)
            if text:
                self.say(text)
            if self.progress is not None and not self.tasks:
                self.progress.stop()
                self.progress = None

    def say(self, text: str) -> None:
        """A line that stays: above the live rows on a terminal, as it is in a log."""
        with self.lock:
            if self.progress is not None:
                self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
            else:
                self._print(text)

    def _print(self, text: str) -> None:
        try:
            print(text, file=self.stream, flush=True)
        except (ValueError, OSError):  # a closed stream (the process is ending): nothing to tell
            pass

    # -- the heartbeat (plain mode) ----------------------------------------------------------------
    def _heartbeat(self) -> None:
        if self.heart is not None and self.heart.is_alive():
            return
        self.heart = threading.Thread(target=self._beat, name="abcx-progress", daemon=True)
        self.heart.start()

    def _beat(self) -> None:
        while True:
            time.sleep(min(0.5, INTERVAL_S / 3))
            with self.lock:
                if not self.tasks:
                    self.heart = None
                    return
                now = time.monotonic()
                for task in self.tasks:
                    if now - task.last_line >= INTERVAL_S:
                        self._print(task.line())
                        task.last_line = now


_DEFAULT: _Display | None = None
_OTHERS: dict[tuple[int, bool], _Display] = {}
_LOCK = threading.Lock()


def display(stream: IO | None = None, plain: bool = False) -> _Display:
    """The display of `stream`, or the process's default one (on sys.stderr: progress is not output,
    so `abcx eval ... > file` keeps it on the terminal). While a display shows tasks it stays (rich
    has replaced sys.stderr by its proxy then); once idle, a new one is made if the stream changed
    (a test's capture, a redirected stream)."""
    global _DEFAULT
    with _LOCK:
        if (stream is not None and stream is not sys.stderr) or (plain and on_terminal(stream)):
            stream = stream or sys.stderr
            key = (id(stream), plain)
            found = _OTHERS.get(key)
            if found is None or found.stream is not stream:
                found = _OTHERS[key] = _Display(stream, plain)
            return found
        if _DEFAULT is None or (not _DEFAULT.tasks and _DEFAULT.stream is not sys.stderr):
            _DEFAULT = _Display(sys.stderr)
        return _DEFAULT


def task(description: str, total: float | None = None, *, unit: str = "", info: str = "", done: float = 0,
         name: str | None = None, stream: IO | None = None, plain: bool = False, announce: bool = True) -> Task:
    """Start a task, said at once (`[name] description`, unless `announce` is False: its row or first
    heartbeat says it); use as a context manager or call `done()`. `done`: how much is done already
    (a run watched from its middle; the rate counts from there). `name`: the short name of its row
    and of its plain lines (default: the description). `plain`: plain lines even on a terminal."""
    d = display(stream, plain)
    t = Task(d, description, total, unit, info, name, announce)
    t.completed, t.samples = float(done), deque([(t.started, float(done))])
    d.add(t)
    return t


def say(text: str, stream: IO | None = None) -> None:
    """Print a line now (above any live progress on a terminal)."""
    display(stream).say(text)


__all__ = ["INTERVAL_S", "PLAIN_ENV", "Task", "duration", "on_terminal", "say", "task"]
