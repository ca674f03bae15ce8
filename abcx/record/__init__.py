"""The run record on disk: `results/runs/<run_id>/` (layout in docs/architecture.md).

Rules that make it safe under crashes, full disks and concurrent writers:
- single-value files (status, meta, summary) are replaced atomically (temporary file, fsync, rename);
- metric rows are appended as JSON lines and flushed per step, so a killed run loses at most the line
  being written; every reader (`read_jsonl`, `read_json`) skips what it cannot parse, with a warning;
- on every (re)start the record is reconciled with the state that will really be resumed
  (`RunRecord.reconcile`): rows after the resumed checkpoint are dropped, all of them without one;
- a checkpoint is used only if it is complete (`checkpoint_problem`); a torn or corrupt one is skipped;
- `.reserve` holds a little disk space from the start, released to record a failure on a full disk.
Each run owns its folder; nothing here is shared between runs.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from abcx.secrets import scrub  # noqa: F401 - re-exported: credentials are refused in abcx.secrets

from abcx.record.states import RECORDED, State

STATES = tuple(s.value for s in RECORDED)  # what status.json's `state` may hold (abcx.record.states)


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
    except (OSError, ValueError) as exc:  # ValueError covers bad UTF-8 and bad JSON
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
        except ValueError:
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


# --- fault injection (tests only) ------------------------------------------------------------------
FAULT_ENV = "ABCX_FAULT"


def fault_spec() -> tuple[str, int | None, int] | None:
    """ABCX_FAULT=<point>[@<step>][:<SIGNAL>] as (point, step, signal number), or None (the normal case).

    The recovery tests (tests/test_record_recovery.py) use it to stop a real run at a named point
    with a real signal; unset, nothing here does anything. Points: `row` (metrics row <step>
    appended), `checkpoint` (checkpoint-<step> written up to half its trainer_state.json),
    `final` (final model written, not yet in place), `summary` (summary.json written, run not yet
    marked finished)."""
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
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), spec[2])


# --- checkpoints -----------------------------------------------------------------------------------
_CHECKPOINT_STATE = "trainer_state.json"
_WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "adapter_model.bin")
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_TORCH_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth")


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a trainer checkpoint folder `checkpoint-<step>` (None for any other name): the one
    place that parses the name."""
    prefix, _, step = Path(path).name.rpartition("-")
    return int(step) if prefix == "checkpoint" and step.isdigit() else None


