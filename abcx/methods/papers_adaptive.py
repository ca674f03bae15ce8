"""Clip rules whose bounds are read off the batch itself: BAPO (a bound search per batch) and Archer
(bounds per entropy class). Both end in PPO's clip plus verl's dual clip (ratio_rules.ppo_dual_clip).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from abcx.methods.collective import Collective
from abcx.methods.ratio_rules import log_ratio, ppo_dual_clip, token_advantages
from abcx.methods.terms import PolicyTerms

if TYPE_CHECKING:
    import torch

    from abcx.methods.terms import LossInputs


def _pos_neg_ratio(ratio, adv, mask, c_low: float, c_high: float, eps: float, collective: Collective) -> float:
    """BAPO's balance: sum of the positive PPO surrogate values over the negative ones' magnitude,
    where a token's value is A * min(r, c_high) for A >= 0 and A * max(r, c_low) for A < 0; both sums
    run over every process's tokens (the reference all-reduces them across data-parallel ranks)."""
    import torch

    effective = torch.where(adv >= 0, ratio.clamp(max=c_high), ratio.clamp(min=c_low))
    contribution = effective * adv * mask
    sums = torch.stack([contribution.clamp(min=0).sum(), (-contribution.clamp(max=0)).sum()]).to(torch.float64)
    positive, negative = (float(v) for v in collective.sum(sums))
    return math.inf if negative <= 0 else positive / (negative + eps)


def bapo_bounds(
    inputs: "LossInputs",
    *,
    c_low_start: float = 0.6,
    c_low_max: float = 0.8,
    c_low_step: float = 0.05,
    c_high_start: float = 1.2,
    c_high_max: float = 2.0,
    c_high_step: float = 0.05,
    target_ratio: float = 1.0,
    eps: float = 1e-8,
) -> tuple[float, float, float]:
    """BAPO's bound search on this batch: (c_low, c_high, reached balance). Starting from the start
    bounds, raise c_low step by step up to c_low_max, then c_high up to c_high_max, stopping as soon
    as positive / negative contribution >= target_ratio (as in the reference code). The balance is
    taken over all processes (inputs.collective), so every rank reaches the same bounds."""
    r = log_ratio(inputs, clamp=True).exp()
    adv, mask = token_advantages(inputs), inputs.mask.to(r.dtype)
    c_low, c_high = float(c_low_start), float(c_high_start)

    def balance_at(low: float, high: float) -> float:
        return _pos_neg_ratio(r, adv, mask, low, high, eps, inputs.collective)

    balance = balance_at(c_low, c_high)
    while balance < target_ratio and c_low < c_low_max and c_low_step > 0:
        c_low = min(c_low + c_low_step, c_low_max)
        balance = balance_at(c_low, c_high)
    while balance < target_ratio and c_high < c_high_max and c_high_step > 0:
        c_high = min(c_high + c_high_step, c_high_max)
        balance = balance_at(c_low, c_high)
    return c_low, c_high, balance


def bapo(
    inputs: "LossInputs",
    *,
    c_low_start: float = 0.6,
    c_low_max: float = 0.8,
    c_low_step: float = 0.05,
    c_high_start: float = 1.2,
    c_high_max: float = 2.0,
    c_high_step: float = 0.05,
    target_ratio: float = 1.0,
    clip_ratio_c: float = 3.0,
) -> PolicyTerms:
    """BAPO (arXiv 2510.18927): PPO's clip with explicit ratio bounds [c_low, c_high] chosen per batch
    by bapo_bounds (positive/negative contribution >= target_ratio), then verl's dual clip c on A < 0.
    The search sees this micro-batch on every process: the two contributions are summed across
    data-parallel ranks (inputs.collective), as the reference all-reduces them, so every rank uses
    the same bounds.

    Source: WooooDyy/BAPO recipe/bapo/policy_loss.py (commit 3b8389c, the explicit-bounds version);
    defaults from recipe/bapo/config/bapo_trainer.yaml. The paper's Algorithm 1 differs (it raises
    c_high first, measures a pi_old-weighted positive share >= rho0 = 0.4, ranges [0.6, 0.9] and
    [1.2, 3.0], steps 0.02/0.05, no dual clip); the reference code is followed.
    """
    import torch

    c_low, c_high, _ = bapo_bounds(
        inputs, c_low_start=c_low_start, c_low_max=c_low_max, c_low_step=c_low_step,
        c_high_start=c_high_start, c_high_max=c_high_max, c_high_step=c_high_step, target_ratio=target_ratio,
    )
    r = torch.exp(log_ratio(inputs, clamp=True))
    value, weight = ppo_dual_clip(r, token_advantages(inputs), c_low, c_high, clip_ratio_c)
    return PolicyTerms(value=value, weight=weight)


