"""The unit every backend submits: one sweep point, trained by `abcx.training.train.train` in the job's process.

`TrainJob` is picklable (it holds only the point's overrides and a few strings) and a
`submitit.helpers.Checkpointable`: on preemption or timeout submitit calls `checkpoint()`, which
resubmits a fresh copy of the job; the requeued job composes the same point, finds the same run
folder (the run id is a config hash) and `train()` resumes from the newest complete trainer
checkpoint (from step 1 if there is none), reconciling the record with it (metric and eval rows
after it are dropped), and continues the same run record and W&B run (whose id is the run id).
Progress since the last `train.save_steps` checkpoint is recomputed, never duplicated. A
`scontrol requeue` (or a node failure) restarts the original pickled job, which resumes the same way.
Inside a job submitit's own SIGTERM handler stays in place (train() installs its own only where
SIGTERM is unhandled), so SLURM's preemption and requeue signals keep their meaning.

With `launcher.num_processes > 1` the job runs the trainer under `accelerate launch` instead of in
its own process (see `accelerate_command`); `python -m abcx.launch.job` is that trainer entry point.
A multi-node SLURM job runs one TrainJob per node: each launches its node's processes with the
rendezvous read from SLURM (abcx.launch.rendezvous), or, on the nodes a profile's `vllm_server`
reserves, runs `trl vllm-serve` until node 0's training has ended (abcx.launch.layout).
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import submitit

if TYPE_CHECKING:
    from abcx.launch.rendezvous import Rendezvous

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def current_job_id() -> str | None:
    """The backend's id for the running job: SLURM `<array>_<task>` or `<job>`, a local job's pid."""
    try:
        return str(submitit.JobEnvironment().job_id)
    except Exception:  # noqa: BLE001 - not inside a submitit job
        return os.environ.get("SLURM_JOB_ID")


def point_overrides(overrides: list[str] | tuple[str, ...], results_dir: str) -> list[str]:
    """The point's overrides plus an absolute results_dir (volatile: it does not change the run id),
    so the job writes where the submitter planned whatever its working directory."""
    quoted = "'" + results_dir.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return [*overrides, f"results_dir={quoted}"]


class TrainJob(submitit.helpers.Checkpointable):
    def __init__(self, overrides: list[str] | tuple[str, ...], *, run_id: str, results_dir: str,
                 sweep: str | None = None, num_processes: int = 1, accelerate_config: str | None = None,
                 warning_s: float | None = None) -> None:
        self.overrides = list(overrides)
        self.run_id = run_id
        self.results_dir = str(results_dir)
        self.sweep = sweep
        self.num_processes = int(num_processes)
        self.accelerate_config = accelerate_config
        # How long before its end the backend warns the job (signal_delay_s): used to checkpoint then.
        self.warning_s = warning_s

    @property
    def run_path(self) -> Path:
        from abcx.record import runs_dir

        return runs_dir(self.results_dir) / self.run_id

    def __call__(self) -> dict:
        from abcx.record import RunRecord, State

        from abcx.launch.rendezvous import slurm_nodes

        job_id = current_job_id()
        record = RunRecord(self.run_path)
        try:
            # A multi-node job always goes through accelerate: one plain process per node would train
            # the same run twice (and with too few processes the rendezvous names the mistake).
            if self.num_processes > 1 or slurm_nodes(os.environ) > 1:
                self.run_distributed(job_id)
            else:
                run_point(self.overrides, self.results_dir, self.run_id, job_id, sweep=self.sweep,
                          requeue=stall_requeue(job_id), notice=end_notice(getattr(self, "warning_s", None)))
        except BaseException as err:
            # train() records its own failures; this covers what fails before it starts (compose, imports),
            # except when another process trains the run right now (its run lock is held): its record.
            # Nor once a newer submission owns the record (a sweep resubmitted while this job wound down).
            owner = record.status().get("job_id")
            if (record.state() not in (State.FAILED, State.CANCELLED, State.FINISHED) and not record.lock_held()
                    and owner in (None, "", job_id)):
                state = State.CANCELLED if isinstance(err, KeyboardInterrupt) else State.FAILED
                record.set_status(state, error=f"{type(err).__name__}: {err}".splitlines()[0], job_id=job_id)
            raise
        return {"run_id": self.run_id, "state": record.state(), "job_id": job_id}

    def run_distributed(self, job_id: str | None, cwd: str | Path = REPO_ROOT) -> None:
        env = dict(os.environ, ABCX_JOB_ID=job_id or "")
        lay = self.layout()
        if lay is not None and lay.server_nodes:
            from abcx.launch import layout

            if lay.role(int(os.environ["SLURM_NODEID"])) == "vllm-serve":
                return self.serve(lay)
            hosts = _job_hosts()
            env.update({layout.HOST_ENV: lay.server_host(hosts), layout.PORT_ENV: str(lay.server["port"])})
        try:
            rdzv = job_rendezvous(self.num_processes, train_nodes=lay.train_nodes if lay else None)
            cmd = accelerate_command(self.overrides, self.results_dir, self.run_id, self.num_processes,
                                     self.accelerate_config, rdzv, sweep=self.sweep)
            proc = subprocess.run(cmd, env=env, cwd=cwd)
        finally:  # however training ended (even before it started), node 0 lets the server node stop
            if lay is not None and lay.server_nodes and os.environ.get("SLURM_NODEID") == "0":
                from abcx.launch.layout import done_file

                done_file(submitit.JobEnvironment().paths.folder, os.environ).touch()
        if proc.returncode:
            where = "" if rdzv is None else (f" on node rank {rdzv.machine_rank} of {rdzv.num_machines} "
                                             f"(rendezvous {rdzv.main_host}:{rdzv.main_port})")
            raise RuntimeError(f"accelerate launch exited {proc.returncode}{where}: {shlex.join(cmd)}")

    def layout(self):
        """This job's node layout (abcx.launch.layout) when it spans several SLURM nodes, else None."""
        from abcx.launch.rendezvous import slurm_nodes

        if slurm_nodes(os.environ) <= 1:
            return None
        from abcx.config.compose import compose
        from abcx.launch.layout import for_config

        return for_config(compose(point_overrides(self.overrides, self.results_dir)))

    def serve(self, lay) -> None:
        """A server node's task: `trl vllm-serve` of the run's model until node 0's training has ended."""
        import time

        from abcx.config.compose import compose
        from abcx.launch.layout import done_file
        from abcx.training.train import model_path

        cmd = lay.serve_command(model_path(compose(point_overrides(self.overrides, self.results_dir))))
        done = done_file(submitit.JobEnvironment().paths.folder, os.environ)
        server = subprocess.Popen(cmd)
        try:
            while not done.exists():
                if server.poll() is not None:
                    raise RuntimeError(f"{shlex.join(cmd)} exited {server.returncode} before training ended")
                time.sleep(2)
        finally:
            if server.poll() is None:
                server.terminate()
                server.wait(timeout=60)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        # Nothing to save here: the trainer saved a checkpoint at the warning (abcx.training.deadline), or
        # has its newest train.save_steps one, and the requeued job resumes from it. A fresh copy keeps
        # the pickle free of any state of this attempt.
        fresh = TrainJob(self.overrides, run_id=self.run_id, results_dir=self.results_dir, sweep=self.sweep,
                         num_processes=self.num_processes, accelerate_config=self.accelerate_config,
                         warning_s=getattr(self, "warning_s", None))
        return submitit.helpers.DelayedSubmission(fresh, *args, **kwargs)

    def __repr__(self) -> str:
        return f"TrainJob({self.run_id}: {' '.join(self.overrides)})"


