"""A checkpoint inside a rollout resumes off the uninterrupted path, and abcx says so when it resumes
there (TRL keeps a rollout only in memory: the rest of it is generated again with other samples)."""
from __future__ import annotations

from types import SimpleNamespace

from abcx.config.rollout import inside_a_rollout


def train(spg: int, iterations: int = 1, accumulation: int = 1):
    return SimpleNamespace(steps_per_generation=spg, num_iterations=iterations, gradient_accumulation_steps=accumulation)


def test_a_step_inside_a_rollout_is_named_with_the_cycle_and_a_boundary_is_not():
    said = inside_a_rollout(train(16), 100)
    assert said and "step 100 is inside a rollout (one every 16 optimizer steps)" in said and "multiple of 16" in said
    assert inside_a_rollout(train(16), 96) is None
    assert inside_a_rollout(train(4, iterations=2), 52) is not None  # a rollout every 8 steps
    assert inside_a_rollout(train(4, iterations=2), 48) is None


def test_an_on_policy_run_resumes_exactly_at_any_step():
    assert inside_a_rollout(train(1), 7) is None
