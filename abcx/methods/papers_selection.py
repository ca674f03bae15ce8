"""Clip-Cov and KL-Cov (Cui et al., "The Entropy Mechanism of Reinforcement Learning for Reasoning
Language Models", arXiv 2505.22617): pick the few tokens whose centred covariance
Cov_t = (A_t - mean A) * (log pi_t - mean log pi) (means over this micro-batch's completion tokens)
is high, the tokens that drive entropy down, and either cut their gradient (Clip-Cov) or pull them
back with a |log r| penalty (KL-Cov). Both as in verl's core_algos.py (adapted there from
PRIME-RL/Entropy-Mechanism-of-RL). The means, the token count, the draw and the top tokens are taken
over every process of a data-parallel step (abcx.methods.collective), so a split batch selects the
same tokens as one process on the whole batch.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from abcx.methods import collective as C
from abcx.methods.ratio_rules import log_ratio, ppo_dual_clip, token_advantages
from abcx.methods.terms import PolicyTerms

if TYPE_CHECKING:
    import torch

    from abcx.methods.terms import LossInputs

VERL = "volcengine/verl verl/trainer/ppo/core_algos.py"


def covariance(inputs: "LossInputs") -> "torch.Tensor":
    """Cov_t = (A_t - mean A)(log pi_t - mean log pi), means over the masked tokens of all processes,
    [B, T], detached."""
    mask = inputs.mask.to(inputs.logp.dtype)
    adv = token_advantages(inputs)
    logp = inputs.logp.detach()
    means = (C.masked_mean(adv, mask, inputs.collective), C.masked_mean(logp, mask, inputs.collective))
    return (adv - means[0]) * (logp - means[1])


def _generator(seed: int, step: int) -> "torch.Generator":
    import torch

    # one stream per (seed, step): the same run draws the same tokens, another seed other ones
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step)) % (2**63))


def clip_cov(
    inputs: "LossInputs",
    *,
    eps_low: float = 1.0,
    eps_high: float = 1.0,
    clip_cov_ratio: float = 2e-4,
    clip_cov_lb: float = 1.0,
    clip_cov_ub: float = 5.0,
    seed: int = 0,
) -> PolicyTerms:
    """Clip-Cov: the PPO clip loss (no dual clip), and max(1, int(clip_cov_ratio * N)) tokens drawn at
    random among those not already clipped with clip_cov_lb < Cov_t < clip_cov_ub get value and
    gradient 0. The draw is a torch.Generator seeded from (seed, inputs.step), so it is
    reproducible. eps_low = eps_high = 1 (the paper's recipe) leaves the ratio clip practically off:
    Clip-Cov replaces it.

    Source: volcengine/verl verl/trainer/ppo/core_algos.py (compute_policy_loss_clip_cov); defaults
    from recipe/entropy/7b_clip_cov.sh.
    """
    import torch

    r = torch.exp(log_ratio(inputs))
    adv = token_advantages(inputs)
    value, weight = ppo_dual_clip(r, adv, 1 - eps_low, 1 + eps_high, math.inf)
    clipped = ((adv > 0) & (r > 1 + eps_high)) | ((adv < 0) & (r < 1 - eps_low))
    cov = covariance(inputs)
    candidates = (inputs.mask > 0) & ~clipped & (cov > clip_cov_lb) & (cov < clip_cov_ub)
    tokens = float(inputs.collective.sum(inputs.mask.sum().to(torch.float64).reshape(1)))
    count = max(int(clip_cov_ratio * tokens), 1)
    keep = (~C.draw(candidates, count, _generator(seed, inputs.step), inputs.collective)).to(r.dtype)
    return PolicyTerms(value=value * keep, weight=weight * keep)


def kl_cov(inputs: "LossInputs", *, kl_cov_ratio: float = 2e-3, ppo_kl_coef: float = 1.0) -> PolicyTerms:
    """KL-Cov: the unclipped policy gradient -r A everywhere, plus ppo_kl_coef * |log r| on the
    top max(1, int(kl_cov_ratio * N)) tokens by Cov_t (gradient ppo_kl_coef * sign(log r) there,
    carried by `penalty`).

    Source: volcengine/verl verl/trainer/ppo/core_algos.py (compute_policy_loss_kl_cov); defaults from
    recipe/entropy/7b_kl_cov.sh (0.002 for 7B; the 32B recipe and verl's fallback use 2e-4).
    """
    import torch

    lr = log_ratio(inputs)
    r = torch.exp(lr)
    adv = token_advantages(inputs)
    value, penalty = -adv * r, torch.zeros_like(r)
    valid = inputs.mask > 0
    n_valid = int(inputs.collective.sum(valid.sum().to(torch.float64).reshape(1)))
    if n_valid > 0:
        count = min(max(1, int(n_valid * kl_cov_ratio)), n_valid)
        chosen = C.top_k(covariance(inputs), valid, count, inputs.collective).to(r.dtype)
        value = value + chosen * ppo_kl_coef * lr.abs()
        penalty = chosen * ppo_kl_coef * torch.sign(lr)
    return PolicyTerms(value=value, weight=r, penalty=penalty)


METADATA = {
    "clip_cov": {
        "reference": f"Cui et al., arXiv 2505.22617; {VERL} (clip_cov)",
        "doc": "cut the gradient of a random few tokens whose advantage-logp covariance is in (lb, ub)",
        "params": {
            "eps_low": {"doc": "PPO lower clip range (1: practically off, the recipe's)", "domain": "(0, 1]"},
            "eps_high": {"doc": "PPO upper clip range", "domain": ">= 0"},
            "clip_cov_ratio": {"doc": "fraction of the tokens cut (at least one)", "domain": "(0, 1]"},
            "clip_cov_lb": {"doc": "candidates have covariance above this", "domain": ">= 0"},
            "clip_cov_ub": {"doc": "candidates have covariance below this (> clip_cov_lb)", "domain": "> 0"},
            "seed": {"doc": "seed of the random draw (combined with the step)", "domain": "int >= 0"},
        },
    },
    "kl_cov": {
        "reference": f"Cui et al., arXiv 2505.22617; {VERL} (kl_cov)",
        "doc": "unclipped policy gradient plus a |log r| penalty on the top tokens by covariance",
        "params": {
            "kl_cov_ratio": {"doc": "fraction of the tokens penalised (at least one)", "domain": "(0, 1]"},
            "ppo_kl_coef": {"doc": "coefficient of the |log r| penalty", "domain": ">= 0"},
        },
    },
}