def checkpoints_of(folder: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the `checkpoint-<step>` folders directly in `folder`, oldest first."""
    folder = Path(folder)
    found = [(checkpoint_step(p), p) for p in folder.glob("checkpoint-*")] if folder.is_dir() else []
    return sorted((s, p) for s, p in found if s is not None and p.is_dir())


def checkpoint_problem(path: Path) -> str | None:
    """Why a trainer checkpoint folder cannot be resumed (None: it can). Cheap checks that catch a
    write cut short and garbage files: trainer_state.json (written last by the trainer) parses and
    names this step; the weights' headers and sizes agree; torch files are whole zip archives."""
    step = str(checkpoint_step(path))
    try:
        state = json.loads((path / _CHECKPOINT_STATE).read_bytes())
    except FileNotFoundError:
        return f"{_CHECKPOINT_STATE} missing (the write was cut short)"
    except (OSError, ValueError):
        return f"{_CHECKPOINT_STATE} is not valid JSON"
    if not isinstance(state, dict) or str(state.get("global_step")) != step:
        return f"{_CHECKPOINT_STATE} does not hold global_step {step}"
    weights = [path / n for n in _WEIGHTS if (path / n).exists()]
    for index in (path / n for n in _INDEXES if (path / n).exists()):
        shards = (read_json(index, {}) or {}).get("weight_map")
        if not isinstance(shards, dict) or not shards:
            return f"{index.name} lists no weight files"
        weights += [path / str(s) for s in sorted(set(shards.values()))]
    try:
        if not weights and not any(p.is_dir() for p in path.iterdir()):  # FSDP/DeepSpeed ones are folders
            return "no model weights"
    except FileNotFoundError:  # renamed or rotated away meanwhile
        return "vanished"
    for file in weights + [path / n for n in _TORCH_FILES if (path / n).exists()]:
        problem = _weights_problem(file)
        if problem:
            return f"{file.name}: {problem}"
    return None


def _weights_problem(file: Path) -> str | None:
    import zipfile

    try:
        size = file.stat().st_size
        if file.suffix == ".safetensors":
            with open(file, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                if n > size - 8:
                    return "header larger than the file (garbage or cut short)"
                header = json.loads(f.read(n))
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
            return None if 8 + n + max(ends, default=0) == size else "size does not match its header (cut short?)"
        with zipfile.ZipFile(file) as z:  # torch.save's format; reads only the central directory
            z.infolist()
        return None
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error, zipfile.BadZipFile) as exc:
        return f"unreadable ({type(exc).__name__})"


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
    # The step this process reconciled the record with (reconcile), None before it has.
    reconciled_at: int | None = None

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

    def check_model_build(self, build: str | None) -> None:
        """Refuse a run folder whose run was trained on another build of the embedded model (the
        warm-start recipe changed since): resuming it or counting it as finished would mix two
        models under one run id. Records from before builds were recorded are not checked."""
        if not build or not (self.path / "meta.json").is_file():  # no record (or no folder) here yet
            return
        recorded = self.meta().get("model_build")
        if recorded and recorded != build:
            from abcx.errors import UserError

            raise UserError(f"model=tiny: run {self.run_id} was trained on {recorded}, but the model is now "
                            f"{build} (its warm-start recipe changed); move {self.path} aside (`abcx train "
                            f"--rerun` does) or set another results_dir")

    @property
    def eval_path(self) -> Path:
        return self.path / "eval.jsonl"

    def latest_checkpoint(self, *, quarantine: bool = False) -> Path | None:
        """The checkpoint a resume really uses: the newest complete one (checkpoint_problem). Newer
        broken ones are skipped; with `quarantine` (the process that owns the record) with a warning,
        and renamed `corrupt-checkpoint-<step>`, kept for inspection but out of the
        trainer's way (it would write the same step into that folder, and rotates `checkpoint-*`)."""
        for _step, path in reversed(checkpoints_of(self.checkpoints)):
            problem = checkpoint_problem(path)
            if problem is None:
                return path
            if quarantine:
                warn(path, f"{problem}: skipped, resuming from an earlier checkpoint (or the start)")
                target = path.with_name(f"corrupt-{path.name}")
                while target.exists():
                    target = target.with_name(target.name + "-")
                path.rename(target)
        return None

    @staticmethod
    def checkpoint_progress(checkpoint: Path) -> tuple[int, int]:
        """(global_step, max_steps) of a complete checkpoint, from its trainer_state.json."""
        state = json.loads((checkpoint / _CHECKPOINT_STATE).read_text())
        return int(state["global_step"]), int(state.get("max_steps") or 0)

    # --- writing -----------------------------------------------------------------------------
    def start(self, config: dict, *, config_hash: str, extra_meta: dict | None = None, max_steps: int | None = None,
              job_id: str | None = None, gpus: int = 0, cpus: int = 1) -> None:
        """Begin (or resume) the run: write config and meta once, mark it running."""
        import yaml

        self.path.mkdir(parents=True, exist_ok=True)
        self.remove_leftovers()
        self.reserve_space()
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
            cpus=cpus, started=previous.get("started", now_iso()), stop=None,
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
            status["device_hours"] = device_hours(status)
        atomic_write_json(self.path / "status.json", status, durable=durable)
        return status

    def append_metrics(self, row: dict) -> None:
        line = json.dumps(_finite(row), sort_keys=True, default=str)
        with open(self.metrics_path, "a") as f:
            f.write(line + "\n")
            f.flush()

    def reconcile(self, step: int) -> None:
        """The one rule on (re)start: the record holds what the resumed state holds. Called once the
        trainer has loaded the checkpoint at `step` (0: none), so a resume that fails before that
        loses no row. Rows after `step` (and torn or garbage lines) go, atomically; every later
        row is appended to a clean file. Eval rows without a step (scored after training) stay."""
        rewrite_jsonl(self.metrics_path, lambda r: step_of(r) is not None and step_of(r) <= step)
        rewrite_jsonl(self.eval_path, lambda r: r.get("step") is None or (step_of(r) is not None and step_of(r) <= step))
        self.set_status(self.state(), step=step)
        self.reconciled_at = step

    def remove_leftovers(self, min_age_s: float = 2.0) -> None:
        """Temporary files (`.<name>.<random>.tmp`) and a half-written final model (`.final.tmp/`)
        that a killed process left behind. Only older ones: a concurrent writer's (a `sweep cancel`
        marking the run) is seconds old at most and still in use."""
        cutoff = time.time() - min_age_s
        for leftover in self.path.glob(".*.tmp"):
            try:
                if leftover.lstat().st_mtime < cutoff:
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
            except FileNotFoundError:
                pass

    RESERVE_BYTES = 1 << 20

    def reserve_space(self) -> None:
        """Hold RESERVE_BYTES of disk in `.reserve` while the run trains: when the disk fills up, the
        failure path frees it first, so status.json and error.txt can still say what happened."""
        try:
            fd = os.open(self.path / ".reserve", os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.posix_fallocate(fd, 0, self.RESERVE_BYTES)
            finally:
                os.close(fd)
        except OSError as exc:  # already full, or a filesystem without fallocate: train anyway
            (self.path / ".reserve").unlink(missing_ok=True)
            warn(self.path, f"cannot reserve space to record a failure ({exc.strerror})")

    def release_space(self) -> None:
        (self.path / ".reserve").unlink(missing_ok=True)

    def finish(self, summary: dict) -> None:
        atomic_write_json(self.path / "summary.json", summary)
        fault_point("summary")
        compact_metrics(self.path)
        self.set_status("finished")
        self.release_space()

    def fail(self, error: str, state: str = "failed", *, details: str | None = None) -> None:
        """Record why the run stopped, even on a full disk (the reserve is freed first). `details`
        (a traceback) goes to error.txt; status.json's `error` is one line."""
        self.release_space()
        try:
            self.set_status(state, error=error)
            if details is not None:
                atomic_write_text(self.path / "error.txt", details)
        except OSError as exc:
            warn(self.path, f"could not record the failure ({exc})")

    # --- what sweeps write (the record stays the only writer of the folder) --------------------
    def join_sweep(self, sweep: str) -> None:
        """List the run in `sweep` too (one config is one run, whichever sweeps contain it)."""
        meta = self.meta()
        if sweep not in meta.get("sweeps", []):
            meta["sweeps"] = sorted(set(meta.get("sweeps", [])) | {sweep})
            atomic_write_json(self.path / "meta.json", meta)

    def mark_submitted(self, *, sweep: str, point: list[str], index: int, backend: str, submitted: str) -> None:
        """The sweep in the run's own record (so a lost manifest is rebuilt from run folders), then pending."""
        meta = self.meta()
        meta.update(sweep=sweep, sweep_point=list(point), sweep_index=index)
        meta["sweeps"] = sorted(set(meta.get("sweeps", [])) | {sweep})
        meta.setdefault("run_id", self.run_id)
        atomic_write_json(self.path / "meta.json", meta)
        self.set_status("pending", job_id=None, backend=backend, submitted=submitted, sweep=sweep, error=None)

    def end_if_live(self, state: str, why: str) -> bool:
        """Mark a run that no job will finish (a cancel, a job that died): `state` with `why`, unless
        it has ended already. Returns whether it changed."""
        if self.state() in (s.value for s in (State.FINISHED, State.FAILED, State.CANCELLED, State.STOPPED)):
            return False
        self.set_status(state, error=why)
        return True

    def control(self) -> dict:
        """What the sweep asks of the run's training (control.json): `stop_at` (a step: pause there at
        a checkpoint, state `stopped`), `health` (abcx.training.callbacks.SweepControl's limits) and `stop` (a
        request to stop now, read while it trains)."""
        return read_json(self.path / "control.json", default={}) or {}

    def set_control(self, **fields: Any) -> None:
        control = self.control()
        control.update(fields, updated=now_iso())
        atomic_write_json(self.path / "control.json", control)

    def request_stop(self, reason: str = "") -> None:
        """Ask the run's trainer to stop at its next generation boundary with a checkpoint
        (abcx.training.callbacks.SweepControl reads control.json there): `abcx sweep stop`, Backend.stop."""
        self.set_control(stop={"reason": reason, "at": now_iso()})

    def stop(self, reason: str, **detail: Any) -> None:
        """A sweep strategy stopped the run at its newest checkpoint: state `stopped`, and why
        (`status.json` `stop`: {reason, step, ...}). It resumes from there if promoted."""
        self.release_space()
        self.set_status("stopped", error=None, stop={"reason": reason, "at": now_iso(), **detail})


def device_hours(status: dict) -> float:
    """GPU-hours on a GPU job, core-hours on a CPU one: elapsed x devices held (status.json)."""
    devices = int(status.get("gpus") or 0) or int(status.get("cpus") or 1)
    return round(float(status.get("elapsed_s") or 0.0) * devices / 3600, 6)


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