def low_entropy_tokens(entropies: "torch.Tensor", mask: "torch.Tensor", quantile: float) -> "torch.Tensor":
    """Archer's split: a completion token is low-entropy when its entropy is at most the
    `quantile` (linear interpolation) of its own completion's token entropies."""
    import torch

    values = entropies.detach()
    if values.dtype not in (torch.float32, torch.float64):  # nanquantile takes only these (bf16 runs)
        values = values.float()
    masked = torch.where(mask > 0, values, torch.full_like(values, math.nan))
    threshold = torch.nanquantile(masked, quantile, dim=-1, keepdim=True)
    return (masked <= threshold) & (mask > 0)


def archer(
    inputs: "LossInputs",
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    high_entropy_eps_low: float = 0.4,
    high_entropy_eps_high: float = 0.4,
    entropy_quantile: float = 0.8,
    clip_ratio_c: float = 3.0,
) -> PolicyTerms:
    """Archer (dual-token constraints, arXiv 2507.15778): PPO's clip with [1 - eps_low, 1 + eps_high]
    for low-entropy tokens (entropy <= the entropy_quantile of their completion) and the looser
    [1 - high_entropy_eps_low, 1 + high_entropy_eps_high] for the high-entropy rest, then verl's dual
    clip c on A < 0. Needs inputs.entropies. Archer's per-class KL weights against a reference
    model are not part of this policy loss. The quantile is each completion's own, so the split does
    not depend on the rest of the batch (nor on how it is divided among processes).

    Source: wizard-III/Archer2.0 verl/trainer/ppo/core_algos.py (compute_policy_loss with
    use_token_entropy_separate; the entropy split in verl/workers/actor/dp_actor.py); defaults from
    scripts/train/run_archer2.0_qwen2.5_1.5b_math.sh.
    """
    import torch

    if inputs.entropies is None:
        raise ValueError("method archer needs the token entropies (LossInputs.entropies)")
    calm = low_entropy_tokens(inputs.entropies, inputs.mask, entropy_quantile)
    low = torch.where(calm, 1 - eps_low, 1 - high_entropy_eps_low).to(inputs.logp.dtype)
    high = torch.where(calm, 1 + eps_high, 1 + high_entropy_eps_high).to(inputs.logp.dtype)
    r = torch.exp(log_ratio(inputs, clamp=True))
    value, weight = ppo_dual_clip(r, token_advantages(inputs), low, high, clip_ratio_c)
    return PolicyTerms(value=value, weight=weight)


METADATA = {
    "bapo": {
        "reference": "BAPO, arXiv 2510.18927; WooooDyy/BAPO recipe/bapo/policy_loss.py",
        "doc": "per-batch search of the ratio bounds until positive and negative contributions balance",
        "params": {
            "c_low_start": {"doc": "first lower ratio bound tried", "domain": "(0, 1)"},
            "c_low_max": {"doc": "largest lower ratio bound (>= c_low_start)", "domain": "(0, 1)"},
            "c_low_step": {"doc": "step of the lower bound", "domain": ">= 0"},
            "c_high_start": {"doc": "first upper ratio bound tried", "domain": "> 1"},
            "c_high_max": {"doc": "largest upper ratio bound (>= c_high_start)", "domain": "> 1"},
            "c_high_step": {"doc": "step of the upper bound", "domain": ">= 0"},
            "target_ratio": {"doc": "stop when positive / negative contribution reaches this", "domain": ">= 0"},
            "clip_ratio_c": {"doc": "verl's dual clip: A < 0 tokens with r > c get no gradient", "domain": "> 1"},
        },
    },
    "archer": {
        "reference": "Archer, arXiv 2507.15778; wizard-III/Archer2.0 verl/trainer/ppo/core_algos.py",
        "doc": "looser clip bounds for each completion's high-entropy tokens (top 20%)",
        "params": {
            "eps_low": {"doc": "lower clip range of low-entropy tokens", "domain": "(0, 1)"},
            "eps_high": {"doc": "upper clip range of low-entropy tokens", "domain": ">= 0"},
            "high_entropy_eps_low": {"doc": "lower clip range of high-entropy tokens", "domain": "(0, 1)"},
            "high_entropy_eps_high": {"doc": "upper clip range of high-entropy tokens", "domain": ">= 0"},
            "entropy_quantile": {"doc": "per-completion entropy quantile splitting the classes", "domain": "[0, 1]"},
            "clip_ratio_c": {"doc": "verl's dual clip: A < 0 tokens with r > c get no gradient", "domain": "> 1"},
        },
    },
}
