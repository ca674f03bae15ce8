"""What `abcx sweep ...` does; the CLI only parses arguments and calls these.

Submission is idempotent: every point is composed and validated first (one bad point, nothing is
submitted); runs are found by their run id (a config hash), so finished runs are skipped, failed,
cancelled and dead ones resubmitted (they resume from their newest checkpoint), and live ones left alone.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

from abcx.errors import UserError
from abcx.paths import NAME as SWEEP_NAME  # a sweep name is one plain folder name
from abcx.paths import check_results_dir
from abcx.launch import backend as B
from abcx.record import RunRecord, now_iso, runs_dir
from abcx.record.states import State
from abcx.sweep import manifest as M
from abcx.sweep import plan as P
from abcx.sweep import spec as S
from abcx.sweep import strategies as ST
from abcx.sweep import supervisor as SUP
from abcx.sweep.lock import SweepLock
from abcx.record.states import StopKind

LIVE = P.LIVE


def _out(text: str = "") -> None:
    print(text, flush=True)


def plan_sweep(name_or_path: str, overrides: list[str] | tuple[str, ...] = (), *, yes: bool = False):
    """(spec, planned runs) for a sweep file plus command-line overrides; raises UserError on any bad point."""
    spec = S.with_cli(S.load_sweep(name_or_path), list(overrides or ()))
    planned = P.build(S.planned_points(spec), allow_many=yes)
    for key in ("launcher.name", "results_dir"):
        values = {str(_get(r.cfg, key)) for r in planned}
        if len(values) > 1:
            raise UserError(f"{key} differs between points ({', '.join(sorted(values))}); a sweep uses one")
    B.get(planned[0].cfg.launcher.name).check(planned)  # e.g. the SLURM profile exists, even for --dry-run
    ST.check(spec.strategy, planned, f"{spec.source or spec.name}: strategy")
    return spec, planned


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def _liveness(backend: str, data: dict | None, *, strict: bool) -> P.JobAlive:
    """A job lives if its backend says so; a run a live supervisor will still start counts as queued."""
    job_alive = B.get(backend).liveness(data, strict=strict)
    waiting = SUP.queued(data)

    def alive(run_id: str, status: dict) -> bool | None:
        return True if run_id in waiting else job_alive(run_id, status)

    return alive


def sweep_run(name_or_path: str, overrides: list[str] | tuple[str, ...] = (), *, dry_run: bool = False,
              wait: bool = False, yes: bool = False, out: Callable[[str], None] = _out) -> int:
    """`abcx sweep run NAME_OR_PATH [OVERRIDES] [--dry-run] [--wait] [--yes]`. Returns the exit code.

    One submission of a sweep at a time (abcx.sweep.lock): while another `abcx sweep run` of the same
    sweep, or the local supervisor it started, is running, this one changes nothing, says who runs
    the sweep and returns 0; with --wait it first waits for that one to end, then returns as --wait does."""
    spec, planned = plan_sweep(name_or_path, overrides, yes=yes)
    _warn_if_on_policy(planned, out)
    first = planned[0].cfg
    backend, results_dir = first.launcher.name, str(Path(first.results_dir).expanduser().resolve())
    sweep_dir = M.sweep_dir(results_dir, spec.name)
    # Before the lock (which creates the sweep folder) and before any record is touched.
    check_results_dir(results_dir, sweep_dir, runs_dir(results_dir), write=not dry_run)
    layouts = B.get(backend).describe_layouts(planned)  # a bad vllm_server: one line, nothing written
    if dry_run:
        data = M.load(results_dir, spec.name)
        P.refresh(planned, _liveness(backend, data, strict=False))
        out(P.table(planned))
        for line in layouts:  # how each job's nodes are used (training, a vLLM server)
            out(line)
        out(f"sweep {spec.name}: {len(planned)} point(s), " + _counts_text(P.counts(planned))
            + f"; backend {backend}; nothing submitted (--dry-run)")
        return 0
    lock = SweepLock(sweep_dir)
    if not lock.acquire():
        return _already_running(spec.name, lock, results_dir, wait=wait, out=out)
    try:
        return _submit_locked(spec, planned, backend, results_dir, sweep_dir, lock, wait=wait, out=out)
    finally:
        lock.release()  # a detached supervisor keeps holding it (it inherited the same open file)


def _already_running(name: str, lock: SweepLock, results_dir: str, *, wait: bool, out) -> int:
    out(f"sweep {name} is already being run by {lock.holder()}; nothing submitted here "
        f"(follow it with `abcx sweep status {name}`)")
    if not wait:
        return 0
    if lock.acquire(blocking=True):  # returns once that run (its supervisor) has ended
        lock.release()
    return wait_for(name, results_dir=results_dir, out=out)


def _submit_locked(spec, planned, backend: str, results_dir: str, sweep_dir: Path, lock: SweepLock, *,
                   wait: bool, out) -> int:
    data = M.load(results_dir, spec.name)
    if SUP.alive(data):  # started without the lock (an older abcx, or by hand)
        out(f"sweep {spec.name} is already being run by supervisor pid {data['supervisor']['pid']}; "
            f"nothing submitted here (follow it with `abcx sweep status {spec.name}`)")
        return 0
    if ST.of(spec.strategy).makes_trials:  # its point is a template, not a run: the study makes the trials
        return _search(spec, planned, backend, results_dir, sweep_dir, lock, wait=wait, out=out)
    P.refresh(planned, _liveness(backend, data, strict=True))
    counts = P.counts(planned)
    # Never a run its strategy stopped (a rung, a cut): whether it goes on is the strategy's decision,
    # rebuilt by the supervisor from decisions.jsonl and the records, not "anything not finished".
    submit = P.to_submit(planned)
    skipped = len(planned) - len(submit)
    for run in planned:
        if run not in submit and RunRecord(run.path).has_meta():
            _list_in_sweep(run, spec.name)  # a finished run shared with another sweep belongs to this one too
    live = [str(r.status["job_id"]) for r in planned if r.state in LIVE and r.status.get("job_id")]
    # A killed supervisor may have left jobs running or a decision half done: a new one takes them up.
    resume = not submit and ST.of(spec.strategy).supervised and (
        bool(live) or ST.undecided(spec.strategy, sweep_dir, planned))
    if not submit and not resume:
        jobs = f"; live job(s) {', '.join(live[:5])}{' ...' if len(live) > 5 else ''}" if live else ""
        out(f"sweep {spec.name}: nothing to submit ({_counts_text(counts)}{jobs})")
        return 0
    submitted = now_iso()
    for run in submit:
        _mark_submitted(run, spec.name, backend, submitted)
        # What its job follows (health limits; a later `abcx sweep stop`), also without a supervisor.
        RunRecord(run.path).set_control(sweep=spec.name, stop_at=None, health=spec.strategy.health, stop=None)
    M.update(results_dir, spec.name, lambda m: _record_plan(m, spec, planned, backend, submitted, submit))
    out(f"sweep {spec.name}: submitting {len(submit)} run(s) to {backend}, skipping {skipped} ({_counts_text(counts)})"
        + ("; its strategy has decisions to finish" if resume else ""))
    # A budget needs a supervisor to count it; a plain grid goes in as the backend's job arrays.
    if not ST.of(spec.strategy).supervised and spec.strategy.device_hours is None and B.get(backend).submits_grid_itself:
        lock.describe(f"abcx sweep run (submitting to {backend})")
        return _submit_arrays(spec, submit, backend, sweep_dir, results_dir, wait=wait, out=out, lock=lock)
    return _supervise(spec, planned, submit, backend, sweep_dir, results_dir, wait=wait, out=out, lock=lock)


def _search(spec, planned, backend: str, results_dir: str, sweep_dir: Path, lock: SweepLock, *, wait: bool,
            out) -> int:
    """An optuna sweep: its supervisor asks the study (SQLite beside the sweep) for trials and
    resumes the ones a killed supervisor left running."""
    M.update(results_dir, spec.name, lambda m: (m.update(name=spec.name, description=spec.description,
                                                         source=spec.source, backend=backend), m.pop("stop", None)))
    out(f"sweep {spec.name}: optuna search, {spec.strategy.trials} trial(s) in all "
        f"({spec.strategy.sampler}, study {sweep_dir / ST.OPTUNA_DB})")
    return _supervise(spec, planned, [], backend, sweep_dir, results_dir, wait=wait, out=out, lock=lock)


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{counts[s]} {s}" for s in P.PLAN_STATES if counts.get(s)) or "no runs"


def _warn_if_on_policy(planned: list[P.PlannedRun], out: Callable[[str], None]) -> None:
    """A comparison of clipping rules where some point never clips is a comparison of nothing."""
    from abcx.config.rollout import ON_POLICY_WARNING, is_off_policy

    on_policy = [r for r in planned if not is_off_policy(r.cfg.train)]
    if on_policy:
        out(f"warning: {len(on_policy)} of {len(planned)} point(s) are fully on-policy: {ON_POLICY_WARNING}")


def _list_in_sweep(run: P.PlannedRun, sweep: str) -> None:
    RunRecord(run.path).join_sweep(sweep)  # a finished run shared with another sweep belongs to this one too


def _mark_submitted(run: P.PlannedRun, sweep: str, backend: str, submitted: str) -> None:
    """Put the sweep into the run's own record, so a lost manifest can be rebuilt from run folders."""
    RunRecord(run.path).mark_submitted(sweep=sweep, point=list(run.overrides), index=run.index, backend=backend,
                                       submitted=submitted)


