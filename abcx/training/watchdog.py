"""The stall watcher: a run that stops making optimizer steps (a vLLM weight sync or an NCCL collective
that never returns, a frozen process) is killed, recorded `failed` and retried, instead of burning its
allocation until the time limit.

The watcher is a process of its own (`python -m abcx.training.watchdog`), started by the trainer when
training begins (abcx.training.heartbeat): a frozen trainer (SIGSTOP, a deadlock) freezes every thread
it has, so nothing inside it can notice. The trainer writes one line per sign of progress to the
watcher's stdin (`step N` at each optimizer step's end, `alive` after a step's callbacks and a saved
checkpoint, `end`); the watcher keeps the time of the last one. When none has come for the timeout it
1. records the run `failed` with "no progress for N s after step S" (RunRecord.record_stall, which
   counts the run's stalls),
2. runs the retry command it was given when the run has stalls left (`scontrol requeue <job>` in a
   SLURM job: SLURM restarts the job, which resumes from the newest checkpoint), and
3. SIGKILLs the trainer (which works on a stopped process too).
In that order: once the trainer has died, SLURM may end the job step, this process with it. On the
local backend the sweep supervisor resubmits a stalled run (`retry_after_stall`); `abcx train` run
directly is killed and recorded, and the same command resumes it.

The timeout is `launcher.stall_timeout_s` but at least FLOOR_STEPS of the run's median step time, so
a run whose steps are slower than its setting thought is not killed for being slow. A run is `late`
(shown by `abcx sweep status` before it is killed) after LATE_STEPS median steps, at least LATE_MIN_S,
at most half the timeout. The watcher writes its view to the record (heartbeat.json) at most once a
second; the trainer itself writes nothing for it, so a full disk or a slow file system cannot stall it.
"""
from __future__ import annotations

import os
import select
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

FLOOR_STEPS = 5
LATE_STEPS = 3
LATE_MIN_S = 10.0
POLL_S = 0.5
WRITE_EVERY_S = 1.0
KEEP_STEP_TIMES = 200  # the median of the newest step times: the run's own pace, now


@dataclass
class Clock:
    """When the trainer last showed progress, and what counts as too long without it (pure: no I/O)."""

    configured_s: float
    now: float = field(default_factory=time.time)
    step: int = 0
    last_beat: float = 0.0
    last_step_at: float | None = None
    step_times: list[float] = field(default_factory=list)
    save_s: float | None = None

    def __post_init__(self) -> None:
        self.last_beat = self.last_beat or self.now

    def beat(self, line: str, now: float) -> bool:
        """One line from the trainer; False for `end` (training is over: stop watching)."""
        word, _, value = line.strip().partition(" ")
        if word == "end":
            return False
        self.last_beat = now
        if word == "step" and value.isdigit():
            step = int(value)
            if self.last_step_at is not None and step == self.step + 1:
                self.step_times = [*self.step_times[-(KEEP_STEP_TIMES - 1):], now - self.last_step_at]
            self.step, self.last_step_at = step, now
        elif word == "save":
            try:
                self.save_s = float(value)
            except ValueError:
                pass
        return True

    @property
    def median_step_s(self) -> float | None:
        return statistics.median(self.step_times) if self.step_times else None

    @property
    def timeout_s(self) -> float:
        return max(self.configured_s, FLOOR_STEPS * (self.median_step_s or 0.0))

    @property
    def late_after_s(self) -> float:
        return min(self.timeout_s / 2, max(LATE_STEPS * (self.median_step_s or 0.0), LATE_MIN_S))

    def silent_s(self, now: float) -> float:
        return now - self.last_beat

    def stalled(self, now: float) -> bool:
        return self.silent_s(now) >= self.timeout_s

    def view(self, *, ended: bool = False) -> dict:
        """What heartbeat.json holds (times as epoch seconds)."""
        median = self.median_step_s
        return {"step": self.step, "beat_at": round(self.last_beat, 3), "timeout_s": round(self.timeout_s, 3),
                "configured_s": self.configured_s, "late_after_s": round(self.late_after_s, 3),
                "median_step_s": None if median is None else round(median, 4),
                "save_s": None if self.save_s is None else round(self.save_s, 3), "ended": ended,
                "host": os.uname().nodename, "watcher_pid": os.getpid()}


