"""The run record on disk: `results/runs/<run_id>/` (layout in docs/architecture.md).

Two rules make it safe under crashes and concurrent writers: single-value files (status, meta,
summary) are replaced atomically (write a temporary file, fsync, rename), and metric rows are
appended as JSON lines and flushed per step, so a killed run loses at most the line being written
and readers skip a torn last line. Each run owns its folder; nothing here is shared between runs.
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from abcx.secrets import scrub  # noqa: F401 - re-exported: credentials are refused in abcx.secrets

STATES = ("pending", "running", "finished", "failed", "cancelled")


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
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so every reader can parse every file."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def read_jsonl(path: Path) -> Iterator[dict]:
    """Rows of a JSON-lines file; a torn (unterminated or unparsable) last line is skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if i >= len(lines) - 2:  # the line a kill interrupted
                return
            raise


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("abcx", "torch", "trl", "transformers", "accelerate", "datasets", "wandb", "hydra-core", "submitit",
                 "math-verify", "vllm", "deepspeed"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


@dataclass
class RunRecord:
    path: Path
    # Wall-clock accounting of this process's attempt; earlier attempts' time is kept in status.json.
    _t0: float | None = None
    _elapsed_before: float = 0.0

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    # --- reading -----------------------------------------------------------------------------
    def status(self) -> dict:
        return read_json(self.path / "status.json", default={}) or {}

    def state(self) -> str:
        return self.status().get("state", "pending")

    def meta(self) -> dict:
        return read_json(self.path / "meta.json", default={}) or {}

    def metrics(self) -> list[dict]:
        return list(read_jsonl(self.metrics_path))

    def latest_checkpoint(self) -> Path | None:
        found = []
        for p in self.checkpoints.glob("checkpoint-*"):
            if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").exists():
                found.append((int(p.name.split("-")[-1]), p))
        return max(found)[1] if found else None

    # --- writing -----------------------------------------------------------------------------
    def start(self, config: dict, *, config_hash: str, extra_meta: dict | None = None, max_steps: int | None = None,
              job_id: str | None = None, gpus: int = 0) -> None:
        """Begin (or resume) the run: write config and meta once, mark it running."""
        import yaml

        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / "config.yaml").exists():
            atomic_write_text(self.path / "config.yaml", yaml.safe_dump(scrub(config), sort_keys=False))
        meta = self.meta()
        attempts = meta.get("attempts", 0) + 1
        meta.update({
            "run_id": self.run_id, "config_hash": config_hash, "method": config["method"]["name"],
            "seed": config["seed"], "group": config.get("group"), "tags": config.get("tags", []),
            "git_commit": git_commit(), "versions": package_versions(), "host": socket.gethostname(),
            "attempts": attempts,
        })
        meta.setdefault("created", now_iso())
        meta.update(scrub(extra_meta or {}))
        atomic_write_json(self.path / "meta.json", meta)
        previous = self.status()
        self._t0, self._elapsed_before = time.time(), float(previous.get("elapsed_s", 0.0))
        self.set_status(
            "running", step=previous.get("step", 0), max_steps=max_steps, error=None, job_id=job_id, gpus=gpus,
            started=previous.get("started", now_iso()),
        )

    def set_status(self, state: str, *, durable: bool = True, **fields: Any) -> dict:
        assert state in STATES, state
        status = self.status()
        status.update(fields)
        status["state"] = state
        status["updated"] = now_iso()
        if self._t0 is not None:
            status["elapsed_s"] = round(self._elapsed_before + time.time() - self._t0, 3)
            status["gpu_hours"] = round(status["elapsed_s"] * int(status.get("gpus") or 0) / 3600, 6)
        atomic_write_json(self.path / "status.json", status, durable=durable)
        return status

    def append_metrics(self, row: dict) -> None:
        line = json.dumps(_finite(row), sort_keys=True, default=str)
        with open(self.metrics_path, "a") as f:
            f.write(line + "\n")
            f.flush()

    def truncate_metrics_after(self, step: int) -> None:
        """On resume from a checkpoint at `step`, rows logged after it will be logged again: drop them
        so the history has neither gaps nor duplicated steps."""
        rows = [r for r in read_jsonl(self.metrics_path) if r.get("step", 0) <= step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))

    def finish(self, summary: dict) -> None:
        atomic_write_json(self.path / "summary.json", summary)
        compact_metrics(self.path)
        self.set_status("finished")

    def fail(self, error: str, state: str = "failed") -> None:
        self.set_status(state, error=error)


def compact_metrics(run_dir: str | Path) -> bool:
    """A columnar copy of a finished run's metrics.jsonl (metrics.arrow, an Arrow IPC file read by
    memory map), so reports over thousands of runs skip parsing JSON (~20x faster to read). metrics.jsonl stays the source of truth: readers
    use the copy only while it is newer. Returns whether a copy was written."""
    src = Path(run_dir) / "metrics.jsonl"
    if not src.exists() or src.stat().st_size == 0:
        return False
    try:
        import pyarrow.feather as pf
        import pyarrow.json as pj

        before = src.stat()
        table = pj.read_json(str(src))
        # The copy names the exact file it was made from; readers ignore it once the lines change.
        table = table.replace_schema_metadata({"abcx_source": f"{before.st_size}:{before.st_mtime_ns}"})
        fd, tmp = tempfile.mkstemp(dir=src.parent, prefix=".metrics.arrow.", suffix=".tmp")
        os.close(fd)
        pf.write_feather(table, tmp, compression="uncompressed")
        os.replace(tmp, src.parent / "metrics.arrow")
        return True
    except Exception:  # noqa: BLE001 - e.g. a NaN written as a string: the JSON lines remain the record
        for leftover in src.parent.glob(".metrics.arrow.*.tmp"):
            leftover.unlink(missing_ok=True)
        return False


def runs_dir(results_dir: str | Path) -> Path:
    return Path(results_dir) / "runs"
