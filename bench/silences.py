"""How long a command leaves its user looking at nothing: every output line timestamped as it arrives,
through a pipe (a CI log) and on a pseudo-terminal (a user's terminal), and the longest silence
between the first line and the last.

On a terminal a progress bar redraws one line in place (carriage returns, cursor moves) rather than
writing new lines, so there a "line" is any redraw whose visible text differs from the previous one:
a bar repainted with the same text, or with only its spinner turned, says nothing new.

    python bench/silences.py [--out FILE]     the testbed's `abcx train`, `abcx eval`, `abcx sweep run --wait`

`tests/test_silences.py` asserts the same measurement (<= 5 s) on short settings.
"""
from __future__ import annotations

import argparse
import os
import pty
import re
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# CSI sequences (colours, cursor moves, erase), OSC sequences, other two-character escapes.
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[@-Z\\-_]")
BREAKS = re.compile(r"\r\n|\n|\r|\x1b\[[0-9]*[AFGK]")
SPINNER = re.compile("[\u2800-\u28ff]")  # a spinner's frames: motion, but no news


@dataclass
class Watched:
    mode: str  # "pipe" or "pty"
    argv: list[str]
    lines: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, visible text)
    exit_code: int | None = None
    wall_s: float = 0.0

    def gaps(self) -> list[tuple[float, float, str]]:
        """(gap, at, the line that ended it) between consecutive lines, from the first to the last."""
        return [(b[0] - a[0], a[0], b[1]) for a, b in zip(self.lines, self.lines[1:])]

    def longest(self) -> tuple[float, float, str]:
        return max(self.gaps(), default=(0.0, 0.0, ""))

    def first_line_s(self) -> float | None:
        return self.lines[0][0] if self.lines else None

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


class _Splitter:
    """Bytes as they arrive -> (time, visible line) for each line or in-place redraw with new text."""

    def __init__(self, out: Watched, t0: float) -> None:
        from collections import deque

        # A live display repaints all its rows each time: a row is news only if it differs from
        # every row of the last few repaints.
        self.out, self.t0, self.buf, self.recent = out, t0, "", deque(maxlen=32)

    def feed(self, data: str, now: float, final: bool = False) -> None:
        self.buf += data
        parts = BREAKS.split(self.buf)
        self.buf = "" if final else parts.pop()
        for part in parts:
            visible = SPINNER.sub("", ANSI.sub("", part)).strip()
            if visible and (self.out.mode == "pipe" or visible not in self.recent):
                self.out.lines.append((round(now - self.t0, 3), visible))
            if visible:
                self.recent.append(visible)


def _env(columns: int) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), COLUMNS=str(columns), LINES="40", PYTHONUNBUFFERED="1")


def watch_pipe(argv: list[str], cwd: Path, *, timeout: float = 900, columns: int = 80) -> Watched:
    out = Watched("pipe", list(argv))
    t0 = time.monotonic()
    split = _Splitter(out, t0)
    proc = subprocess.Popen(argv, cwd=cwd, env=_env(columns), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    fd = proc.stdout.fileno()
    _pump(fd, split, t0, timeout, proc.kill)
    out.exit_code = proc.wait()
    out.wall_s = round(time.monotonic() - t0, 3)
    return out


def watch_pty(argv: list[str], cwd: Path, *, timeout: float = 900, columns: int = 80) -> Watched:
    """The command on a pseudo-terminal: isatty() is true for its stdout and stderr, as in a user's shell."""
    out = Watched("pty", list(argv))
    env = _env(columns)
    t0 = time.monotonic()
    pid, fd = pty.fork()
    if pid == 0:  # the child becomes the command (and never returns into the caller)
        try:
            os.chdir(cwd)
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    split = _Splitter(out, t0)
    _pump(fd, split, t0, timeout, lambda: os.kill(pid, 9))
    _, status = os.waitpid(pid, 0)
    out.exit_code = os.waitstatus_to_exitcode(status)
    out.wall_s = round(time.monotonic() - t0, 3)
    return out


def _pump(fd: int, split: _Splitter, t0: float, timeout: float, kill) -> None:
    while True:
        if time.monotonic() - t0 > timeout:
            kill()
            break
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:  # a pty reads EIO once the child has closed it
            break
        if not data:
            break
        split.feed(data.decode("utf-8", "replace"), time.monotonic())
    split.feed("", time.monotonic(), final=True)


def abcx_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "abcx.cli", *args]


# The three commands of issue 29's done-when, on the testbed. `--full` runs them at the demo's size.
def commands(full: bool) -> list[tuple[str, list[str]]]:
    steps, problems = ("100", "200") if full else ("8", "16")
    small = [f"train.max_steps={steps}", "eval.benchmarks=[chain]", f"eval.max_problems={problems}", "logger=none"]
    return [
        ("train", abcx_argv("train", "method=grpo", *small)),
        ("eval", abcx_argv("eval", "tiny", "eval.benchmarks=[chain]", f"eval.max_problems={problems}")),
        ("sweep run --wait", abcx_argv("sweep", "run", "demo", *small, "--wait")),
    ]


def measure(workdir: Path, full: bool = False) -> list[Watched]:
    """Each command in a fresh results folder, through a pipe and on a pty."""
    shown = []
    for mode, watcher in (("pipe", watch_pipe), ("pty", watch_pty)):
        for i, (_, argv) in enumerate(commands(full)):
            cwd = workdir / f"{mode}-{i}"  # each its own results: the sweep trains both of its runs
            cwd.mkdir(parents=True, exist_ok=True)
            shown.append(watcher(argv, cwd))
    return shown


def table(watched: list[Watched]) -> str:
    rows = ["| command | output | exit | wall s | first line s | lines | longest silence s | (ended by) |",
            "|---|---|---|---|---|---|---|---|"]
    for w in watched:
        gap, at, line = w.longest()
        name = " ".join(a for a in w.argv[3:] if "=" not in a)
        rows.append(f"| {name} | {w.mode} | {w.exit_code} | {w.wall_s:.1f} | {w.first_line_s() or 0:.1f} | "
                    f"{len(w.lines)} | {gap:.1f} (at {at:.0f} s) | {line[:50]} |")
    return "\n".join(rows)


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the table (markdown) here")
    parser.add_argument("--full", action="store_true", help="the demo's sizes (100 steps, 200 problems)")
    parser.add_argument("--keep", action="store_true", help="print every timestamped line")
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="abcx-silences-") as tmp:
        watched = measure(Path(tmp), full=args.full)
    text = (f"{table(watched)}\n\nload average at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
            f"({os.cpu_count()} cores)\n")
    print(text)
    if args.keep:
        for w in watched:
            print(f"--- {w.mode} {' '.join(w.argv[3:])}")
            for t, line in w.lines:
                print(f"{t:8.2f}  {line[:120]}")
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
