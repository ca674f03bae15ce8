"""Small pieces shared by the methods from verl and the papers (abcx/methods/papers*.py).

Every method there reads the same few quantities off `LossInputs` (the detached log-ratio, the
advantage broadcast to [B, T]) and several end in the same PPO rule with per-token bounds and
verl's dual clip. That rule, written as a detached weight on A * grad(log pi):

    A > 0:  r > high         -> value -A * high, weight 0 (clipped)
            otherwise        -> value -A * r,    weight r (the lower bound never binds for A > 0)
    A < 0:  r < low          -> value -A * low,  weight 0 (clipped)
            max(r, low) > c  -> value -A * c,    weight 0 (verl's dual clip, c > 1)
            otherwise        -> value -A * r,    weight r
    A = 0:  value 0, weight r (no gradient either way; r keeps the weight comparable)

which is exactly the gradient of verl's `where(A < 0, min(-A c, max(-A r, -A clip(r))), max(...))`.
torch is imported inside the functions so that importing the method table stays cheap.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from abcx.methods.terms import LossInputs

# verl clamps log r to [-20, 20] before exp in dppo_tv, bapo and Archer's loss ("for stability").
LOG_RATIO_CLAMP = 20.0


def log_ratio(inputs: "LossInputs", clamp: bool = False) -> "torch.Tensor":
    """log r = log pi_theta - log pi_old, detached; clamped to +-20 where the reference clamps."""
    value = inputs.logp.detach() - inputs.old_logp.detach()
    if clamp:
        value = value.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return value


def token_advantages(inputs: "LossInputs") -> "torch.Tensor":
    """The advantage broadcast to the [B, T] shape of the log-probabilities, detached."""
    return inputs.advantages.detach().expand_as(inputs.logp)


def ppo_dual_clip(
    ratio: "torch.Tensor",
    adv: "torch.Tensor",
    low: "torch.Tensor | float",
    high: "torch.Tensor | float",
    clip_ratio_c: float,
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(value, weight) of PPO's clip with bounds [low, high] (floats or [B, T]) and the dual clip c
    on A < 0 (c = inf turns it off). See the module docstring for the table."""
    import torch

    positive, negative = adv > 0, adv < 0
    above = positive & (ratio > high)
    below = negative & (ratio < low)
    kept = torch.where(below, torch.as_tensor(low, dtype=ratio.dtype), ratio)  # max(r, low) for A < 0
    dual = negative & (kept > clip_ratio_c)
    effective = torch.where(above, torch.as_tensor(high, dtype=ratio.dtype), kept)
    effective = torch.where(dual, torch.full_like(ratio, clip_ratio_c), effective)
    value = -adv * effective
    weight = torch.where(above | below | dual, torch.zeros_like(ratio), ratio)
    return value, weight
