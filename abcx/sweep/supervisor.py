"""The sweep supervisor: one process per sweep that runs its strategy (abcx.sweep.strategies) on its
backend (abcx.launch.backend), at most `launcher.max_parallel` jobs at once.

`abcx sweep run` writes `<sweep dir>/queue.json` (the points, the runs to start, the strategy, the
limit) and starts `python -m abcx.sweep.supervisor <sweep dir>` in a new session, so it outlives the
terminal; with `--wait` it runs in the submitter's process instead. The supervisor inherits the sweep
lock (abcx.sweep.lock), records its pid in the manifest (`supervisor`), and exits when the strategy
has nothing left to start and every job has ended. Before each start it writes the run's
control.json (where to pause, the health limits) through the run record and checks the budget.
SIGTERM/SIGINT make it cancel its running jobs, mark the runs it had not started as cancelled, and exit.
Killed anywhere (SIGKILL), the next one goes on where it was: it watches the jobs that outlived it
again, and its strategy rebuilds its state from decisions.jsonl and the run records, acting on a
decision already written instead of taking it again (abcx.sweep.strategies.base.Decisions). A
strategy metric the runs turn out not to log fails the sweep in one line (`failed` decision).
`abcx sweep stop NAME` sets the manifest's `stop`: it starts nothing more, lets its jobs stop at
their checkpoints, and exits without the strategy's final decisions (the next `sweep run` goes on).
A plain grid on SLURM needs no supervisor: it goes in as job arrays (abcx.sweep.command).
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from abcx.launch import backend as B
from abcx.record import RunRecord, fault_occurrence, now_iso, read_json
from abcx.record.states import State, StopKind
from abcx.sweep import manifest as M
from abcx.sweep import strategies as S

QUEUE_FILE = "queue.json"
POLL_S = 0.5


def write_queue(sweep_dir: Path, *, sweep: str, results_dir: str, backend: str, max_parallel: int,
                points: list, todo: list, strategy: S.StrategySpec) -> None:
    from abcx.record import atomic_write_json

    atomic_write_json(sweep_dir / QUEUE_FILE, {
        "sweep": sweep, "results_dir": results_dir, "backend": backend, "max_parallel": max_parallel,
        "points": [{"run_id": r.run_id, "overrides": list(r.overrides), "index": r.index} for r in points],
        "todo": [r.run_id for r in todo], "strategy": S.to_json(strategy), "written": now_iso(),
    })


def start(sweep_dir: Path, *, wait: bool, lock_fd: int | None = None) -> int:
    """Run the supervisor: detached (returns its pid) or, with wait, here (returns its exit code).

    `lock_fd` is the caller's hold on the sweep lock; the detached supervisor inherits it, so the
    sweep stays locked from planning until the supervisor exits."""
    import subprocess

    if wait:
        return supervise(sweep_dir)
    log = open(sweep_dir / "supervisor.log", "a")
    argv = [sys.executable, "-m", "abcx.sweep.supervisor", str(sweep_dir)]
    if lock_fd is not None:
        argv += ["--lock-fd", str(lock_fd)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=os.getcwd(), pass_fds=() if lock_fd is None else (lock_fd,))
    log.close()
    return proc.pid


def alive(data: dict | None) -> bool:
    """Whether the sweep's supervisor (named in its manifest) still runs."""
    from abcx.launch.local import pid_alive

    sup = (data or {}).get("supervisor") or {}
    return bool(sup.get("pid")) and not sup.get("ended") and pid_alive(sup["pid"])


def queued(data: dict | None) -> set[str]:
    """Runs a live supervisor will still start: they count as queued."""
    return set(((data or {}).get("supervisor") or {}).get("queue") or []) if alive(data) else set()


