"""Policy losses from verl 0.9.1 and recent papers, each as a detached weight on A * grad(log pi).

Every function takes `LossInputs` and keyword-only parameters with the published defaults, and
returns `PolicyTerms` (abcx/methods/terms.py): `surrogate(terms, logp, A)` has the method's own
per-token loss value and exactly its gradient. Notation: r = pi_theta / pi_old per token, q = pi_old
of the sampled token, A the advantage, c verl's dual-clip bound (loss -A*c, no gradient, for A < 0
and r > c). Unless a docstring says otherwise the per-token loss is aggregated like any other
(token-mean in the references).

This module holds the ratio rules (gppo, ce_gppo, gmpo, dcpo, dppo_tv, dro);
papers_selection.py the covariance selections (clip_cov, kl_cov); papers_adaptive.py the rules
whose bounds come from the batch (bapo, archer). METADATA and METHODS below cover all of them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from abcx.methods.papers_adaptive import METADATA as _ADAPTIVE_METADATA
from abcx.methods.papers_adaptive import archer, bapo, bapo_bounds
from abcx.methods.papers_selection import METADATA as _SELECTION_METADATA
from abcx.methods.papers_selection import clip_cov, kl_cov
from abcx.methods.ratio_rules import log_ratio, ppo_dual_clip, token_advantages
from abcx.methods.terms import PolicyTerms

if TYPE_CHECKING:
    from abcx.methods.terms import LossInputs

__all__ = [
    "METADATA", "METHODS", "gppo", "ce_gppo", "gmpo", "dcpo", "dppo_tv", "dro",
    "clip_cov", "kl_cov", "bapo", "bapo_bounds", "archer",
]

KLEAR = "Kwai-Klear/KlearReasoner verl/trainer/ppo/core_algos.py"


def _gradient_preserving(
    inputs: "LossInputs", eps_low: float, eps_high: float, beta1: float, beta2: float, clip_ratio_c: float
) -> PolicyTerms:
    """CE-GPPO's three cases, then verl's dual clip (the reference applies it to A < 0 as in PPO)."""
    import torch

    r = torch.exp(log_ratio(inputs))
    a = token_advantages(inputs)
    low = (a < 0) & (r < 1 - eps_low)
    high = (a > 0) & (r > 1 + eps_high)
    # outside the band the loss is beta * bound * r / sg(r): value beta * bound, gradient weight the same
    kept = torch.where(low, beta1 * (1 - eps_low), torch.where(high, beta2 * (1 + eps_high), r))
    dual = (a < 0) & (kept > clip_ratio_c)
    weight = torch.where(dual, torch.zeros_like(r), kept)
    value = -a * torch.where(dual, torch.full_like(r, clip_ratio_c), kept)
    return PolicyTerms(value=value, weight=weight)


def gppo(
    inputs: "LossInputs", *, eps_low: float = 0.2, eps_high: float = 0.28, clip_ratio_c: float = 10.0
) -> PolicyTerms:
    """GPPO (Klear-Reasoner, arXiv 2508.07629): -min(r A, clip(r, (1-eps_low) r/sg(r),
    (1+eps_high) r/sg(r)) A). The forward value is the clip-higher PPO loss, but a clipped token keeps
    a bounded gradient: weight 1+eps_high for A > 0 above the band, 1-eps_low for A < 0 below it,
    r elsewhere; verl's dual clip c then cuts A < 0 tokens with r > c.

    Source: Kwai-Klear/KlearReasoner verl/trainer/ppo/core_algos.py. Its compute_gppo_loss tests an
    undefined name (`only_higher`; the parameter is `only_high`), so as stored it raises NameError;
    implemented is the README's formula, which is compute_gppo_loss_general_beta with
    beta1 = beta2 = 1. Defaults from recipe/dapo/perf_run_dapo_ours_math.sh.
    """
    return _gradient_preserving(inputs, eps_low, eps_high, 1.0, 1.0, clip_ratio_c)


def ce_gppo(
    inputs: "LossInputs",
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    beta1: float = 0.25,
    beta2: float = 1.0,
    clip_ratio_c: float = 10.0,
) -> PolicyTerms:
    """CE-GPPO (arXiv 2509.20712): GPPO with the kept gradients scaled, -beta1 (1-eps_low) r/sg(r) A
    for A < 0 and r < 1-eps_low, -beta2 (1+eps_high) r/sg(r) A for A > 0 and r > 1+eps_high, -r A
    elsewhere, then verl's dual clip c on A < 0. beta1 < 1 weakens the entropy-lowering push of
    negative tokens below the band.

    Source: Kwai-Klear/KlearReasoner verl/trainer/ppo/core_algos.py (compute_gppo_loss_general_beta);
    defaults from verl/trainer/config/ppo_trainer.yaml and perf_run_dapo_ours_math_general_gppo.sh.
    """
    return _gradient_preserving(inputs, eps_low, eps_high, beta1, beta2, clip_ratio_c)


def gmpo(inputs: "LossInputs", *, eps_low: float = 0.4, eps_high: float = 0.4) -> PolicyTerms:
    """GMPO (arXiv 2507.20673): per sequence i, loss_i = -A_i * exp(mean_t l~_t) with the token
    log-ratios clipped in log space on the side that matters for the sign of A,
    l~ = sgn(A) * min(sgn(A) log r, sgn(A) clip(log r, -eps_low, eps_high)); the batch loss is the
    mean of loss_i over the sequences (verl ignores loss_agg_mode for GMPO).

    Per token: value_t = loss_i and weight_t = R_i where log r_t is not clipped (0 where it is),
    R_i = exp(mean_t l~_t); `natural` is the unclipped geometric-mean ratio. The method fixes the
    `grpo` aggregation (mean over each sequence's tokens, then over sequences), which turns these
    into mean_i loss_i and its exact gradient with no statistic of the micro-batch: so it holds for
    any train.loss_type, any gradient accumulation and any number of processes (each averages its
    own sequences; data parallel averages the processes, which hold equally many). Needs a
    sequence-level advantage ([B, 1], or [B, T] constant along T). Source: volcengine/verl
    verl/trainer/ppo/core_algos.py (compute_policy_loss_geo_mean, loss_mode "geo_mean"); defaults
    from examples/gmpo_trainer.
    """
    import torch

    lr = log_ratio(inputs)
    mask = inputs.mask.to(lr.dtype)
    lengths = mask.sum(-1, keepdim=True).clamp(min=1.0)
    adv = (token_advantages(inputs) * mask).sum(-1, keepdim=True) / lengths
    sign = torch.sign(adv)
    clipped = ((sign > 0) & (lr > eps_high)) | ((sign < 0) & (lr < -eps_low))
    kept = torch.where(clipped, lr.clamp(-eps_low, eps_high), lr) * sign.abs()
    seq_ratio = torch.exp((kept * mask).sum(-1, keepdim=True) / lengths)
    natural = torch.exp((lr * mask).sum(-1, keepdim=True) / lengths)
    value = (-adv * seq_ratio).expand_as(lr)
    weight = torch.where(clipped, torch.zeros_like(lr), seq_ratio.expand_as(lr))
    return PolicyTerms(value=value, weight=weight, natural=natural.expand_as(lr))


def dcpo_bounds(
    old_logp: "torch.Tensor", eps_low: float, eps_high: float, clip_ratio_c: float
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """DCPO's per-token bounds from q = pi_old: low = (1 + sqrt(max(0, 1 - 4 eps_low / q))) / 2,
    high = min((1 + sqrt(1 + 4 eps_high / q)) / 2, max(c, 10)) (q = 0: low 1, high the cap)."""
    import torch

    q = torch.exp(old_logp.detach())
    nonzero = q != 0
    low_arg = (1 - torch.where(nonzero, 4 * eps_low / q, torch.zeros_like(q))).clamp(min=0.0)
    high_arg = torch.where(nonzero, 1 + 4 * eps_high / q, torch.full_like(q, float("inf")))
    low = (1 + torch.sqrt(low_arg)) / 2
    high = ((1 + torch.sqrt(high_arg)) / 2).clamp(0.0, max(clip_ratio_c, 10.0))
    return low, high


def dcpo(
    inputs: "LossInputs", *, eps_low: float = 0.2, eps_high: float = 0.28, clip_ratio_c: float = 10.0
) -> PolicyTerms:
    """DCPO (arXiv 2509.02333): PPO's clip with bounds that widen for rare tokens (see dcpo_bounds:
    the band where q * (r - 1)^2 stays within 4 eps, the upper one capped at max(c, 10)), then
    verl's dual clip c on A < 0.

    Source: lime-RL/DCPO verl/trainer/ppo/core_algos.py (get_clip_low_high and
    compute_policy_loss_dcpo with clip_type "dynamic"); defaults from recipe/dcpo/run_dcpo.sh and
    run_base.sh (eps_low 0.2, eps_high 0.28, c 10).
    """
    import torch

    low, high = dcpo_bounds(inputs.old_logp, eps_low, eps_high, clip_ratio_c)
    r = torch.exp(log_ratio(inputs))
    value, weight = ppo_dual_clip(r, token_advantages(inputs), low, high, clip_ratio_c)
    return PolicyTerms(value=value, weight=weight)


def dppo_tv(
    inputs: "LossInputs", *, delta_low: float = 0.15, delta_high: float = 0.15, clip_ratio_c: float = 20.0
) -> PolicyTerms:
    """DPPO-Binary-TV (arXiv 2602.04879): a token is dropped when the probability itself moved too far,
    pi - pi_old > delta_high for A > 0 or pi - pi_old < -delta_low for A <= 0; the others get the
    truncated importance weight sg(min(r, c)) on A * log pi (loss -A sg(min(r, c)) log pi * keep,
    which is also the value, as in verl).

    Source: volcengine/verl verl/trainer/ppo/core_algos.py (compute_policy_loss_dppo_tv, where
    clip_ratio_low/high are the TV thresholds); defaults from verl's DPPO example script (0.15, and
    the TIS bound clip_ratio_c 20 the function falls back to).
    """
    import torch

    r = torch.exp(log_ratio(inputs, clamp=True))
    a = token_advantages(inputs)
    moved = torch.exp(inputs.logp.detach()) - torch.exp(inputs.old_logp.detach())
    keep = torch.where(a > 0, moved <= delta_high, moved >= -delta_low).to(r.dtype)
    weight = r.clamp(max=clip_ratio_c) * keep
    value = -a * weight * inputs.logp.detach()
    return PolicyTerms(value=value, weight=weight)


def dro(inputs: "LossInputs", *, beta: float = 0.1) -> PolicyTerms:
    """DRO as registered in verl: -(A log pi - beta/2 (log r)^2): a plain policy gradient (weight 1,
    no importance ratio) with a quadratic pull of log pi back to log pi_old (penalty beta log r).

    Source: verl's `dro` in verl/trainer/ppo/core_algos.py, read through its port in modelscope
    twinkle (DROLoss, which states it matches register_policy_loss("dro")): verl 0.9's file was not
    in the stored snapshots, so the default beta = 0.1 is the port's.
    """
    import torch

    lr = log_ratio(inputs)
    a = token_advantages(inputs)
    value = -(a * inputs.logp.detach() - 0.5 * beta * lr**2)
    ones = torch.ones_like(lr)
    # nothing is clipped: the natural weight of a loss without an importance ratio is 1, not r
    return PolicyTerms(value=value, weight=ones, penalty=beta * lr, natural=ones)


_EPS_LOW = {"doc": "lower clip range: the band starts at 1 - eps_low", "domain": "(0, 1)"}
_EPS_HIGH = {"doc": "upper clip range: the band ends at 1 + eps_high", "domain": ">= 0"}
_DUAL_C = {"doc": "verl's dual clip: A < 0 tokens with r > c get no gradient (inf: off)", "domain": "> 1"}

_RATIO_METADATA = {
    "gppo": {
        "reference": f"Klear-Reasoner, arXiv 2508.07629; {KLEAR} (compute_gppo_loss)",
        "doc": "clipped tokens keep a bounded gradient (weight = the bound) instead of none",
        "params": {"eps_low": _EPS_LOW, "eps_high": _EPS_HIGH, "clip_ratio_c": _DUAL_C},
    },
    "ce_gppo": {
        "reference": f"CE-GPPO, arXiv 2509.20712; {KLEAR} (compute_gppo_loss_general_beta)",
        "doc": "GPPO with the kept gradients scaled by beta1 (A<0 below the band) and beta2 (A>0 above)",
        "params": {
            "eps_low": _EPS_LOW,
            "eps_high": _EPS_HIGH,
            "beta1": {"doc": "scale of the kept gradient of A < 0 tokens below 1 - eps_low", "domain": ">= 0"},
            "beta2": {"doc": "scale of the kept gradient of A > 0 tokens above 1 + eps_high", "domain": ">= 0"},
            "clip_ratio_c": _DUAL_C,
        },
    },
    "gmpo": {
        "reference": "GMPO, arXiv 2507.20673; volcengine/verl verl/trainer/ppo/core_algos.py (geo_mean)",
        "doc": "geometric mean of the token ratios per sequence, clipped in log space",
        "aggregation": "grpo",
        "params": {
            "eps_low": {"doc": "log-space lower clip: log r >= -eps_low (for A < 0)", "domain": "> 0"},
            "eps_high": {"doc": "log-space upper clip: log r <= eps_high (for A > 0)", "domain": "> 0"},
        },
    },
    "dcpo": {
        "reference": "DCPO, arXiv 2509.02333; lime-RL/DCPO verl/trainer/ppo/core_algos.py (get_clip_low_high)",
        "doc": "PPO clip whose bounds widen for low-probability tokens (q-dependent), plus dual clip",
        "params": {
            "eps_low": {"doc": "lower bound (1 + sqrt(max(0, 1 - 4 eps_low / q))) / 2", "domain": "> 0"},
            "eps_high": {"doc": "upper bound (1 + sqrt(1 + 4 eps_high / q)) / 2", "domain": "> 0"},
            "clip_ratio_c": {"doc": "dual clip for A < 0; the upper bound is capped at max(c, 10)", "domain": "> 1"},
        },
    },
    "dppo_tv": {
        "reference": "DPPO, arXiv 2602.04879; volcengine/verl verl/trainer/ppo/core_algos.py (dppo_tv)",
        "doc": "drop tokens whose probability moved more than delta; truncated IS weight on the rest",
        "params": {
            "delta_low": {"doc": "drop A <= 0 tokens with pi - pi_old < -delta_low", "domain": "(0, 1)"},
            "delta_high": {"doc": "drop A > 0 tokens with pi - pi_old > delta_high", "domain": "(0, 1)"},
            "clip_ratio_c": {"doc": "truncation of the importance weight, min(r, c)", "domain": "> 1"},
        },
    },
    "dro": {
        "reference": "verl `dro` policy loss (register_policy_loss('dro')); port: modelscope twinkle DROLoss",
        "doc": "plain policy gradient with a quadratic penalty beta/2 (log r)^2",
        "params": {"beta": {"doc": "strength of the quadratic log-ratio penalty", "domain": "> 0"}},
    },
}

METADATA = {**_RATIO_METADATA, **_SELECTION_METADATA, **_ADAPTIVE_METADATA}
METHODS = {
    "gppo": gppo, "ce_gppo": ce_gppo, "gmpo": gmpo, "dcpo": dcpo, "dppo_tv": dppo_tv, "dro": dro,
    "clip_cov": clip_cov, "kl_cov": kl_cov, "bapo": bapo, "archer": archer,
}
