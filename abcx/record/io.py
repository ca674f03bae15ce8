"""Crash-safe file primitives of the record (and of the sweep's own files): single-value JSON files
replaced atomically (temporary file, fsync, rename), JSON-lines appended and flushed per row, and
tolerant readers that skip what they cannot parse with one warning per file, never an exception."""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def atomic_write_json(path: Path, data: Any, *, durable: bool = True) -> None:
    """Replace `path` atomically: readers see the old or the new file, never a part. `durable` adds an
    fsync (survives a machine crash, not just a killed process); per-step progress skips it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_finite(data), f, indent=1, sort_keys=True, default=str)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so every reader can parse every file."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


_warned: set[tuple[str, str]] = set()


def warn(path: str | Path, problem: str) -> None:
    """One line on stderr per file and problem per process: a reader goes on without the bad part."""
    key = (str(path), problem)
    if key not in _warned:
        _warned.add(key)
        print(f"warning: {path}: {problem}", file=sys.stderr, flush=True)


def read_json(path: Path, default: Any = None) -> Any:
    """A JSON object file (status, meta, summary, manifest); `default` where it is missing, and where
    it is not a JSON object (binary garbage, a list), with a warning: never an exception."""
    try:
        value = json.loads(Path(path).read_bytes())
    except FileNotFoundError:
        return default
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad UTF-8 or JSON; Recursion: too deep
        warn(path, f"not readable as JSON ({type(exc).__name__}); ignored")
        return default
    if not isinstance(value, dict):
        warn(path, f"holds a JSON {type(value).__name__}, not an object; ignored")
        return default
    return value


def parse_jsonl(data: bytes) -> tuple[list[dict], list[str]]:
    """The shared tolerant parser of JSON-lines records: (rows that are JSON objects, problems).

    A line that is not UTF-8, not JSON or not an object is skipped and named in the problems,
    wherever it is. An unterminated last line is the one a writer may be appending right now (or
    was killed appending): it is used if it parses and skipped silently if not."""
    rows, problems = [], []
    lines = data.split(b"\n")
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than json's decoder goes
            if i < len(lines):
                problems.append(f"line {i}: not valid JSON")
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            problems.append(f"line {i}: a JSON {type(row).__name__}, not an object")
    return rows, problems


def read_jsonl(path: Path) -> Iterator[dict]:
    """Rows of a JSON-lines file (parse_jsonl), warning once about the lines it skipped."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return iter(())
    rows, problems = parse_jsonl(data)
    warn_skipped(path, problems)
    return iter(rows)


def warn_skipped(path: str | Path, problems: list[str]) -> None:
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        warn(path, f"skipped {len(problems)} unreadable line(s) ({'; '.join(problems[:3])}{more})")


def rewrite_jsonl(path: Path, keep) -> int:
    """Atomically replace a JSON-lines file by its readable rows for which `keep(row)` holds (written
    to a new file, then renamed: a kill leaves the old file or the new one). Returns rows dropped."""
    if not path.exists():
        return 0
    rows = list(read_jsonl(path))
    kept = [r for r in rows if keep(r)]
    atomic_write_text(path, "".join(json.dumps(_finite(r), sort_keys=True, default=str) + "\n" for r in kept))
    return len(rows) - len(kept)


def step_of(row: dict) -> int | None:
    step = row.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None
