"""Local backend: a small supervisor process runs a sweep's jobs through submitit's LocalExecutor,
at most `launcher.max_parallel` at once (submitit itself does not throttle local jobs).

The submitter writes `<sweep dir>/local_queue.json` (the jobs, the limit) and starts
`python -m abcx.launch.local <sweep dir>` in a new session, so it outlives the terminal; with
`--wait` the supervisor runs in the submitter's process instead. The supervisor records its pid and
each job's id (the submitit controller's pid) in the manifest, and exits when every job has ended.
SIGTERM/SIGINT make it cancel its running jobs (submitit sends them SIGINT; train() records the run
as cancelled), mark the jobs it had not started as cancelled, and exit.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from abcx.record import RunRecord, now_iso, read_json
from abcx.sweep import manifest as M

QUEUE_FILE = "local_queue.json"
POLL_S = 0.5


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


def write_queue(sweep_dir: Path, jobs: list[dict], *, max_parallel: int, timeout_min: int, gpus_per_job: int,
                sweep: str, results_dir: str) -> None:
    from abcx.record import atomic_write_json

    atomic_write_json(sweep_dir / QUEUE_FILE, {
        "sweep": sweep, "results_dir": results_dir, "max_parallel": max_parallel, "timeout_min": timeout_min,
        "gpus_per_job": gpus_per_job, "jobs": jobs, "written": now_iso(),
    })


def start(sweep_dir: Path, *, wait: bool, lock_fd: int | None = None) -> int:
    """Run the supervisor: detached (returns its pid) or, with wait, here (returns 0 when all ended).

    `lock_fd` is the caller's hold on the sweep lock (abcx.sweep.lock); the detached supervisor
    inherits it, so the sweep stays locked from planning until the supervisor exits."""
    if wait:
        return supervise(sweep_dir)
    log = open(sweep_dir / "supervisor.log", "a")
    argv = [sys.executable, "-m", "abcx.launch.local", str(sweep_dir)]
    if lock_fd is not None:
        argv += ["--lock-fd", str(lock_fd)]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        cwd=os.getcwd(), pass_fds=() if lock_fd is None else (lock_fd,),
    )
    log.close()
    return proc.pid


class _Stop(Exception):
    pass


def supervise(sweep_dir: Path) -> int:
    import submitit

    queue = read_json(sweep_dir / QUEUE_FILE)
    sweep, results_dir = queue["sweep"], queue["results_dir"]
    todo: list[dict] = list(queue["jobs"])
    limit = max(1, int(queue["max_parallel"]))
    gpus_total = gpu_count()
    gpus_per_job = max(1, int(queue["gpus_per_job"] or 1)) if gpus_total else 0
    free_gpus = list(range(gpus_total))
    active: dict[str, tuple[Any, dict, list[int]]] = {}  # job id -> (job, entry, its gpus)
    executor = submitit.LocalExecutor(folder=sweep_dir / "jobs" / "%j")
    executor.update_parameters(timeout_min=int(queue["timeout_min"]))
    pid = os.getpid()

    def note(change):
        M.update(results_dir, sweep, change)

    note(lambda m: m.setdefault("local", {}).update(
        supervisor_pid=pid, queue=[j["run_id"] for j in todo], started=now_iso(), ended=None))
    stop = {"flag": False}

    def on_signal(signum, _frame):
        stop["flag"] = True
        raise _Stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    failures = 0
    try:
        while todo or active:
            while todo and len(active) < limit and (not gpus_total or len(free_gpus) >= gpus_per_job):
                entry = todo.pop(0)
                gpus = [free_gpus.pop(0) for _ in range(gpus_per_job)]
                executor.update_parameters(gpus_per_node=len(gpus), visible_gpus=tuple(gpus))
                os.environ["ABCX_GPUS_PER_JOB"] = str(len(gpus))
                job = executor.submit(_job_for(entry, sweep, results_dir))
                active[job.job_id] = (job, entry, gpus)
                note(lambda m, e=entry, j=job: (
                    M.upsert_run(m, e["run_id"], job_id=j.job_id, pid=int(j.job_id), started=now_iso(), backend="local"),
                    m["local"].update(queue=[t["run_id"] for t in todo])))
                print(f"[supervisor] started {entry['run_id']} as job {job.job_id}", flush=True)
            for job_id, (job, entry, gpus) in list(active.items()):
                if job.done():
                    del active[job_id]
                    free_gpus.extend(gpus)
                    failures += _finished(job, entry, results_dir, sweep)
            time.sleep(POLL_S)
    except _Stop:
        _cancel_all(active, todo, results_dir, sweep)
        return 130
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        note(lambda m: m.setdefault("local", {}).update(ended=now_iso(), queue=[]))
    return 1 if failures else 0


def _job_for(entry: dict, sweep: str, results_dir: str):
    from abcx.launch.job import TrainJob

    return TrainJob(entry["overrides"], run_id=entry["run_id"], results_dir=results_dir, sweep=sweep,
                    num_processes=entry.get("num_processes", 1), accelerate_config=entry.get("accelerate_config"))


def _finished(job, entry: dict, results_dir: str, sweep: str) -> int:
    """Record how a job ended; 1 if it did not finish its run."""
    record = RunRecord(Path(results_dir) / "runs" / entry["run_id"])
    error = None
    try:
        error = job.exception()
    except Exception as err:  # noqa: BLE001 - no result pickle: the job died hard
        error = err
    state = record.state()
    from abcx.sweep.plan import lock_held

    # The job died without its trainer recording why; unless another process trains the run right
    # now (its run lock is held), whose record this must not overwrite.
    if state in ("running", "pending") and not lock_held(record.path):
        record.set_status("failed", error=f"job {job.job_id} ended without a result: {error}".splitlines()[0])
        state = "failed"
    M.update(results_dir, sweep, lambda m: M.upsert_run(m, entry["run_id"], ended=now_iso(), job_state=state))
    print(f"[supervisor] {entry['run_id']} (job {job.job_id}) ended: {state}", flush=True)
    return 0 if state == "finished" else 1


def _cancel_all(active: dict, todo: list[dict], results_dir: str, sweep: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for job, _entry, _gpus in active.values():
        job.cancel()  # SIGINT to the controller, which interrupts the task and then kills it
    deadline = time.time() + 15
    while time.time() < deadline and any(not job.done() for job, _e, _g in active.values()):
        time.sleep(0.2)
    for job, _entry, _gpus in active.values():
        if not job.done():
            try:
                os.kill(int(job.job_id), signal.SIGKILL)
            except ProcessLookupError:
                pass
    for entry in [e for _j, e, _g in active.values()] + todo:
        mark_cancelled(Path(results_dir) / "runs" / entry["run_id"])
    print(f"[supervisor] cancelled {len(active)} running and {len(todo)} queued job(s)", flush=True)


def mark_cancelled(path: Path, why: str = "cancelled by `abcx sweep cancel`") -> bool:
    record = RunRecord(path)
    if record.state() in ("finished", "failed", "cancelled"):
        return False
    record.set_status("cancelled", error=why)
    return True


def cancel(data: dict, timeout_s: float = 30) -> list[str]:
    """Stop a sweep's supervisor and its jobs. Returns the job ids that were still alive."""
    local = data.get("local") or {}
    sup = local.get("supervisor_pid")
    alive_jobs = [str(r["job_id"]) for r in data.get("runs", []) if r.get("job_id") and pid_alive(r["job_id"])]
    if sup and pid_alive(sup) and int(sup) != os.getpid():
        os.kill(int(sup), signal.SIGTERM)
        deadline = time.time() + timeout_s
        while time.time() < deadline and pid_alive(sup):
            time.sleep(0.2)
        if pid_alive(sup):
            try:
                os.killpg(os.getpgid(int(sup)), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    for job_id in alive_jobs:  # controllers left behind by a supervisor that died
        if pid_alive(job_id):
            try:
                os.kill(int(job_id), signal.SIGINT)
                time.sleep(1.5)
                if pid_alive(job_id):
                    os.kill(int(job_id), signal.SIGKILL)
            except ProcessLookupError:
                pass
    return alive_jobs


def supervisor_alive(data: dict | None) -> bool:
    local = (data or {}).get("local") or {}
    return bool(local.get("supervisor_pid")) and not local.get("ended") and pid_alive(local["supervisor_pid"])


def liveness(data: dict | None):
    """job_alive(run_id, status) for plan.classify: a job lives if its controller does, and a run
    not yet started counts as queued while the supervisor that holds it lives."""
    queued = set(((data or {}).get("local") or {}).get("queue") or []) if supervisor_alive(data) else set()
    jobs = {r["run_id"]: r.get("job_id") for r in (data or {}).get("runs", [])}

    def alive(run_id: str, status: dict) -> bool | None:
        job_id = status.get("job_id") or jobs.get(run_id)
        if job_id and status.get("backend", "local") == "local" and pid_alive(job_id):
            return True
        return run_id in queued

    return alive


def main(argv: list[str]) -> int:
    """`python -m abcx.launch.local SWEEP_DIR [--lock-fd N]`: supervise while holding the sweep lock,
    inherited from `abcx sweep run` (--lock-fd) or taken here; a sweep already locked is left alone."""
    from abcx.sweep.lock import SweepLock

    sweep_dir = Path(argv[0])
    if "--lock-fd" in argv:
        lock = SweepLock(sweep_dir, fd=int(argv[argv.index("--lock-fd") + 1]))
        os.set_inheritable(lock.fd, False)  # the jobs must not hold the sweep lock after the supervisor
    else:
        lock = SweepLock(sweep_dir)
        if not lock.acquire():
            print(f"[supervisor] {sweep_dir.name} is already being run by {lock.holder()}; exiting", flush=True)
            return 0
    lock.describe("the sweep's supervisor")
    return supervise(sweep_dir)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
