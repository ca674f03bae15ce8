"""The sweep lock, `<results_dir>/sweeps/<name>/run.lock`: one `abcx sweep run` of a sweep at a time.

Whoever holds it plans and submits the sweep's runs; with the local backend the supervisor inherits
the very lock (the open file, passed as a file descriptor), so a second `abcx sweep run` is refused
from the moment the first starts planning until its supervisor exits, with no gap between the two.
flock(2) locks die with their last holder, so a killed holder never leaves a stale lock.

The file also says who holds it (pid, host, role, since: one JSON object, rewritten in place; the
lock is on the file's inode, so it is never replaced by a rename).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

from abcx.errors import UserError
from abcx.record import now_iso

LOCK_FILE = "run.lock"


class SweepLock:
    def __init__(self, sweep_dir: Path, fd: int | None = None) -> None:
        self.path = Path(sweep_dir) / LOCK_FILE
        self.fd = fd  # set while this process holds the lock

    def acquire(self, *, blocking: bool = False) -> bool:
        """Take the lock; False when another process holds it (and blocking is off)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UserError(f"cannot open the sweep lock {self.path} ({err.strerror or err})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        self.describe("abcx sweep run")
        return True

    def describe(self, role: str, pid: int | None = None) -> None:
        """Record who holds the lock, for the message a refused second command prints."""
        text = json.dumps({"pid": pid or os.getpid(), "host": socket.gethostname(), "role": role, "since": now_iso()})
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, text.encode(), 0)

    def holder(self) -> str:
        """Who holds the lock, in words (the file may be mid-rewrite: then less is known)."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if not isinstance(info, dict) or not info.get("pid"):
            return "another process"
        return f"{info.get('role') or 'a process'} (pid {info['pid']} on {info.get('host', '?')}, since {info.get('since', '?')})"

    def release(self) -> None:
        """Close this process's handle. Never LOCK_UN: a supervisor that inherited the same open file
        keeps holding the lock until it exits."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
