"""RunRecord: the one owner of a run folder `results/runs/<run_id>/` (layout in docs/architecture.md
and abcx.record.layout). Every file of the folder is read and written here.

Rules that make it safe under crashes, full disks and concurrent writers:
- single-value files (status, meta, summary) are replaced atomically (temporary file, fsync, rename);
- metric rows are appended as JSON lines and flushed per step, so a killed run loses at most the line
  being written; every reader skips what it cannot parse, with a warning;
- on every (re)start the record is reconciled with the state that will really be resumed
  (`RunRecord.reconcile`): rows after the resumed checkpoint are dropped, all of them without one;
- a checkpoint is used only if it is complete (`checkpoint_problem`); a torn or corrupt one is skipped;
- `.reserve` holds a little disk space from the start, released to record a failure on a full disk.
Each run owns its folder; nothing here is shared between runs.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import abcx.record.layout as F
from abcx.record.checkpoints import checkpoint_problem, checkpoint_progress, checkpoints_of
from abcx.record.faults import fault_point
from abcx.record.io import _finite, atomic_write_json, atomic_write_text, now_iso, read_json, read_jsonl, \
    rewrite_jsonl, step_of, warn
from abcx.record.states import ENDED, RECORDED, State, StopKind, stop_kind
from abcx.secrets import scrub


STATES = tuple(s.value for s in RECORDED)  # what status.json's `state` may hold (abcx.record.states)


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

    # --- where things are (paths handed to libraries that write there themselves) -------------
    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def checkpoints(self) -> Path:
        """The trainer's output_dir: it writes checkpoint-<step>/ there itself."""
        return self.path / F.CHECKPOINTS

    @property
    def metrics_path(self) -> Path:
        return self.path / F.METRICS

    @property
    def eval_path(self) -> Path:
        return self.path / F.EVAL

    @property
    def final_path(self) -> Path:
        """The trained model (whole or absent: save_final)."""
        return self.path / F.FINAL

    @property
    def error_path(self) -> Path:
        return self.path / F.ERROR

    @property
    def library_log(self) -> Path:
        return self.path / F.LIBRARY_LOG

    @staticmethod
    def is_record(path: str | Path) -> bool:
        """Whether a folder is a run record (it has meta.json or status.json)."""
        return (Path(path) / F.META).is_file() or (Path(path) / F.STATUS).is_file()

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunRecord | None:
        """The record a `<record>/checkpoints/checkpoint-<step>` folder belongs to, None for any other folder."""
        checkpoint = Path(checkpoint)
        if checkpoint.parent.name != F.CHECKPOINTS or not cls.is_record(checkpoint.parent.parent):
            return None
        return cls(checkpoint.parent.parent)

    # --- reading -----------------------------------------------------------------------------
    def status(self) -> dict:
        return read_json(self.path / F.STATUS, default={}) or {}

    def state(self) -> str:
        return self.status().get("state", State.PENDING.value)

    def meta(self) -> dict:
        return read_json(self.path / F.META, default={}) or {}

    def has_meta(self) -> bool:
        return (self.path / F.META).is_file()

    def has_config(self) -> bool:
        return (self.path / F.CONFIG).is_file()

    def summary(self) -> dict:
        return read_json(self.path / F.SUMMARY, default={}) or {}

    def config(self) -> dict:
        """The resolved config the run trained with ({} when it never started); a malformed file is a
        UserError naming it (abcx.yaml_io)."""
        from abcx.yaml_io import load_yaml

        if not self.has_config():
            return {}
        cfg = load_yaml(self.path / F.CONFIG)
        return cfg if isinstance(cfg, dict) else {}

    def metrics(self) -> list[dict]:
        return list(read_jsonl(self.metrics_path))

    def evals(self) -> list[dict]:
        return list(read_jsonl(self.eval_path))

    def has_final(self) -> bool:
        return self.final_path.is_dir()

    def check_model_build(self, build: str | None) -> None:
        """Refuse a run folder whose run was trained on another build of the embedded model (the
        warm-start recipe changed since): resuming it or counting it as finished would mix two
        models under one run id. Records from before builds were recorded are not checked."""
        if not build or not self.has_meta():  # no record (or no folder) here yet
            return
        recorded = self.meta().get("model_build")
        if recorded and recorded != build:
            from abcx.errors import UserError

            raise UserError(f"model=tiny: run {self.run_id} was trained on {recorded}, but the model is now "
                            f"{build} (its warm-start recipe changed); move {self.path} aside (`abcx train "
                            f"--rerun` does) or set another results_dir")

    def latest_checkpoint(self, *, quarantine: bool = False) -> Path | None:
        """The checkpoint a resume really uses: the newest complete one (checkpoint_problem). Newer
        broken ones are skipped; with `quarantine` (the process that owns the record) moved aside
        (`_quarantine`), out of the trainer's way (it would write the same step into that folder, and
        rotates `checkpoint-*`)."""
        for _step, path in reversed(checkpoints_of(self.checkpoints)):
            problem = checkpoint_problem(path)
            if problem is None:
                return path
            if quarantine:
                self._quarantine(path, problem)
        return None

    def _quarantine(self, path: Path, problem: str) -> None:
        """A broken checkpoint is kept once, as `corrupt-checkpoint-<step>` with a note saying why. A
        step torn again (a retry on a disk still full) is removed: the first copy shows what went wrong,
        and a second would only take the space the run needs."""
        target = path.with_name(f"{F.CORRUPT_PREFIX}{path.name}")
        if target.exists():
            shutil.rmtree(path, ignore_errors=True)
            warn(path, f"{problem}: skipped and removed (a broken copy of this step is already kept as "
                       f"{target.name}); resuming from an earlier checkpoint (or the start)")
            return
        path.rename(target)
        warn(path, f"{problem}: skipped, moved aside to {target.name} (its {F.CORRUPT_NOTE} says why); "
                   f"resuming from an earlier checkpoint (or the start)")
        try:
            (target / F.CORRUPT_NOTE).write_text(f"{now_iso()}: {path.name} could not be resumed: {problem}\n")
        except OSError:  # a full disk: the warning line is the note
            pass

    def checkpoint_list(self) -> list[tuple[int, Path]]:
        """(step, path) of every checkpoint folder, oldest first (complete or not: `latest_checkpoint` judges)."""
        return checkpoints_of(self.checkpoints)

    @staticmethod
    def checkpoint_progress(checkpoint: Path) -> tuple[int, int]:
        """(global_step, max_steps) of a complete checkpoint, from its trainer_state.json."""
        return checkpoint_progress(checkpoint)

    # --- the lock: one process trains a run at a time ------------------------------------------
    @contextmanager
    def exclusive(self):
        """Held while this process trains the run; a second trainer of the same run is refused."""
        from abcx.errors import UserError

        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / F.LOCK, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"run {self.run_id} is being trained by another process ({self.path})") from None
            yield

    def lock_held(self) -> bool:
        """Whether a trainer on this machine holds the run's lock (`exclusive`). Only asked for runs whose
        status says running: taking the lock for an instant could otherwise make a trainer that starts
        in that instant refuse to run."""
        lock = self.path / F.LOCK
        if not lock.exists():
            return False
        with open(lock, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False

    # --- writing -----------------------------------------------------------------------------
    def start(self, config: dict, *, config_hash: str, extra_meta: dict | None = None, max_steps: int | None = None,
              job_id: str | None = None, gpus: int = 0, cpus: int = 1) -> None:
        """Begin (or resume) the run: write config and meta once, mark it running."""
        import yaml

        self.path.mkdir(parents=True, exist_ok=True)
        self.remove_leftovers()
        self.reserve_space()
        if not self.has_config():
            atomic_write_text(self.path / F.CONFIG, yaml.safe_dump(scrub(config), sort_keys=False))
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
        atomic_write_json(self.path / F.META, meta)
        previous = self.status()
        self._t0, self._elapsed_before = time.time(), float(previous.get("elapsed_s", 0.0))
        self.set_status(
            State.RUNNING, step=previous.get("step", 0), max_steps=max_steps, error=None, job_id=job_id, gpus=gpus,
            cpus=cpus, started=previous.get("started", now_iso()), stop=None, stall=None,
        )

    def update_meta(self, **fields: Any) -> None:
        """Add what is known only once training is set up (TRL's resolved args, the log-prob path)."""
        meta = self.meta()
        meta.update(scrub(fields))
        atomic_write_json(self.path / F.META, meta)

    def set_status(self, state: str, *, durable: bool = True, **fields: Any) -> dict:
        state = str(state)
        assert state in STATES, state
        status = self.status()
        status.update(fields)
        status["state"] = state
        status["updated"] = fields.get("updated") or now_iso()  # a replayed record (report.synth) gives its own
        if self._t0 is not None:
            status["elapsed_s"] = round(self._elapsed_before + time.time() - self._t0, 3)
            status["gpu_hours"] = round(status["elapsed_s"] * int(status.get("gpus") or 0) / 3600, 6)
            status["device_hours"] = device_hours(status)
        atomic_write_json(self.path / F.STATUS, status, durable=durable)
        return status

    def append_metrics(self, row: dict) -> None:
        self.append_metrics_text(json.dumps(_finite(row), sort_keys=True, default=str) + "\n")

    def append_metrics_text(self, lines: str) -> None:
        """Metric rows already serialised as JSON lines (report.synth writes 10^6 of them at once)."""
        with open(self.metrics_path, "a") as f:
            f.write(lines)
            f.flush()

    def append_eval(self, row: dict) -> None:
        """One evaluation (eval.jsonl); `reconcile` drops rows after a resumed checkpoint, as for metrics."""
        with open(self.eval_path, "a") as f:
            f.write(json.dumps(_finite(row), sort_keys=True, default=str) + "\n")
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
        failure path frees it first, so status.json and error.txt can still say what happened. A disk
        without that much room fails the start (an OSError ENOSPC): the run could not save one checkpoint."""
        try:
            fd = os.open(self.path / F.RESERVE, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.posix_fallocate(fd, 0, self.RESERVE_BYTES)
            finally:
                os.close(fd)
        except OSError as exc:  # a filesystem without fallocate: train anyway
            (self.path / F.RESERVE).unlink(missing_ok=True)
            if exc.errno in NO_SPACE:
                raise
            warn(self.path, f"cannot reserve space to record a failure ({exc.strerror})")

    @property
    def results_dir(self) -> Path:
        """The results_dir this record lives in (`<results_dir>/runs/<run_id>`)."""
        return self.path.parent.parent

    def no_space(self, err: BaseException) -> str | None:
        """The failure line when `err` came from a full disk under the record's results_dir, else None.
        ENOSPC (or a quota's EDQUOT) anywhere in its chain says so; torch's zip writer ("unexpected pos")
        and safetensors drop the errno, so a failure while less than RESERVE_BYTES are free (the reserve
        itself still held) counts too."""
        if not (_no_space_error(err) or _free_bytes(self.path) < self.RESERVE_BYTES):
            return None
        return f"no space left on device under {self.results_dir}"

    def release_space(self) -> None:
        (self.path / F.RESERVE).unlink(missing_ok=True)

    def save_final(self, write) -> None:
        """final/ appears whole or not at all: `write(folder)` fills a staging folder, which is then
        renamed into place. A final/ that exists is therefore complete (a kill after this leaves it
        for the next start to reuse)."""
        final, staging = self.final_path, self.path / F.FINAL_STAGING
        shutil.rmtree(staging, ignore_errors=True)
        write(str(staging))
        fault_point("final")
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.path / F.SUMMARY, summary)

    def finish(self, summary: dict | None, *, compact: bool = True) -> None:
        """Mark the run finished: summary.json (None: already written), the columnar metrics copy."""
        if summary is not None:
            self.write_summary(summary)
        fault_point("summary")
        if compact:
            compact_metrics(self.path)
        self.set_status(State.FINISHED)
        self.release_space()

    def fail(self, error: str, state: str = State.FAILED.value, *, details: str | None = None) -> bool:
        """Record why the run stopped, even on a full disk (the reserve is freed first). `details`
        (a traceback) goes to error.txt; status.json's `error` is one line. Returns whether the status
        was written (the caller says so in its own line when not: a disk with not one page free)."""
        self.release_space()
        try:
            self.set_status(state, error=error)
        except OSError:
            return False
        if details is not None:
            try:
                atomic_write_text(self.error_path, details)
            except OSError:  # the status says why; the traceback is the part a full disk may cost
                pass
        return True

    def move_aside(self) -> Path | None:
        """`abcx train --rerun`: move an ended record to runs/.superseded/<run id>-<UTC time>/ (never
        deleting it) so the same config trains afresh under the same run id. A live run is never moved."""
        import datetime as dt

        from abcx.errors import UserError

        if not self.path.exists():
            return None
        state = self.state()
        if state in (State.RUNNING, State.PENDING):
            raise UserError(f"run {self.run_id} is {state}; --rerun moves only ended runs ({self.path})")
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = self.superseded_dir(self.path.parent) / f"{self.run_id}-{stamp}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self.path, target)
        return target

    @staticmethod
    def superseded_dir(runs: Path) -> Path:
        return Path(runs) / F.SUPERSEDED

    # --- what sweeps write (the record stays the only writer of the folder) --------------------
    def join_sweep(self, sweep: str) -> None:
        """List the run in `sweep` too (one config is one run, whichever sweeps contain it)."""
        meta = self.meta()
        if sweep not in meta.get("sweeps", []):
            meta["sweeps"] = sorted(set(meta.get("sweeps", [])) | {sweep})
            atomic_write_json(self.path / F.META, meta)

    def mark_submitted(self, *, sweep: str, point: list[str], index: int, backend: str, submitted: str) -> None:
        """The sweep in the run's own record (so a lost manifest is rebuilt from run folders), then pending."""
        meta = self.meta()
        meta.update(sweep=sweep, sweep_point=list(point), sweep_index=index)
        meta["sweeps"] = sorted(set(meta.get("sweeps", [])) | {sweep})
        meta.setdefault("run_id", self.run_id)
        atomic_write_json(self.path / F.META, meta)
        self.set_status(State.PENDING, job_id=None, backend=backend, submitted=submitted, sweep=sweep, error=None)

    def end_if_live(self, state: str, why: str) -> bool:
        """Mark a run that no job will finish (a cancel, a job that died): `state` with `why`, unless
        it has ended already. Returns whether it changed."""
        if self.state() in (s.value for s in ENDED):
            return False
        self.set_status(state, error=why)
        return True

    def control(self) -> dict:
        """What the sweep asks of the run's training (control.json): `stop_at` (a step: pause there at
        a checkpoint, state `stopped`), `health` (abcx.training.callbacks.SweepControl's limits) and
        `stop` (a request to stop now, read while it trains)."""
        return read_json(self.path / F.CONTROL, default={}) or {}

    def set_control(self, **fields: Any) -> None:
        control = self.control()
        control.update(fields, updated=now_iso())
        atomic_write_json(self.path / F.CONTROL, control)

    def request_stop(self, reason: str = "") -> None:
        """Ask the run's trainer to stop at its next generation boundary with a checkpoint
        (abcx.training.callbacks.SweepControl reads control.json there): `abcx sweep stop`, Backend.stop."""
        self.set_control(stop={"reason": reason, "at": now_iso()})

    def stop(self, reason: str, **detail: Any) -> None:
        """A sweep strategy stopped the run at its newest checkpoint: state `stopped`, and why
        (`status.json` `stop`: {reason, kind (abcx.record.states.StopKind), step, ...}). It resumes
        from there if promoted."""
        if "kind" in detail:
            detail["kind"] = StopKind(detail["kind"]).value
        self.release_space()
        self.set_status(State.STOPPED, error=None, stop={"reason": reason, "at": now_iso(), **detail})

    def stop_kind(self) -> StopKind | None:
        return stop_kind(self.status())

    # --- the stall watcher (abcx.training.watchdog), another process than the trainer ---------
    def heartbeat(self) -> dict:
        """The watcher's last view of the training (heartbeat.json): `step`, `beat_at` (epoch s of the
        last sign of progress), `median_step_s`, `save_s`, `timeout_s` (in force), `late_after_s`,
        `ended`; {} when no watcher ran (or `launcher.stall_timeout_s=off`)."""
        return read_json(self.path / F.HEARTBEAT, default={}) or {}

    def write_heartbeat(self, data: dict) -> None:
        atomic_write_json(self.path / F.HEARTBEAT, data, durable=False)

    def record_stall(self, *, step: int, silent_s: float, timeout_s: float) -> dict:
        """The training stopped moving and is about to be killed: `failed` with "no progress for N s
        after step S"; `stall` (this attempt's, cleared by the next `start`) and the run's list of
        stalls (`stalls`, which bounds its retries) in status.json. Returns the stall."""
        status = self.status()
        stall = {"step": int(step), "silent_s": round(float(silent_s), 1), "timeout_s": round(float(timeout_s), 1),
                 "at": now_iso(), "attempt": self.meta().get("attempts"), "job_id": status.get("job_id")}
        stall["count"] = len(status.get("stalls") or []) + 1
        error = f"no progress for {silent_s:.0f} s after step {step} (stall timeout {timeout_s:.0f} s)"
        self.release_space()
        self.set_status(State.FAILED, error=error, stall=stall, stalls=[*(status.get("stalls") or []), stall])
        return stall

    def stall(self) -> dict | None:
        """The stall that ended the last attempt (record_stall), None if it ended otherwise or runs."""
        status = self.status()
        return status.get("stall") if status.get("state") == State.FAILED and isinstance(status.get("stall"), dict) \
            else None


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _no_space_error(err: BaseException | None) -> bool:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in NO_SPACE:
            return True
        if "No space left on device" in str(err) or "os error 28" in str(err):  # safetensors' Rust errors
            return True
        err = err.__cause__ or err.__context__
    return False


def _free_bytes(path: Path) -> float:
    try:
        st = os.statvfs(path if path.exists() else path.parent)
    except OSError:
        return float("inf")
    return st.f_bavail * st.f_frsize


def device_hours(status: dict) -> float:
    """GPU-hours on a GPU job, core-hours on a CPU one: elapsed x devices held (status.json)."""
    devices = int(status.get("gpus") or 0) or int(status.get("cpus") or 1)
    return round(float(status.get("elapsed_s") or 0.0) * devices / 3600, 6)


def compact_metrics(run_dir: str | Path) -> bool:
    """A columnar copy of a finished run's metrics.jsonl (metrics.arrow, an Arrow IPC file read by
    memory map), so reports over thousands of runs skip parsing JSON (~20x faster to read). metrics.jsonl stays the source of truth: readers
    use the copy only while it is newer. Returns whether a copy was written."""
    src = Path(run_dir) / F.METRICS
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
        os.replace(tmp, src.parent / F.METRICS_ARROW)
        return True
    except Exception:  # noqa: BLE001 - e.g. a NaN written as a string: the JSON lines remain the record
        for leftover in src.parent.glob(".metrics.arrow.*.tmp"):
            leftover.unlink(missing_ok=True)
        return False


def runs_dir(results_dir: str | Path) -> Path:
    return Path(results_dir) / "runs"