def late_line(heartbeat: dict, now: float | None = None) -> str | None:
    """`late: no step for 0:00:12 after step 3 (killed at 0:00:20)` while a watched run is late; else None."""
    if not heartbeat or heartbeat.get("ended") or not isinstance(heartbeat.get("beat_at"), (int, float)):
        return None
    silent = (time.time() if now is None else now) - float(heartbeat["beat_at"])
    if silent < float(heartbeat.get("late_after_s") or LATE_MIN_S):
        return None
    median = heartbeat.get("median_step_s")
    pace = f"; its median step {median:.3g} s" if isinstance(median, (int, float)) else ""
    return (f"late: no progress for {_clock(silent)} after step {heartbeat.get('step', 0)}{pace}; "
            f"killed at {_clock(float(heartbeat.get('timeout_s') or 0))}")


def _clock(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def retry_after_stall(record, retries: int) -> dict | None:
    """The stall that ended a run's last attempt, if it is to be retried (it has stalls left); else None."""
    stall = record.stall()
    return stall if stall is not None and int(stall.get("count") or 1) <= int(retries) else None


def watch(record, clock: Clock, trainer_pid: int, *, retry: list[str] | None, retries: int, fd: int = 0) -> str:
    """Watch the trainer's lines on `fd` until `end`, the trainer's exit, or a stall (then act). Returns
    which of `end`, `gone`, `stalled` happened."""
    buffer, written = b"", 0.0
    while True:
        ready, _, _ = select.select([fd], [], [], POLL_S)
        now = time.time()
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                _write(record, clock, ended=True)
                return "gone"
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not clock.beat(line.decode(errors="replace"), now):
                    _write(record, clock, ended=True)
                    return "end"
        if os.getppid() != trainer_pid:  # the trainer died (a forked child of it may hold the pipe open)
            _write(record, clock, ended=True)
            return "gone"
        if clock.stalled(now):
            stalled(record, clock, trainer_pid, now, retry=retry, retries=retries)
            return "stalled"
        if now - written >= WRITE_EVERY_S:
            _write(record, clock)
            written = now


def _write(record, clock: Clock, ended: bool = False) -> None:
    try:
        record.write_heartbeat(clock.view(ended=ended))
    except OSError:  # a full disk: the watching goes on; the record of a stall frees its reserve first
        pass


def stalled(record, clock: Clock, trainer_pid: int, now: float, *, retry: list[str] | None, retries: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a requeue signals the whole job: finish the kill first
    silent = clock.silent_s(now)
    stall = record.record_stall(step=clock.step, silent_s=silent, timeout_s=clock.timeout_s)
    _write(record, clock, ended=True)
    again = stall["count"] <= retries
    what = ("requeued to resume from its newest checkpoint" if again and retry else
            "it resumes from its newest checkpoint when started again (a sweep's supervisor does so itself)"
            if again else f"not retried: {stall['count']} stalls, launcher.stall_retries={retries}")
    print(f"[{record.run_id}] no progress for {silent:.0f} s after step {clock.step}: killing the trainer "
          f"(pid {trainer_pid}); {what}", file=sys.stderr, flush=True)
    if again and retry:
        try:
            subprocess.run(retry, timeout=60, check=True, capture_output=True, text=True)
        except (OSError, subprocess.SubprocessError) as err:
            print(f"[{record.run_id}] {' '.join(retry)} failed ({err}); the run stays failed",
                  file=sys.stderr, flush=True)
    try:
        os.kill(trainer_pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    """`python -m abcx.training.watchdog RUN_DIR TIMEOUT_S RETRIES [RETRY_ARGV...]`, started by the
    trainer (abcx.training.heartbeat) with its lines on stdin."""
    from pathlib import Path

    from abcx.record import RunRecord

    argv = sys.argv[1:] if argv is None else argv
    # Ctrl-C is the trainer's to handle; USR1/USR2 are a job's warnings (SLURM signals every process of
    # the job step), whose default action would end the watcher while the trainer goes on.
    for sig in (signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    trainer_pid = os.getppid()
    record = RunRecord(Path(argv[0]))
    clock = Clock(float(argv[1]))
    previous = record.heartbeat()  # the run's pace in an earlier attempt, until this one has its own
    if isinstance(previous.get("median_step_s"), (int, float)):
        clock.step_times = [float(previous["median_step_s"])]
    watch(record, clock, trainer_pid, retry=argv[3:] or None, retries=int(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
