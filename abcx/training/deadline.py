"""The warning before a job's end (a time limit, a preemption) used to lose no training.

A submitit job gets a signal (`USR2`, sbatch's `--signal=USR2@<signal_delay_s>`) that many seconds
before its time limit, and on preemption; submitit's handler then calls TrainJob.checkpoint(),
requeues the job and exits, and the requeued job resumes from the newest `train.save_steps`
checkpoint, training every step since then again. Here the signal instead asks for a checkpoint at the
next step boundary, and submitit's handler runs once it is saved, so the requeued job resumes from the
step where the signal came.

"The next step boundary" is the next rollout boundary: the first step after the signal that is a
multiple of the run's generation cycle (abcx.config.rollout.generation_cycle; every step when a rollout
spans one step). TRL keeps a rollout only in memory and restarts its micro-step counter on resume, so a
checkpoint inside a rollout would resume onto another path than the uninterrupted run's (a fresh
rollout, and every later rollout shifted); from a boundary it is the same path, as for `abcx sweep stop`
and the rungs of a halving sweep. No step is trained twice and none is lost.

When that boundary is further away than the warning leaves time for (the remaining steps at the
run's median step time plus its slowest save take more than WARNING_USE of the warning), or does not
come in time after all (a step slower than its median), submitit's handler runs as before (requeue now,
resume from the newest checkpoint, train the steps since again) and the job's log says so. The
warning itself is sized at submission from the run's pace in an earlier attempt (`signal_delay_s`).
Only a single-process job is warned this way (ranks of a distributed run would have to agree on the
step: they requeue as before).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

WARNING_USE = 0.75  # of the warning, the part spent reaching the boundary and saving; the rest requeues and exits
SIGNAL_DELAY_S = 90  # submitit's default signal_delay_s: the least warning a job gets
WARNING_MARGIN = 2.0  # the sized warning covers twice the run's measured way to a boundary and its save


@dataclass(frozen=True)
class Notice:
    """The warning a job gets before it is ended: which signal, how many seconds before."""

    signum: int
    seconds: float


def next_boundary(step: int, cycle: int) -> int:
    """The first rollout boundary after `step` (a multiple of the generation cycle)."""
    cycle = max(1, int(cycle))
    return step + cycle - step % cycle


def time_to_save(step: int, cycle: int, median_step_s: float, save_s: float) -> float:
    """Seconds from the warning at `step` until a checkpoint at the next boundary is saved."""
    return (next_boundary(step, cycle) - step) * median_step_s + save_s


def signal_delay_s(least_s: float | None, pace: dict, cycle: int, time_limit_s: float | None = None) -> int:
    """How early to warn a job of its end (sbatch `--signal=USR2@<this>`): at least `least_s` (a
    profile's `signal_delay_s`, else submitit's 90 s), more when the run's pace in an earlier attempt
    (its record's heartbeat: `median_step_s`, `save_s`) says a whole rollout and a save need it
    (WARNING_MARGIN times that, over WARNING_USE); at most half the time limit, whatever the least."""
    least = float(least_s) if least_s else SIGNAL_DELAY_S
    median, save = pace.get("median_step_s"), pace.get("save_s")
    need = 0.0
    if isinstance(median, (int, float)):
        need = WARNING_MARGIN * (max(1, int(cycle)) * median + (save if isinstance(save, (int, float)) else median))
        need /= WARNING_USE
    delay = max(least, need)
    if time_limit_s:  # a warning as long as the job would come at its start (submitit's local controller too)
        delay = min(delay, time_limit_s / 2)
    return max(1, int(math.ceil(delay)))