def _record_plan(m: dict, spec, planned, backend: str, submitted: str, submit) -> None:
    m.update(name=spec.name, description=spec.description, source=spec.source, backend=backend)
    m.pop("stop", None)  # a new submission continues a sweep `abcx sweep stop` had stopped
    for run in planned:
        M.upsert_run(m, run.run_id, overrides=list(run.overrides), index=run.index)
    for run in submit:
        M.upsert_run(m, run.run_id, backend=backend, submitted=submitted, job_id=None, ended=None)
    m.setdefault("submissions", []).append({"time": submitted, "backend": backend,
                                            "run_ids": [r.run_id for r in submit]})


def _supervise(spec, planned, submit, backend: str, sweep_dir: Path, results_dir: str, *, wait: bool, out,
              lock: SweepLock) -> int:
    """The supervisor runs the strategy: detached (it inherits the sweep lock), or here with --wait."""
    first = planned[0].cfg
    max_parallel = first.launcher.max_parallel or B.get(backend).default_max_parallel(len(planned))
    SUP.write_queue(sweep_dir, sweep=spec.name, results_dir=results_dir, backend=backend, max_parallel=max_parallel,
                    points=planned, todo=submit, strategy=spec.strategy)
    if wait:
        out(f"running {len(submit)} job(s) from here, at most {max_parallel} at once (Ctrl-C cancels them)")
        lock.describe("abcx sweep run --wait (its supervisor)")
        with _watching(spec.name, results_dir, spec.strategy):
            code = SUP.start(sweep_dir, wait=True)
        sweep_status(spec.name, results_dir=results_dir, out=out)
        return code
    pid = SUP.start(sweep_dir, wait=False, lock_fd=lock.fd)
    lock.describe("the sweep's supervisor", pid=pid)  # the supervisor rewrites it too once it runs
    # Recorded here too (the supervisor records itself once it runs), so a cancel right away finds it.
    M.update(results_dir, spec.name, lambda m: m.update(supervisor={
        "pid": pid, "queue": [r.run_id for r in submit], "started": now_iso(), "ended": None}))
    out(f"supervisor pid {pid} runs them, at most {max_parallel} at once (log: {sweep_dir / 'supervisor.log'}); "
        f"follow with `abcx sweep status {spec.name}`")
    return 0


