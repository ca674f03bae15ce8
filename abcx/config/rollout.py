"""What the train settings mean for clipping: whether a run is off-policy at all (r can differ from 1)
and how many optimizer steps one rollout spans (where a run may pause and resume exactly)."""
from __future__ import annotations

from typing import Any


def is_off_policy(train: Any) -> bool:
    """Whether TRL will compute old log-probs, i.e. whether r can differ from 1 and clipping can act
    (TRL 1.16: GA not a multiple of steps_per_generation * num_iterations, or vLLM IS correction)."""
    generate_every = train.steps_per_generation * train.num_iterations
    vllm_mismatch = bool(train.use_vllm and train.vllm_importance_sampling_correction)
    return train.gradient_accumulation_steps % generate_every != 0 or vllm_mismatch


def generation_cycle(train: Any) -> int:
    """Optimizer steps per rollout: TRL generates once every steps_per_generation x num_iterations
    micro-batches and keeps that rollout only in memory (not in a checkpoint), so a run resumes onto
    the uninterrupted run's path only from a step that is a multiple of this (abcx.training.callbacks.SweepControl)."""
    import math

    generate_every = int(train.steps_per_generation or train.gradient_accumulation_steps) * int(train.num_iterations)
    return generate_every // math.gcd(generate_every, int(train.gradient_accumulation_steps))


def inside_a_rollout(train: Any, step: int) -> str | None:
    """Why resuming at `step` leaves the uninterrupted run's path, or None: a checkpoint inside a
    rollout (step not a multiple of the rollout cycle) resumes without the rollout TRL kept only in
    memory, so that rollout is generated again with other samples. Seen in the regime study: its
    steps_per_generation=16 cell (save_steps 50) had two runs resume from checkpoint-100, and the cell's
    GRPO Avg@64 moved from 41.8 to 42.0%."""
    cycle = generation_cycle(train)
    if cycle <= 1 or step % cycle == 0:
        return None
    return (f"step {step} is inside a rollout (one every {cycle} optimizer steps), which no checkpoint holds: "
            f"it is generated again, so this run leaves the path an uninterrupted run would take (a "
            f"train.save_steps that is a multiple of {cycle} resumes exactly)")


ON_POLICY_WARNING = (
    "this run is fully on-policy (every generated batch is used for one optimizer step, so r == 1 and "
    "no ratio is ever clipped): GRPO, ABC-GRPO and every other clipping variant are the same algorithm "
    "here. Set train.steps_per_generation > train.gradient_accumulation_steps or train.num_iterations > 1 "
    "to compare clipping rules."
)
