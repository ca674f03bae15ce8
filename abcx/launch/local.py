"""Local backend: jobs through submitit's LocalExecutor on this machine, each given its own GPUs
(CUDA_VISIBLE_DEVICES) when there are any. It does not throttle: the sweep supervisor
(abcx.sweep.supervisor) starts at most `launcher.max_parallel` at once and asks `free_slots` for GPUs.
A job's id is its submitit controller's pid; `cancel` sends it SIGINT (submitit interrupts the
trainer, which records the run as cancelled) and SIGKILL after a grace period.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from abcx.launch.protocol import drop_literal_folder

CANCEL_GRACE_S = 15.0


def gpu_count() -> int:
    """GPUs this machine offers jobs, without importing torch (CUDA_VISIBLE_DEVICES, else nvidia-smi)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
            return sum(1 for line in out.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            return 0
    return 0


def default_max_parallel() -> int:
    return gpu_count() or os.cpu_count() or 1


def pid_alive(pid: Any) -> bool:
    """Whether pid is a live process of ours (a submitit controller or an abcx supervisor), not a
    recycled pid of something else."""
    try:
        pid = int(pid)
        os.kill(pid, 0)
    except (TypeError, ValueError, ProcessLookupError, PermissionError, OverflowError):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # a zombie has finished
        return False
    return b"submitit" in cmdline or b"abcx" in cmdline or b"pytest" in cmdline


class LocalBackend:
    name = "local"
    submits_grid_itself = False

    def __init__(self) -> None:
        self.jobs: dict[str, tuple[Any, list[int]]] = {}  # job id -> (submitit job, its gpus)
        self.gpus_total = gpu_count()
        self.free_gpus = list(range(self.gpus_total))
        self._executors: dict[str, Any] = {}

    def check(self, planned: list) -> None:
        return None

    def default_max_parallel(self, points: int) -> int:
        return default_max_parallel()  # a GPU each, else a core each

    def describe_layouts(self, planned: list) -> list[str]:
        return []  # one process or one machine's accelerate launch: nothing to lay out

    def _gpus_per_job(self, cfg) -> int:
        return max(1, int(cfg.launcher.gpus_per_job or 1)) if self.gpus_total else 0

    def free_slots(self) -> int | None:
        return None  # bounded by GPUs in submit (a job waits for its GPUs) and by the supervisor's limit

    def has_gpus_for(self, cfg) -> bool:
        return not self.gpus_total or len(self.free_gpus) >= self._gpus_per_job(cfg)

    def _executor(self, sweep_dir: Path, timeout_min: int):
        import submitit

        key = f"{sweep_dir}:{timeout_min}"
        if key not in self._executors:
            executor = submitit.LocalExecutor(folder=sweep_dir / "jobs" / "%j")
            executor.update_parameters(timeout_min=int(timeout_min))
            self._executors[key] = executor
        return self._executors[key]

    def submit(self, sweep_dir: Path, runs: list, *, sweep: str, results_dir: str) -> dict[str, str]:
        from abcx.launch.job import TrainJob

        out = {}
        for run in runs:
            executor = self._executor(sweep_dir, run.cfg.launcher.timeout_min)
            gpus = [self.free_gpus.pop(0) for _ in range(self._gpus_per_job(run.cfg))]
            warning = warning_s(run)
            executor.update_parameters(gpus_per_node=len(gpus), visible_gpus=tuple(gpus), signal_delay_s=warning)
            os.environ["ABCX_GPUS_PER_JOB"] = str(len(gpus))
            job = executor.submit(TrainJob(
                list(run.overrides), run_id=run.run_id, results_dir=results_dir, sweep=sweep,
                num_processes=run.cfg.launcher.num_processes, accelerate_config=run.cfg.launcher.accelerate_config,
                warning_s=warning))
            self.jobs[str(job.job_id)] = (job, gpus)
            out[run.run_id] = str(job.job_id)
        return out

    def ended(self, job_id: str) -> bool:
        held = self.jobs.get(str(job_id))
        if held is None:
            return not pid_alive(job_id)
        if not held[0].done():
            return False
        drop_literal_folder(Path(held[0].paths.folder).parent / "%j")
        self.free_gpus.extend(held[1])
        del self.jobs[str(job_id)]
        return True

    def job_error(self, job_id: str) -> BaseException | None:
        """The exception a finished job of this process ended with (None: it returned)."""
        held = self.jobs.get(str(job_id))
        return None if held is None else _exception(held[0])

    def liveness(self, manifest: dict | None, *, strict: bool = False):
        return liveness(manifest)

    def cancel(self, job_ids: list[str]) -> None:
        """SIGINT (submitit interrupts the task, train() records `cancelled`), SIGKILL after a grace."""
        live = [str(j) for j in job_ids if pid_alive(j)]
        for job_id in live:
            _signal(job_id, signal.SIGINT)
        deadline = time.time() + CANCEL_GRACE_S
        while time.time() < deadline and any(pid_alive(j) for j in live):
            time.sleep(0.2)
        for job_id in live:
            if pid_alive(job_id):
                _signal(job_id, signal.SIGKILL)

    def stop(self, runs: list[tuple[Any, str]], *, reason: str, grace_s: float) -> list[str]:
        from abcx.launch.protocol import stop_runs

        return stop_runs(self, runs, reason=reason, grace_s=grace_s)

    def usage(self, job_ids: list[str]) -> dict[str, float] | None:
        return None  # no accounting of its own: the run records count


def warning_s(run) -> int:
    """How long before launcher.timeout_min submitit's local controller warns the job (its USR2), sized
    like a SLURM job's from the run's pace in an earlier attempt (abcx.training.deadline)."""
    from abcx.config.rollout import generation_cycle
    from abcx.record import RunRecord
    from abcx.training.deadline import signal_delay_s

    return signal_delay_s(None, RunRecord(run.path).heartbeat(), generation_cycle(run.cfg.train),
                          float(run.cfg.launcher.timeout_min) * 60)


def _exception(job) -> BaseException | None:
    try:
        return job.exception()
    except Exception as err:  # noqa: BLE001 - no result pickle: the job died hard
        return err


def _signal(job_id: str, sig: int) -> None:
    try:
        os.kill(int(job_id), sig)
    except (ProcessLookupError, ValueError):
        pass


def liveness(data: dict | None):
    """job_alive(run_id, status) for plan.classify: a job lives if its controller does. (That a run
    waiting in a live supervisor's queue counts as queued is the sweep's business: abcx.sweep.supervisor.)"""
    jobs = {r["run_id"]: r.get("job_id") for r in (data or {}).get("runs", [])}

    def alive(run_id: str, status: dict) -> bool | None:
        job_id = status.get("job_id") or jobs.get(run_id)
        return bool(job_id) and status.get("backend", "local") == "local" and pid_alive(job_id)

    return alive
