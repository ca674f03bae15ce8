"""Fault injection for the recovery tests: stop a real process at a named point with a real signal.

Inert unless ABCX_FAULT is set. The points are named where they happen (the record's own writes, the
trainer's, the sweep supervisor's), so a test can kill a run or a sweep at exactly that moment."""
from __future__ import annotations

import os
import signal
import sys


FAULT_ENV = "ABCX_FAULT"
# A file: the fault fires only while it does not exist, and creates it (once across the attempts of a
# retried or requeued run, which inherit the environment).
FAULT_ONCE_ENV = "ABCX_FAULT_ONCE"


def fault_spec() -> tuple[str, int | None, int] | None:
    """ABCX_FAULT=<point>[@<step>][:<SIGNAL>] as (point, step, signal number), or None (the normal case).

    The recovery tests (tests/test_record_recovery.py) use it to stop a real run at a named point
    with a real signal; unset, nothing here does anything. Points: `row` (metrics row <step>
    appended), `checkpoint` (checkpoint-<step> written up to half its trainer_state.json),
    `final` (final model written, not yet in place), `summary` (summary.json written, run not yet
    marked finished). The sweep supervisor's points have no step: there `@N` is the N-th time this
    process reaches the point (fault_occurrence): `supervisor.ended` (a job's end seen, before the
    strategy hears of it), `supervisor.submitted` (a job submitted, before the supervisor notes it),
    `decision.<event>` (a decisions.jsonl row of that event written, before it is acted on)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    where, _, sig = spec.partition(":")
    point, _, step = where.partition("@")
    return point, int(step) if step else None, int(getattr(signal, f"SIG{sig or 'KILL'}"))


def fault_point(point: str, step: int | None = None) -> None:
    """Send this process the ABCX_FAULT signal if it names this point (and step)."""
    spec = fault_spec()
    if spec and spec[0] == point and spec[1] in (None, step):
        once = os.environ.get(FAULT_ONCE_ENV)
        if once:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), spec[2])


_REACHED: dict[str, int] = {}


def fault_occurrence(point: str) -> None:
    """fault_point for a point without a step (the supervisor's): `@N` is its N-th occurrence here."""
    if fault_spec() is None:
        return
    _REACHED[point] = _REACHED.get(point, 0) + 1
    fault_point(point, _REACHED[point])
