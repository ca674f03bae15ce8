"""The one shape every policy loss takes: a detached per-token weight on A * grad(log pi), plus masks.

Every clipping rule in use (four-bound clips, soft gates, kept-gradient rules, selections, penalties)
changes only *how much* of the policy-gradient direction each token receives. Writing each method as

    loss_t = value_t + (penalty_t - weight_t * A_t) * (logp_t - sg(logp_t))

with `value`, `weight` and `penalty` detached gives the method's own loss value (value_t) and exactly its
gradient, d loss_t / d theta = (penalty_t - weight_t * A_t) * grad(log pi_t), while the trainer applies
all methods one way and the metrics (quadrant shares of the gradient, tokens zeroed or scaled down) are
the same for all. The plain importance-weighted policy gradient, -r * A, has weight = r: a method that
clips a token sets weight 0 there; one that keeps a bounded gradient (GPPO) sets the bound; a soft gate
(SAPO) sets the gate's derivative times r.

Shapes: [B, T] for per-token tensors; advantages [B, 1] broadcast over tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from abcx.methods.collective import Collective

if TYPE_CHECKING:
    import torch


@dataclass
class LossInputs:
    """What a method may read for one micro-batch. Only `logp` carries a gradient."""

    logp: "torch.Tensor"  # [B, T] log pi_theta of the sampled tokens (requires grad)
    old_logp: "torch.Tensor"  # [B, T] log pi_old (detached); equal to logp.detach() when on-policy
    advantages: "torch.Tensor"  # [B, 1] (or [B, T]) group-relative advantage, detached
    mask: "torch.Tensor"  # [B, T] float, 1 on completion tokens
    entropies: "torch.Tensor | None" = None  # [B, T] detached token entropies (Archer)
    step: int = 0  # the optimiser step (schedules)
    max_steps: int = 1
    state: dict[str, Any] = field(default_factory=dict)  # a stateful method's controller state
    is_ratio: "torch.Tensor | None" = None  # [B, T] vLLM's pi_old / pi_sampler where TRL corrects for it (VESPO)
    collective: Collective = field(default_factory=Collective)  # the processes sharing this step (batch statistics)


@dataclass
class PolicyTerms:
    """A method's answer for one micro-batch; every tensor detached, [B, T]."""

    value: "torch.Tensor"  # the method's own per-token loss value (before aggregation)
    weight: "torch.Tensor"  # gradient = -weight * A * grad(log pi); 0 where the token's gradient is cut
    penalty: "torch.Tensor | None" = None  # extra gradient penalty * grad(log pi), not proportional to A
    natural: "torch.Tensor | None" = None  # the unclipped weight to compare with (default: r)
    # True: the weight acts on grad of the sequence's mean log-ratio (GSPO's s), not on each token's own
    # grad(log pi); the trainer then passes that mean as `logp` to `surrogate`.
    sequence: bool = False


def surrogate(terms: PolicyTerms, logp: "torch.Tensor", advantages: "torch.Tensor") -> "torch.Tensor":
    """The per-token loss whose value is `terms.value` and whose gradient is the method's."""
    coef = -terms.weight * advantages
    if terms.penalty is not None:
        coef = coef + terms.penalty
    return terms.value + coef.detach() * (logp - logp.detach())