def _submit_arrays(spec, submit, backend: str, sweep_dir: Path, results_dir: str, *, wait: bool, out,
                   lock: SweepLock) -> int:
    job_ids = B.get(backend).submit(sweep_dir, submit, sweep=spec.name, results_dir=results_dir)
    for run in submit:
        RunRecord(run.path).set_status(State.PENDING, job_id=job_ids[run.run_id])

    def note(m):
        for run in submit:
            M.upsert_run(m, run.run_id, job_id=job_ids[run.run_id])
        m["submissions"][-1]["job_ids"] = [job_ids[r.run_id] for r in submit]

    M.update(results_dir, spec.name, note)
    arrays = sorted({j.split("_")[0] for j in job_ids.values()})
    out(f"submitted job array(s) {', '.join(arrays)}; follow with `abcx sweep status {spec.name}`")
    if not wait:
        return 0
    lock.release()  # the jobs are the backend's now; a second submission sees them live and skips them
    return wait_for(spec.name, results_dir=results_dir, out=out)


def wait_for(name: str, *, results_dir: str = "results", poll_s: float = 2.0, timeout_s: float | None = None,
             out: Callable[[str], None] = _out) -> int:
    """Block until no run of the sweep is queued or running; print its status; 0 if all finished."""
    deadline = None if timeout_s is None else time.time() + timeout_s
    with _watching(name, results_dir, ST.load_strategy(M.sweep_dir(results_dir, name))):
        while True:
            runs = _runs(name, results_dir, strict=False)
            if not any(r.state in LIVE for r in runs):
                break
            if deadline is not None and time.time() > deadline:
                raise UserError(f"sweep {name}: still running after {timeout_s:.0f} s")
            time.sleep(poll_s)
    sweep_status(name, results_dir=results_dir, out=out)
    return 0 if all(r.state == State.FINISHED for r in runs) else 1


