"""The two vocabularies of the run record: run states (`State`), used by the record, the planner, the
CLI, the report and the docs, and why a stopped run stopped (`StopKind`).

`status.json` stores one of the RECORDED states. The planner derives two more from a record and its
backend's answer (is the job alive?): `new` (nothing submitted, or submitted and its job gone before
it started) and `queued` (submitted, the job waits or starts). Sources other than abcx records (W&B
runs without an exit record, a trainer_state.json) add `crashed` and `unknown`. Every module names
states through this enum, so a new state is added here once.
"""
from __future__ import annotations

from enum import Enum


class State(str, Enum):
    NEW = "new"              # planner: never submitted (or the submission's job died before it started)
    PENDING = "pending"      # record: submitted, the job has not started training
    QUEUED = "queued"        # planner: pending and its job is alive
    RUNNING = "running"      # record: a trainer writes it now (the planner checks the job lives)
    FINISHED = "finished"    # record: trained to max_steps; final model and summary written
    FAILED = "failed"        # record: an error (error.txt); resumable from the newest checkpoint
    CANCELLED = "cancelled"  # record: interrupted (Ctrl-C, SIGTERM, `sweep cancel`, preemption); resumable
    STOPPED = "stopped"      # record: a sweep strategy stopped it at a checkpoint (`stop` says why); promotable
    CRASHED = "crashed"      # report: a W&B run without an exit record
    UNKNOWN = "unknown"      # report: a source that does not say

    def __str__(self) -> str:  # f-strings and joins give the plain word
        return self.value


RECORDED = (State.PENDING, State.RUNNING, State.FINISHED, State.FAILED, State.CANCELLED, State.STOPPED)
PLANNED = (State.NEW, State.QUEUED, State.RUNNING, State.FINISHED, State.FAILED, State.CANCELLED, State.STOPPED)
LIVE = (State.QUEUED, State.RUNNING)              # a job holds the run
ENDED = (State.FINISHED, State.FAILED, State.CANCELLED, State.STOPPED)  # no job holds it
RESUMABLE = (State.NEW, State.FAILED, State.CANCELLED)  # a plain resubmission sends these again


class StopKind(str, Enum):
    """Why a `stopped` run stopped (status.json `stop.kind`): the second vocabulary of the record."""

    RUNG = "rung"        # paused at a rung of its sweep's strategy; promotable
    CUT = "cut"          # ranked below a rung's cut: stays stopped on every rerun
    HEALTH = "health"    # a health limit of the sweep (entropy floor, zero-std groups, non-finite)
    PRUNED = "pruned"    # an optuna pruner stopped the trial
    USER = "user"        # `abcx sweep stop`: the next `abcx sweep run` resumes it

    def __str__(self) -> str:
        return self.value


def stop_kind(status: dict) -> StopKind | None:
    """The stop kind of a status.json dict (None: not stopped, or a kind this version does not know)."""
    if status.get("state") != State.STOPPED:
        return None
    kind = (status.get("stop") or {}).get("kind") if isinstance(status.get("stop"), dict) else None
    try:
        return StopKind(kind)
    except ValueError:
        return None
