"""One training run: config -> model, task, AbcxGRPOTrainer -> run record.

`train(cfg)` is what `abcx train` calls in-process and what every launcher's job calls. It resumes a
run that has a checkpoint (after a crash, a requeue or a preemption) and leaves a finished one alone.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from abcx.config.rollout import ON_POLICY_WARNING, generation_cycle, inside_a_rollout, is_off_policy
from abcx.config.identity import config_hash, model_build, run_id, to_dict
from abcx.errors import RunFailed, UserError
from abcx.methods import provenance
from abcx.methods.stats import QUADRANT_DEFINITION  # which Q1..Q4 definition the run's counts use
from abcx.record import RunRecord, checkpoint_step, runs_dir
from abcx.config.trl_args import grpo_args  # noqa: F401 - the GRPOConfig of a run (built and validated there)
from abcx.record.states import State

if TYPE_CHECKING:
    from abcx.training.deadline import Notice


def record_for(cfg: Any) -> RunRecord:
    return RunRecord(runs_dir(cfg.results_dir) / run_id(cfg))


def model_path(cfg: Any) -> str:
    if cfg.model.name == "tiny" and not cfg.model.path:
        from abcx.testbed import ensure_tiny_model

        return str(ensure_tiny_model())
    if not cfg.model.path:
        raise UserError(f"model.path is required for model {cfg.model.name!r} (a hub id or a local folder)")
    return cfg.model.path


def wandb_env(cfg: Any, record: RunRecord, group: str) -> list[str]:
    """W&B through TRL's own integration. The run id is abcx's, so a resumed run continues the same
    W&B run. Returns report_to."""
    from abcx.secrets import WANDB_PRIVACY_ENV

    if not report_to(cfg):
        os.environ["WANDB_MODE"] = "disabled"
        return []
    os.environ.update({
        "WANDB_MODE": cfg.logger.mode, "WANDB_PROJECT": cfg.logger.project, "WANDB_DIR": str(record.path),
        "WANDB_RUN_ID": record.run_id, "WANDB_RESUME": "allow", "WANDB_RUN_GROUP": group,
        "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
        **WANDB_PRIVACY_ENV,  # no command line, program, code or git state in the W&B run
    })
    if cfg.logger.entity:
        os.environ["WANDB_ENTITY"] = cfg.logger.entity
    if cfg.tags:
        os.environ["WANDB_TAGS"] = ",".join(cfg.tags)
    return ["wandb"]


def wandb_config(cfg: Any, record: RunRecord, method) -> dict:
    """What abcx adds to the W&B run config, beside TRL's GRPOConfig: its resolved config (method and
    bounds, model, task, train, eval, seed) so W&B's filters and panels see the experiment axes. TRL's
    own epsilon / epsilon_high are not what an abcx run clips with: they are marked as such.
    `method` is the run's MethodRun; `bounds` are its four bounds at the start (None for a method
    without ratio bounds; a schedule or controller moves them, logged per step as eps/eps1..eps4)."""
    data = to_dict(cfg)
    for key in ("logger", "launcher", "results_dir"):
        data.pop(key, None)
    start = method.bounds(0)
    bounds = None if start is None else {k: (lambda v: str(v) if v == float("inf") else v)(float(getattr(start, k)))
                                         for k in ("eps1", "eps2", "eps3", "eps4")}
    return {"abcx": {**data, "run_id": record.run_id, "bounds": bounds},
            "method": cfg.method.name, "epsilon": "unused by abcx: see abcx.bounds",
            "epsilon_high": "unused by abcx: see abcx.bounds"}


def summarise(rows: list[dict], last_n: int = 5) -> dict:
    """First/last means of the main metrics and the run's quadrant profile. TRL logs reward only on
    steps that generate (every steps_per_generation), the loss-side metrics on every step."""

    def mean_of(key: str, part: list[dict]) -> float | None:
        values = [r[key] for r in part if isinstance(r.get(key), (int, float))]
        return sum(values) / len(values) if values else None

    steps = [r for r in rows if "entropy" in r]
    summary: dict = {"steps": steps[-1]["step"] if steps else 0, "last_n": last_n}
    for key in ("reward", "entropy", "completion_length", "clip/clipped", "ratio/max", "ratio/min"):
        having = [r for r in steps if isinstance(r.get(key), (int, float))]
        # The two windows never overlap: with fewer than 2 * last_n values each takes half of them.
        window = min(last_n, len(having) // 2)
        summary[f"window/{key}"] = window
        summary[f"first/{key}"] = mean_of(key, having[:window]) if window else None
        summary[f"last/{key}"] = mean_of(key, having[-window:]) if window else None
    quads = {q: mean_of(f"clip/{q}", steps) or 0.0 for q in ("q1", "q2", "q3", "q4")}
    total = sum(quads.values())
    summary.update({f"mean/clip/{q}": v for q, v in quads.items()})
    summary["mean/clip/clipped"] = mean_of("clip/clipped", steps)
    summary.update({f"share/{q}": (v / total if total else None) for q, v in quads.items()})
    return summary


def train(cfg: Any, *, job_id: str | None = None, quiet: bool = False, sweep: str | None = None,
          requeue: list[str] | None = None, notice: Notice | None = None) -> RunRecord:
    """Train (or resume, or finish) the run of `cfg`. `sweep`: the sweep whose job this is; it names
    the W&B group and makes the run follow the sweep's control.json (pause at a rung, health stops).
    `requeue`: the command that restarts this job after a stall (abcx.training.watchdog); `notice`: the
    signal that warns of the job's end, and how early (abcx.training.deadline). Both from the backend's job."""
    record = record_for(cfg)
    record.check_model_build(model_build(cfg))  # before anything is written, or a run counted as done
    if record.state() == State.FINISHED:
        print(f"[{record.run_id}] already finished: {record.path} (nothing to do). The run id is the config's "
              f"hash: to train again, change the seed (seed={int(cfg.seed) + 1}) or pass --rerun, which moves "
              f"this record to {RunRecord.superseded_dir(record.path.parent)}/ and trains afresh")
        return record
    if int(os.environ.get("RANK", "0")) != 0:
        # Under `accelerate launch` every rank trains; only rank 0 owns the record (and its lock).
        checkpoint = record.latest_checkpoint()
        if checkpoint is not None and _trained_to_the_end(checkpoint):
            return record  # rank 0 finishes it without a training step
        _build_trainer(cfg, record, cfg.group or sweep or f"{cfg.model.name}-{cfg.task.name}",
                       _bounds(cfg), quiet=True, primary=False, control=_control(record, sweep)).train(
            resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        return record
    from abcx.training.runlog import library_noise_to

    with record.exclusive(), _terminate_as_interrupt(), library_noise_to(record.library_log):
        return _train_locked(cfg, record, job_id=job_id, quiet=quiet, sweep=sweep, requeue=requeue, notice=notice)


def _control(record: RunRecord, sweep: str | None) -> dict:
    """The sweep's requests for this run (control.json), only in a job of that sweep: `abcx train`
    of the same config trains to the end whatever a sweep asked."""
    control = record.control() if sweep else {}
    return control if control.get("sweep") == sweep else {}


def _cpus(cfg: Any) -> int:
    """CPU cores the run keeps busy (its torch threads), for core-hours on a CPU job."""
    wanted = os.environ.get("ABCX_TORCH_THREADS") or ("1" if cfg.model.name == "tiny" else None)
    return int(wanted) if wanted else len(os.sched_getaffinity(0))


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is, so that it ends like Ctrl-C: recorded, resumable."""