def _watching(name: str, results_dir: str, strategy):
    """The live rows of the sweep's runs (abcx.sweep.watch) while the caller waits for them."""
    from abcx.sweep.watch import Watch

    return Watch(name, results_dir, strategy.metric)


def _runs(name: str, results_dir: str, *, strict: bool) -> list[P.PlannedRun]:
    check_results_dir(results_dir, write=False)  # a file given as --results-dir: one line
    data = M.load_or_rebuild(results_dir, name)
    root = Path(data.get("results_dir") or results_dir)
    entries = [e for e in data.get("runs") or [] if isinstance(e, dict) and _plain(e.get("run_id"))]
    runs = [P.PlannedRun(index=e.get("index", i), overrides=tuple(e.get("overrides") or ()), cfg=None,
                         run_id=e["run_id"], path=root / "runs" / e["run_id"])
            for i, e in enumerate(sorted(entries, key=lambda e: e.get("index", 0)))]
    P.refresh(runs, _liveness(B.of_manifest(data).name, data, strict=strict))
    for run in runs:
        run.entry = M.run_entry(data, run.run_id) or {}  # type: ignore[attr-defined]
    return runs


def _plain(run_id) -> bool:
    """A run id a manifest may name: one plain folder name (a hand-edited one cannot point elsewhere)."""
    from abcx.paths import NAME

    return isinstance(run_id, str) and bool(NAME.fullmatch(run_id)) and run_id not in (".", "..")


def _hours(seconds: float | None) -> str:
    if not seconds:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def sweep_status(name: str, *, results_dir: str = "results", out: Callable[[str], None] = _out) -> int:
    """`abcx sweep status NAME [--results-dir DIR]`: one line per run, the rung table of a halving
    sweep, then counts, device-hours (GPU-hours on GPU jobs, core-hours on CPU) and the budget."""
    runs = _runs(name, results_dir, strict=False)
    data = M.load(results_dir, name) or {}
    job_ids = [str(r.status.get("job_id") or r.entry.get("job_id")) for r in runs
               if r.status.get("job_id") or r.entry.get("job_id")]
    usage = B.of_manifest(data).usage(job_ids)
    rows = [("run id", "state", "step", "elapsed", "dev-h", "job", "error / stop / point")]
    total = 0.0
    for r in runs:
        st = r.status
        job = str(st.get("job_id") or r.entry.get("job_id") or "-")
        hours = usage[job] if usage and job in usage else float(st.get("device_hours") or st.get("gpu_hours") or 0.0)
        total += hours
        step = f"{st.get('step', 0)}/{st.get('max_steps') if st.get('max_steps') is not None else '?'}" if st else "-"
        error = str(st["error"]).strip().splitlines()[0] if st.get("error") and r.state != State.FINISHED else ""
        stop = (st.get("stop") or {}).get("reason", "") if r.state == State.STOPPED else ""
        late = _late(r)
        detail = late or error or stop or r.note or " ".join(r.overrides)
        rows.append((r.run_id, r.state + (" (late)" if late else "") + (" *" if r.note else ""), step, _hours(st.get("elapsed_s")),
                     f"{hours:.4f}", job, detail))
    _columns(rows, out)
    strategy = ST.load_strategy(M.sweep_dir(results_dir, name))
    lines = ST.of(strategy).status_lines
    for line in lines(strategy, M.sweep_dir(results_dir, name), runs) if lines else ():
        out(line)
    failure = ST.Decisions(M.sweep_dir(results_dir, name)).failure()
    if failure:
        out(f"sweep {name} failed: {failure}")
    counts = P.counts(runs)
    source = "sacct" if usage else "run records"
    budget = ST.budget_line(strategy, total)
    out(f"sweep {name}: {len(runs)} run(s): {_counts_text(counts)}; {total:.4f} device-hours ({source})"
        + (f"; {budget}" if budget else "")
        + ("; * = job gone while the record said running (resubmit resumes it)" if any(r.note for r in runs) else ""))
    return 0


