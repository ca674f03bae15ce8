"""The one seam between sweeps and the machines that run their jobs, in the spirit of submitit's
`Executor`: a `Backend` starts runs as jobs, says which jobs live, cancels them, stops a run at its
checkpoint (`stop`) and counts device-hours. The registry (abcx.launch.backend.BACKENDS) picks one by
`launcher.name`.

Job ids are the backend's own (a SLURM `<array>_<task>`, a local submitit controller's pid). The
run record (abcx.record.RunRecord) stays the only writer of `runs/<id>/`: backends never write it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Protocol

# job_alive(run_id, status.json) -> True/False, or None when the backend cannot tell (abcx.sweep.plan).
JobAlive = Callable[[str, dict], "bool | None"]


class Backend(Protocol):
    name: str
    # Whether `abcx sweep run` may hand a plain grid to the backend and return (a SLURM job array);
    # False: a supervisor process starts the jobs (and any strategy needs one anyway).
    submits_grid_itself: bool

    def check(self, planned: list) -> None:
        """Refuse, as one UserError line, what this backend cannot run (before anything is written)."""

    def submit(self, sweep_dir: Path, runs: list, *, sweep: str, results_dir: str) -> dict[str, str]:
        """Start planned runs (abcx.sweep.plan.PlannedRun) as jobs; returns run id -> job id."""

    def free_slots(self) -> int | None:
        """How many more jobs may start now (None: no limit of the backend's own)."""

    def ended(self, job_id: str) -> bool:
        """Whether a job this process submitted has ended (its slot is free again)."""

    def liveness(self, manifest: dict | None, *, strict: bool) -> JobAlive:
        """job_alive for the planner from one look at the backend (one squeue, one /proc scan)."""

    def cancel(self, job_ids: list[str]) -> None:
        """Stop these jobs now (the trainer records the run as cancelled where it can)."""

    def usage(self, job_ids: list[str]) -> dict[str, float] | None:
        """Device-hours per job from the backend's accounting (sacct), None where it keeps none:
        callers then count from the run records (status.json `device_hours`)."""

    def stop(self, runs: list[tuple[Any, str]], *, reason: str, grace_s: float) -> list[str]:
        """Stop running runs ((RunRecord, job id) pairs) at their next checkpoint; the job ids that
        had not ended after grace_s and were cancelled instead (stop_runs)."""

    def default_max_parallel(self, points: int) -> int:
        """How many of a sweep's `points` run at once when launcher.max_parallel is not set."""

    def describe_layouts(self, planned: list) -> list[str]:
        """How each planned job uses its nodes, for --dry-run (also the check of a layout: one UserError line)."""


STOP_POLL_S = 0.5


def stop_runs(backend: Backend, runs: list[tuple[Any, str]], *, reason: str, grace_s: float) -> list[str]:
    """Backend.stop, the same on every backend: the request goes through each run's record
    (control.json `stop`, read by its trainer at the next generation boundary, which then saves a
    checkpoint and records `stopped`); a job still alive after grace_s is cancelled (scancel on
    SLURM, SIGINT on local), which records the run `cancelled`, resumable from its newest checkpoint."""
    for record, _job_id in runs:
        record.request_stop(reason)
    waiting = [job_id for _record, job_id in runs if job_id]
    deadline = time.time() + grace_s
    while waiting:
        waiting = [job_id for job_id in waiting if not backend.ended(job_id)]
        if not waiting or time.time() >= deadline:
            break
        time.sleep(STOP_POLL_S)
    if waiting:
        backend.cancel(waiting)
    return waiting


def drop_literal_folder(path: Path) -> None:
    """submitit creates its folder pattern as given (a literal `%j/`, left empty: the job's files go to
    `<job id>/`); removed once it is no longer needed."""
    try:
        path.rmdir()
    except OSError:
        pass