def stall_requeue(job_id: str | None) -> list[str] | None:
    """The command that restarts this job after a stall (abcx.training.watchdog): in a SLURM job,
    `scontrol requeue` (the same job id; it resumes from the newest checkpoint). None elsewhere: on the
    local backend the sweep supervisor retries the run."""
    from submitit.slurm.slurm import SlurmJobEnvironment

    try:
        env = submitit.JobEnvironment()
    except Exception:  # noqa: BLE001 - not inside a submitit job
        return None
    if isinstance(env, SlurmJobEnvironment) and job_id:
        return ["scontrol", "requeue", str(job_id)]  # as submitit's own SlurmJobEnvironment._requeue
    return None


def end_notice(warning_s: float | None):
    """The signal submitit's jobs are warned with before their end (`SUBMITIT_PREEMPT_SIGNAL`, USR2 by
    default, as submitit reads it) and how early, for abcx.training.deadline; None when not known."""
    import signal

    if not warning_s:
        return None
    from abcx.training.deadline import Notice

    return Notice(int(signal.Signals["SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")]), float(warning_s))


def run_point(overrides: list[str], results_dir: str, run_id: str, job_id: str | None, sweep: str | None = None,
              requeue: list[str] | None = None, notice=None):
    from abcx.config.compose import compose
    from abcx.config.identity import run_id as run_id_of
    from abcx.errors import UserError
    from abcx.training.train import train

    cfg = compose(point_overrides(overrides, results_dir))
    if run_id_of(cfg) != run_id:
        raise UserError(
            f"point [{' '.join(overrides)}] now composes to run {run_id_of(cfg)}, not the submitted {run_id}: the "
            f"config files changed since submission; resubmit the sweep"
        )
    return train(cfg, job_id=job_id, quiet=True, sweep=sweep, requeue=requeue, notice=notice)