def _late(run: P.PlannedRun) -> str | None:
    """A running run without progress for longer than its pace allows, before its stall watcher kills it."""
    if run.state != State.RUNNING:
        return None
    from abcx.training.watchdog import late_line

    return late_line(RunRecord(run.path).heartbeat())


def _columns(rows: list[tuple[str, ...]], out) -> None:
    """Left-aligned columns; the last one unpadded (it holds free text)."""
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]) - 1)]
    for row in rows:
        out("  ".join(f"{c:<{w}}" for c, w in zip(row[:-1], widths)) + "  " + row[-1])


def sweep_cancel(name: str, *, results_dir: str = "results", out: Callable[[str], None] = _out) -> int:
    """`abcx sweep cancel NAME [--results-dir DIR]`: stop its supervisor and jobs; the runs they held
    (running or queued) become cancelled, and the count printed is of those."""
    check_results_dir(results_dir, M.sweep_dir(results_dir, name), runs_dir(results_dir))  # it writes records
    data = M.load_or_rebuild(results_dir, name)
    runs = _runs(name, results_dir, strict=False)
    held = [r for r in runs if r.state in LIVE or (r.state == State.NEW and r.status.get("state") == State.PENDING)]
    SUP.stop(data)  # a supervisor cancels its own jobs and queue first
    ids = [str(r.status.get("job_id") or r.entry.get("job_id")) for r in held
           if r.status.get("job_id") or r.entry.get("job_id")]
    B.of_manifest(data).cancel(ids)
    for r in held:
        RunRecord(r.path).end_if_live(State.CANCELLED, "cancelled by `abcx sweep cancel`")
    changed = sum(RunRecord(r.path).state() == State.CANCELLED for r in held)
    M.update(results_dir, name, lambda m: m.setdefault("cancels", []).append(now_iso()))
    out(f"sweep {name}: cancelled {changed} run(s); finished runs are kept")
    return 0


STOP_GRACE_S = 300.0


def sweep_stop(name: str, *, run_ids: list[str] | tuple[str, ...] = (), grace_s: float = STOP_GRACE_S,
               reason: str = "", results_dir: str = "results", out: Callable[[str], None] = _out) -> int:
    """`abcx sweep stop NAME [--run ID ...] [--grace S] [--reason TEXT]`: stop running runs at their
    next checkpoint (Backend.stop: control.json, read by the trainer at its next generation
    boundary); a job that has not ended after --grace seconds is cancelled (scancel on SLURM).
    Without --run: every running run, the supervisor starts nothing more, and queued SLURM jobs are
    cancelled before they start. Stopped runs are `stopped`; the next `abcx sweep run` resumes them."""
    check_stop_request(grace_s, reason)
    check_results_dir(results_dir, M.sweep_dir(results_dir, name), runs_dir(results_dir))  # it writes records
    data = M.load_or_rebuild(results_dir, name)
    runs = _runs(name, results_dir, strict=True)
    chosen = _chosen(name, runs, run_ids)
    running = [r for r in chosen if r.state == State.RUNNING]
    queued = [r for r in chosen if r.state == State.QUEUED and _job(r)] if not run_ids else []
    if not running and not queued and not SUP.alive(data):
        out(f"sweep {name}: nothing running, nothing stopped ({_counts_text(P.counts(runs))})")
        return 0
    if not run_ids:
        M.update(results_dir, name, lambda m: m.update(stop={"at": now_iso(), "reason": reason}))
    backend = B.of_manifest(data)
    why = reason or "requested by `abcx sweep stop`"
    if queued:  # not training yet: nothing to checkpoint
        backend.cancel([_job(r) for r in queued])
        for r in queued:
            RunRecord(r.path).stop(f"stopped before it started by `abcx sweep stop`: {why}", kind=StopKind.USER.value, step=0)
    if running:
        out(f"sweep {name}: asking {len(running)} run(s) to stop at their next checkpoint (at most {grace_s:g} s)")
    cancelled = backend.stop([(RunRecord(r.path), _job(r)) for r in running], reason=why, grace_s=grace_s)
    stopped = [r for r in running if RunRecord(r.path).state() == State.STOPPED]
    steps = ", ".join(f"{r.run_id} at step {RunRecord(r.path).status().get('step')}" for r in stopped)
    out(f"sweep {name}: stopped {len(stopped)} run(s) at a checkpoint{': ' + steps if steps else ''}"
        + (f"; {len(queued)} queued job(s) cancelled before they started" if queued else "")
        + (f"; {len(cancelled)} had not stopped after {grace_s:g} s and were cancelled (job(s) "
           f"{', '.join(cancelled)})" if cancelled else "")
        + ("; the supervisor starts nothing more" if not run_ids and SUP.alive(data) else "")
        + f"; `abcx sweep run` resumes {'them' if stopped or queued or cancelled else 'the sweep'}")
    return 0