@contextmanager
def _terminate_as_interrupt():
    """SIGTERM (`kill`, a container or service stop) interrupts the run like Ctrl-C. Only where no
    one else handles it: in a submitit job (SLURM or the local backend) submitit's own handler stays,
    which ignores SIGTERM so that preemption and requeue go through its checkpoint-and-requeue path."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _as_typed(results_dir: str) -> str:
    path = Path(results_dir)
    if path.is_absolute():
        try:
            return str(path.relative_to(Path.cwd().resolve()))
        except ValueError:
            return results_dir
    return results_dir


def _trained_to_the_end(checkpoint: Path) -> bool:
    step, max_steps = RunRecord.checkpoint_progress(checkpoint)
    return max_steps > 0 and step >= max_steps


def _bounds(cfg: Any):
    """The run's method (abcx.methods registry entry + the config's parameters)."""
    from omegaconf import OmegaConf

    from abcx.methods.runtime import MethodRun

    params = OmegaConf.to_container(cfg.method, resolve=True) if OmegaConf.is_config(cfg.method) else dict(cfg.method)
    return MethodRun(cfg.method.name, params, max_steps=max(int(cfg.train.max_steps), 1))


def _train_locked(cfg: Any, record: RunRecord, *, job_id: str | None, quiet: bool, sweep: str | None,
                  requeue: list[str] | None = None, notice: Notice | None = None) -> RunRecord:
    build = model_build(cfg)
    data = to_dict(cfg)
    # config.yaml says where the results live as the user would type it: a sweep job is handed an absolute
    # results_dir, stored relative to the working directory when it lies inside it.
    data["results_dir"] = _as_typed(str(data.get("results_dir", "results")))
    # Runs of one sweep share a W&B group, so a comparison's runs sit together.
    group = cfg.group or sweep or f"{cfg.model.name}-{cfg.task.name}"
    control = _control(record, sweep)
    off_policy = is_off_policy(cfg.train)
    if not off_policy:
        print(f"warning: {ON_POLICY_WARNING}", file=sys.stderr)
    preparing = _preparing(record, quiet)  # said at once: torch alone takes seconds to import
    gpus = int(os.environ.get("ABCX_GPUS_PER_JOB", "0")) or _visible_gpus()
    checkpoint = None
    try:
        record.start(data, config_hash=config_hash(cfg), max_steps=cfg.train.max_steps, job_id=job_id, gpus=gpus,
                     cpus=_cpus(cfg), extra_meta={"group": group, "off_policy": off_policy,
                                                    "quadrants": QUADRANT_DEFINITION,
                                                    **({"model_build": build} if build else {}),
                                                    **provenance(cfg.method.name)})  # a plugin's version, source hash
        # Validated before anything in the record changes; the record is reconciled with it once the
        # trainer has loaded it (RecordCallback.on_train_begin) or, with nothing left to train, here.
        checkpoint = record.latest_checkpoint(quarantine=True)
        if checkpoint is not None and _trained_to_the_end(checkpoint):
            _finish_from_checkpoint(cfg, record, checkpoint)
            return record
        trainer = _build_trainer(cfg, record, group, _bounds(cfg), quiet=quiet, control=control, preparing=preparing)
        if checkpoint is not None:
            print(f"[{record.run_id}] resuming from {checkpoint.name}", file=sys.stderr)
            inexact = inside_a_rollout(cfg.train, checkpoint_step(checkpoint) or 0)
            if inexact:
                print(f"warning: [{record.run_id}] {inexact}", file=sys.stderr)
        preparing.update(info="starting the trainer" + (" and W&B" if report_to(cfg) else ""))
        with _guarded(trainer, cfg, record, requeue=requeue, notice=notice) as warning:
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        stopped = _stopped(trainer)
        if stopped:  # the sweep's control stopped it at a checkpoint: not finished, promotable
            record.stop(**stopped)
            print(f"[{record.run_id}] stopped: {stopped['reason']}", file=sys.stderr)
            return record
        if warning is not None and warning.warned:
            warning.hand_over()  # submitit requeues the job and exits (SystemExit, recorded below)
        record.save_final(trainer.save_model)
        _finish(cfg, record, trainer)
    except UserError as err:
        record.fail(f"{type(err).__name__}: {err}", details=traceback.format_exc())
        raise
    except (KeyboardInterrupt, SystemExit) as err:
        _interrupted(record, err, checkpoint)
    except BaseException as err:  # noqa: BLE001 - recorded, then one line instead of chained tracebacks
        _failed(record, err, checkpoint)
    finally:
        preparing.done()  # ended by the progress callback once training begins; here if it never did
        _close_wandb()
    return record


def _failed(record: RunRecord, err: BaseException, checkpoint: Path | None) -> None:
    """Record the failure and raise it as one line. A full disk is named as such (torch's writer says
    "unexpected pos"), with what to do; a status that could not be written either is said, not hidden."""
    full = record.no_space(err)
    error = full or _peer_loss(f"{type(err).__name__}: {err}".splitlines()[0]) or \
        f"{type(err).__name__}: {err}".splitlines()[0]
    recorded = record.fail(error, details=traceback.format_exc())
    # Failing before the record was reconciled: loading the checkpoint failed (the rows are all kept).
    during = f" resuming from {checkpoint}" if checkpoint is not None and record.reconciled_at is None else ""
    todo = "; free space, then run the same command again: it resumes from the newest whole checkpoint" if full else ""
    where = "" if recorded else f"; the record could not be updated either (its status.json may still say " \
                                f"{record.state()})"
    where = f" (traceback: {record.error_path})" if recorded and record.error_path.exists() else where
    raise RunFailed(f"run {record.run_id} failed{during}: {error}{todo}{where}") from None


@contextmanager
def _guarded(trainer, cfg: Any, record: RunRecord, *, requeue: list[str] | None, notice: Notice | None):
    """While trainer.train() runs: the stall watcher (launcher.stall_timeout_s; abcx.training.watchdog)
    and, in a job that is warned of its end, the checkpoint at the warning (abcx.training.deadline).
    Yields the latter's callback when it holds the signal, else None. Afterwards, however train() ended,
    the watcher is closed and the progress row ended."""
    from abcx.config.domains import stall_timeout
    from abcx.training.deadline_callback import SaveAtWarning
    from abcx.training.heartbeat import Heartbeat

    timeout = stall_timeout(cfg.launcher.stall_timeout_s)
    beat = Heartbeat(record, timeout, cfg.launcher.stall_retries, requeue) if timeout else None
    warning = SaveAtWarning(notice, generation_cycle(cfg.train), record.run_id) if notice else None
    for callback in (beat, warning):
        if callback is not None:
            trainer.add_callback(callback)
    armed = warning is not None and warning.arm()
    try:
        yield warning if armed else None
    finally:
        if armed:
            warning.disarm()
        if beat is not None:
            beat.close()
        _end_progress(trainer)


def _end_progress(trainer) -> None:
    """The progress row of a training that raised (on_train_end never ran): ended before the error is said."""
    from abcx.training.callbacks import ProgressCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, ProgressCallback):
            callback.close()


def _preparing(record: RunRecord, quiet: bool):
    """Said at once, shown until the first step starts: imports, the model, the data, W&B take
    10-60 s on a small machine before step 1."""
    from abcx import progress

    return progress.task("preparing the run: TRL, the model, the data", name=record.run_id,
                         info="importing torch, TRL and transformers", plain=quiet)


def report_to(cfg: Any) -> bool:
    """Whether the run logs to W&B (its start takes seconds: the progress says so)."""
    return not (cfg.logger.mode == "disabled" or cfg.logger.name == "none")


def _peer_loss(error: str) -> str | None:
    """In a multi-process run, a collective that failed because another rank vanished: say so."""
    from abcx.training.peers import peer_loss

    return peer_loss(error, int(os.environ.get("WORLD_SIZE", "1")))


def _interrupted(record: RunRecord, err: BaseException, checkpoint: Path | None) -> None:
    """Ctrl-C, SIGTERM or submitit's exit after a preemption: `cancelled`, which every entry point
    resumes (`abcx train` again, `abcx sweep run`, a requeue) from the newest checkpoint."""
    newest = record.latest_checkpoint() or checkpoint
    cause = {Terminated: "SIGTERM", SystemExit: "the job's exit (preempted or timed out)"}.get(type(err), "SIGINT")
    where = f"from {newest.name}" if newest else "from the start"
    record.fail(f"interrupted by {cause}; resumable {where}", state=State.CANCELLED.value)
    if isinstance(err, SystemExit):
        raise err  # submitit's requeue path exits this way: leave it alone
    raise RunFailed(f"run {record.run_id} interrupted by {cause}; run the same command again to resume {where}",
                    exit_code=143 if isinstance(err, Terminated) else 130) from None


def _finish_from_checkpoint(cfg: Any, record: RunRecord, checkpoint: Path) -> None:
    """The newest checkpoint is at max_steps (a kill came after it, before the run was marked
    finished): finish from it without another training step."""
    step, _ = RunRecord.checkpoint_progress(checkpoint)
    print(f"[{record.run_id}] {checkpoint.name} is the last step: finishing without training", file=sys.stderr)
    record.reconcile(step)
    if not record.has_final():
        ignore = shutil.ignore_patterns("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth",
                                        "trainer_state.json")
        record.save_final(lambda dest: shutil.copytree(checkpoint, dest, ignore=ignore))
    if cfg.eval.at_end and not any(r.get("step") == step for r in record.evals()):
        _eval_at_end(cfg, record, step)
    _finish(cfg, record, None)


def _eval_at_end(cfg: Any, record: RunRecord, step: int) -> None:
    """The end-of-training evaluation the killed attempt did not get to, on the final model."""
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from abcx.evaluation.callback import PeriodicEvalCallback

    final = str(record.final_path)
    _set_threads(cfg)
    model = AutoModelForCausalLM.from_pretrained(final)
    state = SimpleNamespace(global_step=step, is_world_process_zero=True)
    PeriodicEvalCallback(cfg, record, AutoTokenizer.from_pretrained(final)).on_train_end(None, state, None, model=model)


def _visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - accounting must never break a run
        return 0


def _set_threads(cfg: Any) -> None:
    """The tiny model is overhead-bound: one torch thread per run is faster than two fighting over two
    cores, and lets parallel sweep jobs share a laptop. ABCX_TORCH_THREADS overrides."""
    import torch

    wanted = os.environ.get("ABCX_TORCH_THREADS") or ("1" if cfg.model.name == "tiny" else None)
    if wanted:
        torch.set_num_threads(int(wanted))


def _stopped(trainer) -> dict | None:
    from abcx.training.callbacks import SweepControl

    return next((cb.stopped for cb in trainer.callback_handler.callbacks
                 if isinstance(cb, SweepControl) and cb.stopped), None)


def _build_trainer(cfg: Any, record: RunRecord, group: str, bounds, *, quiet: bool, primary: bool = True,
                   control: dict | None = None, preparing=None):
    from transformers import AutoTokenizer
    from transformers.trainer_callback import PrinterCallback

    from abcx.training.callbacks import ProgressCallback, RecordCallback, SweepControl
    from abcx.tasks import build_task
    from abcx.training.trainer import AbcxGRPOTrainer

    _set_threads(cfg)
    path = model_path(cfg)
    if preparing is not None:
        preparing.update(info=f"building the {cfg.task.name} data")
    task = build_task(cfg.task.name, **cfg.task.options)
    report_to = wandb_env(cfg, record, group)
    args = grpo_args(cfg, record.checkpoints, report_to=report_to)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    from abcx.training.callbacks import ModelCardCallback

    control = control or {}
    health = control.get("health") or {}
    callbacks = [RecordCallback(record, cfg.train.nan_policy, nonfinite_stops=bool(health) and health.get("nonfinite", True)),
                 ModelCardCallback(str(path), record.run_id, cfg.method.name)]
    if control:  # a sweep's job: it may pause at a rung, stop on health, or be stopped while it trains
        callbacks.append(SweepControl(control.get("stop_at"), health, record=record,
                                      cycle=generation_cycle(cfg.train)))
    if report_to:
        from abcx.training.callbacks import WandbConfigCallback

        callbacks.append(WandbConfigCallback(wandb_config(cfg, record, bounds)))
    # quiet (a sweep job): no live bar, but one plain line per logged step, so job logs show progress.
    callbacks.append(ProgressCallback(record.run_id, plain=quiet, preparing=preparing))
    from abcx.methods.correction import Correction

    if preparing is not None:
        preparing.update(info="loading the model")
    trainer = AbcxGRPOTrainer(model=path, args=args, processing_class=tokenizer, train_dataset=task.train,
                              reward_funcs=[task.reward], callbacks=callbacks, method=bounds,
                              logprob_path=cfg.train.logprob_path, correction=Correction.of(cfg.get("correction")))
    trainer.remove_callback(PrinterCallback)
    if cfg.eval.every_steps or cfg.eval.at_end:
        from abcx.evaluation.callback import PeriodicEvalCallback

        trainer.add_callback(PeriodicEvalCallback(cfg, record, tokenizer))
    if primary:
        record.update_meta(
            trl_args=json.loads(args.to_json_string()), model_path=path,
            logprob_path=trainer.logprob_path,  # what `auto` resolved to on this machine
            world_size=trainer.accelerator.num_processes,  # the global batch is per-device x this
        )
    return trainer


def _finish(cfg: Any, record: RunRecord, trainer) -> None:
    summary = summarise(record.metrics())
    for cb in trainer.callback_handler.callbacks if trainer is not None else ():
        if hasattr(cb, "end_of_training"):
            summary.update({f"trainer/{k}": v for k, v in cb.end_of_training.items()})
    record.finish(summary)


def _close_wandb() -> None:
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            try:
                wandb.finish()
            except Exception as err:  # noqa: BLE001 - e.g. a full disk: the run's own outcome is recorded
                print(f"warning: W&B did not close cleanly: {err}".splitlines()[0], file=sys.stderr)