def accelerate_command(overrides: list[str], results_dir: str, run_id: str, num_processes: int,
                       accelerate_config: str | None, rendezvous: Rendezvous | None = None,
                       sweep: str | None = None) -> list[str]:
    """`accelerate launch` of this module for one point (see `accelerate_prefix`); `sweep` names the
    sweep whose job this is (its W&B group, and the run follows the sweep's control.json)."""
    return [*accelerate_prefix(num_processes, accelerate_config, rendezvous),
            "-m", "abcx.launch.job", "--results-dir", results_dir, "--run-id", run_id,
            *(["--sweep", sweep] if sweep else []), "--", *overrides]


def accelerate_prefix(num_processes: int, accelerate_config: str | None,
                      rendezvous: Rendezvous | None = None) -> list[str]:
    """`accelerate launch` with its options, before the program to launch.

    Single node: one SLURM task per job, accelerate starts `num_processes` workers on its GPUs (the
    tests: CPU processes over gloo, conf/accelerate/cpu.yaml), meeting on a free local port.
    Multi-node (profile `nodes` > 1): one task per node; each runs this command with the rendezvous
    read from SLURM (abcx.launch.rendezvous) and starts num_processes / nodes workers; `num_processes`
    counts the processes of all nodes.
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        cmd += ["--config_file", str(REPO_ROOT / "conf" / "accelerate" / f"{accelerate_config}.yaml")]
    cmd += ["--num_processes", str(num_processes)]
    if rendezvous is not None:
        cmd += rendezvous.accelerate_args()
    else:  # a free port, so that parallel jobs on one machine do not all rendezvous on 29500
        cmd += ["--main_process_port", os.environ.get("ABCX_MAIN_PORT") or str(_free_port())]
    return cmd


def job_rendezvous(num_processes: int, train_nodes: int | None = None) -> Rendezvous | None:
    """The rendezvous of this task when it is one node of a multi-node SLURM job, else None."""
    from abcx.launch import rendezvous

    if rendezvous.slurm_nodes(os.environ) <= 1:
        return None
    return rendezvous.from_slurm(os.environ, submitit.JobEnvironment().paths.folder, num_processes,
                                 train_nodes=train_nodes)


def _job_hosts() -> list[str]:
    from abcx.launch.rendezvous import expand_nodelist

    return expand_nodelist(os.environ["SLURM_JOB_NODELIST"])


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launched_by_accelerate() -> bool:
    """Whether this process already is one rank of a distributed launch (accelerate, torchrun)."""
    return "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def train_here(cfg, overrides: list[str]):
    """`abcx train`: the run in this process, or with launcher.num_processes > 1 under `accelerate launch`
    (as a submitted job would run it), waiting for it. `cfg` is `overrides` composed. Returns the run record."""
    from abcx.config.identity import run_id as run_id_of
    from abcx.errors import UserError
    from abcx.training.train import record_for, train

    if cfg.launcher.num_processes <= 1 or launched_by_accelerate():
        return train(cfg)
    overrides = [o for o in overrides if not o.lstrip("+").startswith("results_dir=")]
    results_dir = str(Path(cfg.results_dir).resolve())
    job = TrainJob(overrides, run_id=run_id_of(cfg), results_dir=results_dir,
                   num_processes=cfg.launcher.num_processes, accelerate_config=cfg.launcher.accelerate_config)
    record = record_for(cfg)
    try:
        job.run_distributed(None, cwd=os.getcwd())
    except RuntimeError as err:
        raise UserError(f"{err}; the run record: {record.path}") from None
    return record


def main(argv: list[str] | None = None) -> None:
    """Trainer entry point under `accelerate launch` (every rank calls train(); TRL coordinates them)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m abcx.launch.job")
    parser.add_argument("--results-dir", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--sweep", default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    job_id = os.environ.get("ABCX_JOB_ID") or None
    # Rank 0's stall watcher requeues the whole job (every node's ranks); the time-limit warning stays
    # submitit's own here: the ranks would have to agree on the step to save at.
    run_point(args.overrides, args.results_dir, args.run_id, job_id, sweep=args.sweep, requeue=stall_requeue(job_id))


if __name__ == "__main__":
    main()