MAX_GRACE_S = 86_400.0  # a day: a run that has not reached a checkpoint by then is not going to


def check_stop_request(grace_s: float, reason: str) -> None:
    """--grace in [0, a day] (inf would wait forever for a run that never checkpoints); --reason, kept in
    the manifest and the runs' records, never a credential."""
    from abcx.secrets import check_free_text

    if isinstance(grace_s, bool) or not isinstance(grace_s, (int, float)) or not 0 <= grace_s <= MAX_GRACE_S:
        raise UserError(f"--grace {grace_s!r}: valid: seconds from 0 to {MAX_GRACE_S:.0f} (a day)")
    check_free_text("--reason", reason, into="the sweep's manifest and its runs' records")


def _job(run: P.PlannedRun) -> str | None:
    job = run.status.get("job_id") or run.entry.get("job_id")
    return str(job) if job else None


def _chosen(name: str, runs: list[P.PlannedRun], run_ids) -> list[P.PlannedRun]:
    """The sweep's runs named by --run (all of them without), each checked: one line per bad name."""
    if not run_ids:
        return runs
    by_id = {r.run_id: r for r in runs}
    for run_id in run_ids:
        if run_id not in by_id:
            have = ", ".join(list(by_id)[:8]) + (" ..." if len(by_id) > 8 else "")
            raise UserError(f"--run {run_id} is not a run of sweep {name}; its runs: {have or 'none'}")
        if by_id[run_id].state != State.RUNNING:
            raise UserError(f"--run {run_id} is {by_id[run_id].state}, not running: only a running run can be "
                            f"stopped (`abcx sweep stop {name}` without --run also stops the sweep's queue)")
    return [by_id[i] for i in dict.fromkeys(run_ids)]


def status_all(*, results_dir: str = "results", out: Callable[[str], None] = _out) -> int:
    """`abcx status` without a name: one line per sweep under results_dir/sweeps/, with its counts."""
    check_results_dir(results_dir, write=False)
    root = Path(results_dir) / "sweeps"
    names = {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
    for meta in runs_dir(results_dir).glob("*/meta.json"):  # sweeps whose folder was lost live on in their runs
        names |= set(RunRecord(meta.parent).meta().get("sweeps") or [])
    names = sorted(n for n in names if SWEEP_NAME.fullmatch(str(n)) and n not in (".", ".."))
    if not names:
        out(f"no sweeps under {root} (start one with `abcx sweep run NAME`)")
        return 0
    rows = [("sweep", "runs", "states")]
    for sweep in names:
        try:
            runs = _runs(sweep, results_dir, strict=False)
        except UserError as err:
            rows.append((sweep, "-", str(err)[:120]))
            continue
        rows.append((sweep, str(len(runs)), _counts_text(P.counts(runs))))
    _columns(rows, out)
    return 0


def sweep_epsilons(overrides: list[str] | tuple[str, ...] = (), **kwargs) -> int:
    """`abcx sweep epsilons [OVERRIDES]`: the ABC-GRPO epsilon grid (sweeps/epsilons.yaml)."""
    return sweep_run("epsilons", overrides, **kwargs)


def sweep_list(out: Callable[[str], None] = _out) -> int:
    """`abcx sweep list`: the sweep files under sweeps/."""
    for name in S.available():
        try:
            desc = S.load_sweep(name).description.strip().splitlines()[0]
        except (UserError, IndexError):
            desc = ""
        out(f"{name:<16} {desc}")
    return 0


if __name__ == "__main__":  # a convenience for debugging without the CLI
    sys.exit(sweep_status(sys.argv[1]))
