"""What many tests share: the CLI in a subprocess as a user runs it (or in this process, faster), one
refused command's error line, a snapshot of a folder (to show nothing was written), a CLI function's
exit code and printed lines, waiting for something that happens in another process, and a sweep
supervisor killed at a named point."""
from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def abcx(*args: str, cwd: Path, timeout: float = 300, limit_bytes: int | None = None,
         env: dict | None = None) -> subprocess.CompletedProcess:
    """`abcx ARGS` in a subprocess (`python -m abcx.cli`, this checkout's abcx); `limit_bytes` caps its
    address space (a YAML bomb must fail, not take the machine's memory)."""
    env = dict(env if env is not None else os.environ, PYTHONPATH=str(REPO))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "abcx.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit if limit_bytes else None)


def cli(*args: str) -> tuple[int, str, str]:
    """`abcx ARGS` in this process, through abcx.cli.main as the console script runs it: (exit code,
    stdout, stderr). 5 to 40 times faster than a subprocess, which starts an interpreter and imports the
    libraries each time (measured for #26 on this 2-core machine, same load: report 0.06 s against 0.97 s,
    sweep run --dry-run 0.12 s against 0.60 s, sweep status 0.006 s against 0.23 s); an exception main()
    lets through propagates, as the traceback a user would see."""
    import contextlib
    import io

    from abcx.cli import main

    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = ["abcx", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


PROGRESS = re.compile(r"\[[^\]\n]+\] ")  # `[config] importing TRL (3 s so far)`, `[grpo-s0-…] step 3/8 …`


def said(stderr: str) -> list[str]:
    """stderr's lines without progress lines: what a command says, not how far its work has got (a
    first use of some settings checks them with TRL, which says so while it imports)."""
    return [line for line in stderr.strip().splitlines() if not PROGRESS.match(line)]


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single stderr line of a refused command (exit 2, no traceback), progress lines aside."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = said(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    return lines[0]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for folders): a snapshot to compare."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def call(fn, *args, **kwargs) -> tuple[int, str]:
    """A CLI function (`sweep_run`, `sweep_status`, ... taking `out=`) called in-process: (exit code, output)."""
    out: list[str] = []
    code = fn(*args, out=out.append, **kwargs)
    return code, "\n".join(out)


def wait_until(predicate, timeout: float, what: str, poll_s: float = 0.2):
    """predicate()'s first truthy value, polled; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() >= deadline:
            raise TimeoutError(f"not within {timeout} s: {what}")
        time.sleep(poll_s)


def supervisor_killed_at(fault: str, sweep_file: str, results: Path, name: str) -> None:
    """`abcx sweep run SWEEP_FILE` with ABCX_FAULT=fault: its detached supervisor kills itself at that
    point (abcx.record.fault_occurrence); returns once it is dead. A supervisor that ended on its own
    (the point never reached) fails the test."""
    from abcx.launch.local import pid_alive
    from abcx.sweep import manifest

    proc = abcx("sweep", "run", sweep_file, cwd=results.parent, env={**os.environ, "ABCX_FAULT": fault})
    assert proc.returncode == 0 and "supervisor pid" in proc.stdout, proc.stdout + proc.stderr
    supervisor = manifest.load(results, name)["supervisor"]
    wait_until(lambda: not pid_alive(supervisor["pid"]), 600, f"the supervisor to reach {fault}")
    assert manifest.load(results, name)["supervisor"]["ended"] is None, f"the supervisor never reached {fault}"