def stop(data: dict | None, timeout_s: float = 30) -> bool:
    """SIGTERM the sweep's supervisor (it cancels its jobs), SIGKILL its group after timeout_s."""
    from abcx.launch.local import pid_alive

    if not alive(data) or int(data["supervisor"]["pid"]) == os.getpid():
        return False
    pid = int(data["supervisor"]["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + timeout_s
    while time.time() < deadline and pid_alive(pid):
        time.sleep(0.2)
    if pid_alive(pid):
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return True


class _Stop(Exception):
    pass


class Supervisor:
    def __init__(self, sweep_dir: Path) -> None:
        from abcx.sweep import plan as P

        queue = read_json(sweep_dir / QUEUE_FILE)
        self.sweep_dir, self.sweep, self.results_dir = sweep_dir, queue["sweep"], queue["results_dir"]
        self.backend = B.get(queue["backend"])
        self.limit = max(1, int(queue["max_parallel"]))
        self.spec = S.parse(queue["strategy"])
        points = queue["points"]
        self.planned = P.build([tuple(p["overrides"]) for p in points], allow_many=True)
        for run, p in zip(self.planned, points):
            run.index = p["index"]
            if run.run_id != p["run_id"]:
                raise RuntimeError(f"point {p['overrides']} composes to {run.run_id}, not {p['run_id']}: "
                                   f"the config files changed since submission; resubmit the sweep")
        by_id = {r.run_id: r for r in self.planned}
        self.decisions = S.Decisions(sweep_dir)
        self.strategy = S.make(self.spec, self.planned, self.decisions, [by_id[i] for i in queue["todo"]], self.plan)
        self.active: dict[str, object] = {}  # job id -> planned run
        self.budget_said = False
        self.stopping = False  # `abcx sweep stop` of the whole sweep: start nothing, decide nothing more
        self.failures = 0

    def plan(self, points: list[tuple[str, ...]], start_index: int | None = None) -> list:
        """Plan runs a strategy adds (a seed, a trial), validated like the sweep's own; listed in the
        manifest. A point planned before is the same run (the same PlannedRun)."""
        from abcx.sweep import plan as P

        known = {r.run_id: r for r in self.planned}
        new = P.build(points, allow_many=True)
        start = len(self.planned) if start_index is None else start_index
        for i, run in enumerate(new):
            run.index = start + i
        new = [known.get(r.run_id, r) for r in new]
        self.planned += [r for r in new if r.run_id not in known]
        self.note(lambda m: [M.upsert_run(m, r.run_id, overrides=list(r.overrides), index=r.index) for r in new])
        return new

    def note(self, change) -> None:
        M.update(self.results_dir, self.sweep, change)

    def records(self) -> list[RunRecord]:
        return [RunRecord(r.path) for r in self.planned]

    def budget_spent(self) -> bool:
        if self.spec.device_hours is None:
            return False
        records = self.records()
        jobs = [str(r.status().get("job_id")) for r in records if r.status().get("job_id")]
        usage = self.backend.usage(jobs)
        spent = S.spent_device_hours(records, usage)
        if spent < self.spec.device_hours:
            return False
        if not self.budget_said:
            self.budget_said = True
            self.decisions.add("budget", device_hours=self.spec.device_hours, spent=round(spent, 6),
                               source="sacct" if usage else "run records",
                               active=[r.run_id for r in self.active.values()])
            print(f"[supervisor] budget reached: {S.budget_line(self.spec, spent)}; no new work", flush=True)
        return True

    def stop_requested(self) -> bool:
        """`abcx sweep stop NAME` (the whole sweep) asked for no new work: the manifest's `stop`."""
        if not self.stopping:
            request = (M.load(self.results_dir, self.sweep) or {}).get("stop")
            if request:
                self.stopping = True
                self.decisions.add("stop", requested=request.get("at"), reason=request.get("reason"),
                                   active=[r.run_id for r in self.active.values()], waiting=self.strategy.waiting())
                print("[supervisor] `abcx sweep stop`: no new work; waiting for the running jobs", flush=True)
        return self.stopping

    def start_one(self, go: S.Start) -> None:
        run = go.run
        record = RunRecord(run.path)
        if self.adopt(run, record):
            return
        record.set_control(sweep=self.sweep, stop_at=go.stop_at, health=self.spec.health, stop=None)
        submitted = now_iso()
        record.mark_submitted(sweep=self.sweep, point=list(run.overrides), index=run.index,
                              backend=self.backend.name, submitted=submitted)
        job_id = self.backend.submit(self.sweep_dir, [run], sweep=self.sweep, results_dir=self.results_dir)[run.run_id]
        record.set_status(State.PENDING, job_id=job_id)
        self.active[job_id] = run
        fault_occurrence("supervisor.submitted")  # tests kill the supervisor here (abcx.record.faults)
        self.note(lambda m: (M.upsert_run(m, run.run_id, job_id=job_id, started=now_iso(), ended=None,
                                          backend=self.backend.name, stop_at=go.stop_at,
                                          jobs=[*(M.run_entry(m, run.run_id) or {}).get("jobs", []), job_id]),
                             m["supervisor"].update(queue=self.strategy.waiting())))
        until = f" to step {go.stop_at}" if go.stop_at else ""
        print(f"[supervisor] started {run.run_id}{until} as job {job_id}", flush=True)

    def adopt(self, run, record: RunRecord, alive=None) -> bool:
        """A run whose job still lives (a restarted supervisor's, e.g. after a SIGKILL: a SLURM job
        outlives its supervisor) is watched again, not submitted twice: a second job would find the
        run locked by the first and end at once."""
        status = record.status()
        job_id = status.get("job_id")
        if job_id and str(job_id) in self.active:
            return True  # watched already (taken up when this supervisor started: resume)
        if not job_id or status.get("state") not in (State.RUNNING, State.PENDING):
            return False
        alive = alive or self.backend.liveness(M.load(self.results_dir, self.sweep), strict=False)
        if not alive(run.run_id, status):
            return False
        self.active[str(job_id)] = run
        self.note(lambda m: m["supervisor"].update(queue=self.strategy.waiting()))
        print(f"[supervisor] {run.run_id}: its job {job_id} still runs; watching it again", flush=True)
        return True

    def resume(self) -> None:
        """What a killed supervisor left: its jobs that still run are watched again (so their ends are
        seen and decided on, not run past), and health stops it saw happen but did not note are noted."""
        alive = self.backend.liveness(M.load(self.results_dir, self.sweep), strict=False)
        noted = {(d.get("run_id"), d.get("step")) for d in self.decisions.rows("health_stop")}
        self.note(self._list_jobs)
        for run in self.planned:
            record = RunRecord(run.path)
            self.adopt(run, record, alive)
            stop = record.status().get("stop") or {}
            if record.stop_kind() == StopKind.HEALTH and (run.run_id, stop.get("step")) not in noted:
                self.decisions.add("health_stop", run_id=run.run_id, step=stop.get("step"), reason=stop.get("reason"))

    def _list_jobs(self, m: dict) -> None:
        """A supervisor killed right after submitting a job had not listed it in the manifest: listed now."""
        for run in self.planned:
            status = RunRecord(run.path).status()
            job_id, entry = status.get("job_id"), M.run_entry(m, run.run_id)
            mine = job_id and status.get("sweep") == self.sweep and entry is not None
            if mine and str(job_id) not in entry.get("jobs", []):
                entry.update(job_id=str(job_id), jobs=[*entry.get("jobs", []), str(job_id)])

    def reap(self) -> None:
        for job_id, run in list(self.active.items()):
            if not self.backend.ended(job_id):
                continue
            del self.active[job_id]
            record = RunRecord(run.path)
            state = record.state()
            # The job died without its trainer recording why; unless another process trains the run
            # right now (its run lock is held), whose record this must not overwrite.
            if state in (State.RUNNING, State.PENDING) and not record.lock_held():
                error = getattr(self.backend, "job_error", lambda _j: None)(job_id)
                record.set_status(State.FAILED, error=f"job {job_id} ended without a result: {error}".splitlines()[0])
                state = record.state()
            fault_occurrence("supervisor.ended")  # a job's end seen, not yet decided on (tests kill here)
            if self.retry_stalled(run, record, job_id):
                continue
            stop = record.status().get("stop") or {}
            if record.stop_kind() == StopKind.HEALTH:
                self.decisions.add("health_stop", run_id=run.run_id, step=stop.get("step"), reason=stop.get("reason"))
            self.strategy.ended(run, record)
            self.note(lambda m: M.upsert_run(m, run.run_id, ended=now_iso(), job_state=state))
            self.failures += state in (State.FAILED, State.CANCELLED)
            print(f"[supervisor] {run.run_id} (job {job_id}) ended: {state}", flush=True)

    def retry_stalled(self, run, record: RunRecord, job_id: str) -> bool:
        """A job killed by its stall watcher with retries left (abcx.training.watchdog): started again
        where it was to stop, resuming from its newest checkpoint; the strategy never sees the stall."""
        from abcx.training.watchdog import retry_after_stall

        stall = retry_after_stall(record, run.cfg.launcher.stall_retries)
        if stall is None or self.stop_requested():
            return False
        print(f"[supervisor] {run.run_id} (job {job_id}) stalled after step {stall['step']}: retry "
              f"{stall['count']} of {run.cfg.launcher.stall_retries}", flush=True)
        self.start_one(S.Start(run, record.control().get("stop_at")))
        return True

    def loop(self) -> None:
        while True:
            while len(self.active) < self.limit and getattr(self.backend, "has_gpus_for", lambda _c: True)(
                    self.planned[0].cfg) and not self.stop_requested() and not self.budget_spent():
                go = self.strategy.next({r.run_id for r in self.active.values()})
                if go is None:
                    break
                self.start_one(go)
            if not self.active:
                self.reap()
                if not self.active:
                    break
            time.sleep(POLL_S)
            self.reap()
        if not self.stop_requested():  # a stopped sweep is continued by the next `abcx sweep run`
            self.strategy.finish()

    def cancel_all(self, why: str = "cancelled by `abcx sweep cancel`") -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.backend.cancel(list(self.active))
        waiting = self.strategy.waiting()
        for run in list(self.active.values()) + [r for r in self.planned if r.run_id in waiting]:
            RunRecord(run.path).end_if_live(State.CANCELLED, why)
        print(f"[supervisor] cancelled {len(self.active)} running and {len(waiting)} queued job(s)", flush=True)


def supervise(sweep_dir: Path) -> int:
    sup = Supervisor(sweep_dir)
    pid = os.getpid()
    sup.note(lambda m: m.update(supervisor={"pid": pid, "queue": sup.strategy.waiting(), "started": now_iso(),
                                            "ended": None, "strategy": sup.spec.name}))

    def on_signal(signum, _frame):
        raise _Stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        sup.resume()
        sup.loop()
    except _Stop:
        sup.cancel_all()
        return 130
    except S.MetricMissing as err:  # nothing can be ranked: the sweep fails in one line, its jobs stop
        sup.decisions.fail(str(err))
        sup.cancel_all(f"cancelled: the sweep failed: {err}")
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        sup.note(lambda m: m.setdefault("supervisor", {}).update(ended=now_iso(), queue=[]))
    return 1 if sup.failures else 0


def main(argv: list[str]) -> int:
    """`python -m abcx.sweep.supervisor SWEEP_DIR [--lock-fd N]`: supervise while holding the sweep
    lock, inherited from `abcx sweep run` (--lock-fd) or taken here; a sweep already locked is left alone."""
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
    try:
        return supervise(sweep_dir)
    except S.MetricMissing as err:
        print(f"error: {err}", flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
