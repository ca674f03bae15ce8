"""SLURM backend through submitit: one job array per sweep (per distinct resource request, when a sweep
mixes model sizes), throttled by the array's `%N` limit (`slurm_array_parallelism`).

Resources come from a cluster profile `slurm/profiles/<launcher.profile>.yaml` (or a path):
partition, account, qos, time_min, gpus_per_node, cpus_per_task, mem_gb, constraint, nodes,
array_parallelism, additional_parameters (extra #SBATCH keys), setup (shell lines run before the
job, e.g. `module load cuda`), and resources_by_model: {<model.size>: {those keys}}. Precedence, low
to high: the profile, its resources_by_model entry, then explicit launcher settings
(launcher.gpus_per_job > 0, launcher.array_parallelism); launcher.timeout_min is used only when the
profile gives no time_min.

Jobs run `sys.executable` (the venv's python) with the submitter's environment (sbatch exports it),
so they import the same abcx. Each job is an `abcx.launch.job.TrainJob`; submitit asks SLURM to send
USR2 `signal_delay_s` before the time limit (a profile's, sized up from the runs' pace in an earlier
attempt: `warning_s`); the trainer then saves a checkpoint at the next rollout boundary and submitit
requeues the job (abcx.training.deadline). After a stall the job is requeued with `scontrol requeue`
(abcx.training.watchdog).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from abcx.errors import UserError
from abcx.launch.profiles import load_profile, resources  # noqa: F401 - part of this backend's API
from abcx.launch.protocol import drop_literal_folder
from abcx.training.deadline import SIGNAL_DELAY_S

# squeue states in which a job still holds (or waits for) its run.
ALIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING", "SUSPENDED",
         "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "STOPPED"}


def executor_parameters(res: dict, *, job_name: str, num_processes: int) -> dict:
    """SlurmExecutor.update_parameters(...) for a resource request."""
    params: dict[str, Any] = {"time": int(res["time_min"]), "job_name": job_name, "nodes": int(res.get("nodes") or 1),
                              "ntasks_per_node": 1, "stderr_to_stdout": False}
    for key in ("partition", "account", "qos", "constraint"):
        if res.get(key):
            params[key] = str(res[key])
    if res.get("gpus_per_node"):
        params["gpus_per_node"] = int(res["gpus_per_node"])
    if res.get("cpus_per_task"):
        params["cpus_per_task"] = int(res["cpus_per_task"])
    if res.get("mem_gb"):
        params["mem"] = f"{int(float(res['mem_gb']) * 1024)}MB"
    if res.get("array_parallelism"):
        params["array_parallelism"] = int(res["array_parallelism"])
    if res.get("setup"):
        params["setup"] = [str(line) for line in res["setup"]]
    if res.get("additional_parameters"):
        params["additional_parameters"] = dict(res["additional_parameters"])
    if num_processes > 1 and params["nodes"] > 1:
        params["ntasks_per_node"] = 1  # one `accelerate launch` per node (abcx.launch.job.accelerate_command)
    params["signal_delay_s"] = int(res.get("signal_delay_s") or SIGNAL_DELAY_S)
    return params


def warning_s(runs_and_res: list, least_s: float | None) -> int:
    """The time-limit warning of one job array (abcx.training.deadline.signal_delay_s): the largest its
    runs need, from each one's pace in an earlier attempt (its record's heartbeat)."""
    from abcx.config.rollout import generation_cycle
    from abcx.record import RunRecord
    from abcx.training.deadline import signal_delay_s

    return max(signal_delay_s(least_s, RunRecord(run.path).heartbeat(), generation_cycle(run.cfg.train),
                              float(res["time_min"]) * 60) for run, res in runs_and_res)


def submit(sweep_dir: Path, runs: list, *, sweep: str, results_dir: str) -> dict[str, str]:
    """Submit planned runs (abcx.sweep.plan.PlannedRun) as job arrays; returns run id -> job id."""
    import submitit

    from abcx.launch.job import TrainJob

    groups: dict[tuple, list] = {}
    profiles: dict[str, dict] = {}
    for run in runs:
        name = run.cfg.launcher.profile
        if name not in profiles:
            profiles[name] = load_profile(name)
        res = resources(profiles[name], run.cfg)
        key = (repr(sorted((k, repr(v)) for k, v in res.items())), run.cfg.launcher.num_processes,
               run.cfg.launcher.accelerate_config)
        groups.setdefault(key, []).append((run, res))
    out: dict[str, str] = {}
    for (_key, num_processes, accelerate_config), members in groups.items():
        res = members[0][1]
        executor = submitit.SlurmExecutor(folder=sweep_dir / "jobs" / "%j", max_num_timeout=10)
        params = executor_parameters(res, job_name=f"abcx-{sweep}", num_processes=num_processes)
        params["signal_delay_s"] = warning = warning_s(members, res.get("signal_delay_s"))
        executor.update_parameters(**params)
        if res.get("gpus_per_node"):
            os.environ["ABCX_GPUS_PER_JOB"] = str(int(res["gpus_per_node"]) * int(res.get("nodes") or 1))
        jobs = []
        try:
            with executor.batch():
                for run, _res in members:
                    jobs.append(executor.submit(TrainJob(
                        run.overrides, run_id=run.run_id, results_dir=results_dir, sweep=sweep,
                        num_processes=num_processes, accelerate_config=accelerate_config, warning_s=warning)))
        except Exception as err:  # noqa: BLE001 - sbatch refused: say why in one line
            raise UserError(f"sbatch refused the sweep's job array: {' '.join(str(err).split())[:400]}") from None
        drop_literal_folder(sweep_dir / "jobs" / "%j")
        for (run, _res), job in zip(members, jobs):
            out[run.run_id] = str(job.job_id)
    return out


def _run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def queue_states() -> dict[str, str]:
    """job id (`<array>_<task>` for array tasks) -> state, for every job squeue lists. Raises
    UserError when SLURM cannot be asked (no squeue, no SLURM_CONF, controller down)."""
    try:
        proc = _run(["squeue", "-h", "-r", "-o", "%i|%T"])
    except (OSError, subprocess.SubprocessError) as err:
        raise UserError(f"cannot ask SLURM which jobs live (squeue: {err}); is SLURM_CONF set?") from None
    if proc.returncode:
        raise UserError(f"cannot ask SLURM which jobs live: squeue: {proc.stderr.strip().splitlines()[-1:]}")
    states = {}
    for line in proc.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id:
            states[job_id] = state
    return states


def liveness(data: dict | None, strict: bool = True):
    """job_alive(run_id, status) for plan.classify from one squeue call."""
    try:
        states = queue_states()
    except UserError:
        if strict:
            raise
        states = None
    jobs = {r["run_id"]: r.get("job_id") for r in (data or {}).get("runs", [])}

    def alive(run_id: str, status: dict) -> bool | None:
        job_id = status.get("job_id") or jobs.get(run_id)
        if not job_id or states is None:
            return None
        return states.get(str(job_id)) in ALIVE

    return alive


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        proc = _run(["scancel", *job_ids])
        if proc.returncode and "Invalid job id" not in proc.stderr:
            raise UserError(f"scancel failed: {proc.stderr.strip()}")


def sacct_usage(job_ids: list[str]) -> dict[str, float] | None:
    """job id -> device-hours from SLURM accounting: elapsed x allocated GPUs (x allocated CPUs on a
    job without GPUs), summed over requeued attempts; None where sacct is unavailable."""
    if not job_ids:
        return {}
    try:
        proc = _run(["sacct", "-n", "-P", "-X", "-D", "-j", ",".join(job_ids), "-o", "JobID,ElapsedRaw,AllocTRES"])
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode or not proc.stdout.strip():
        return None
    usage: dict[str, float] = {}
    for line in proc.stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 3 or not parts[1].isdigit():
            continue
        tres = dict(item.partition("=")[::2] for item in parts[2].split(",") if "=" in item)
        gpus = next((int(tres[k]) for k in ("gres/gpu", "gpu") if tres.get(k, "").isdigit()), 0)
        cpus = int(tres["cpu"]) if tres.get("cpu", "").isdigit() else 1
        usage[parts[0]] = usage.get(parts[0], 0.0) + int(parts[1]) * (gpus or cpus) / 3600
    return usage


class SlurmBackend:
    """abcx.launch.backend.Backend on SLURM: job arrays through submitit, squeue, scancel, sacct."""

    name = "slurm"
    submits_grid_itself = True  # a plain grid goes in as job arrays; SLURM throttles and requeues

    def check(self, planned: list) -> None:
        for profile in sorted({str(r.cfg.launcher.profile) for r in planned}):
            load_profile(None if profile == "None" else profile)

    def default_max_parallel(self, points: int) -> int:
        return points  # SLURM queues what does not fit (array_parallelism throttles an array)

    def describe_layouts(self, planned: list) -> list[str]:
        from abcx.launch.layout import describe_points

        return describe_points(planned)

    def submit(self, sweep_dir: Path, runs: list, *, sweep: str, results_dir: str) -> dict[str, str]:
        return submit(sweep_dir, runs, sweep=sweep, results_dir=results_dir)

    def free_slots(self) -> int | None:
        return None

    def ended(self, job_id: str) -> bool:
        try:
            return queue_states().get(str(job_id)) not in ALIVE
        except UserError:
            return False  # cannot ask now: ask again at the next poll

    def liveness(self, manifest: dict | None, *, strict: bool = True):
        return liveness(manifest, strict=strict)

    def cancel(self, job_ids: list[str], wait_s: float = 60) -> None:
        """scancel, then wait until SLURM has killed them (after KillWait), so no trainer writes after us."""
        import time

        cancel(job_ids)
        deadline = time.time() + wait_s
        while job_ids and time.time() < deadline:
            if not any(queue_states().get(i) in ALIVE for i in job_ids):
                break
            time.sleep(0.5)

    def stop(self, runs: list[tuple[Any, str]], *, reason: str, grace_s: float) -> list[str]:
        from abcx.launch.protocol import stop_runs

        return stop_runs(self, runs, reason=reason, grace_s=grace_s)

    def usage(self, job_ids: list[str]) -> dict[str, float] | None:
        return sacct_usage(job_ids)
