"""The four-bound family (abcx.methods.clip): each preset is the four-bound rule with some bounds
absent (inf), written as its bounds; GSPO and LUSPO are the same rule on the sequence ratio.

    method     eps1      eps2  eps3       eps4      ratio     aggregation
    grpo       eps_high  inf   inf        eps_low   token     train.loss_type
    dapo       0.28      inf   inf        0.2       token     train.loss_type
    dual_clip  eps_high  inf   c - 1      eps_low   token     train.loss_type
    two_sided  eps_high  inf   delta - 1  eps_low   token     train.loss_type
    abc_grpo   eps1      eps2  eps3       eps4      token     train.loss_type
    gspo       4e-4      inf   inf        3e-4      sequence  train.loss_type (the paper: grpo)
    luspo      4e-4      inf   inf        3e-4      sequence  luspo: each sequence's loss x its length
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from abcx.errors import UserError
from abcx.methods.clip import INF, Bounds, four_bound_terms

if TYPE_CHECKING:
    from abcx.methods.terms import LossInputs, PolicyTerms

LOW = "[0, 1) or inf"  # a lower bound 1 - eps must stay > 0
HIGH = ">= 0"  # inf included: no bound
LEVEL = "token|sequence"
LEVEL_DOC = "ratio per token, or GSPO's per-sequence exp(mean log-ratio)"


def grpo_bounds(*, eps_low: float, eps_high: float, **_: object) -> Bounds:
    return Bounds(eps1=eps_high, eps2=INF, eps3=INF, eps4=eps_low)


def dual_clip_bounds(*, eps_low: float, eps_high: float, clip_ratio_c: float, **_: object) -> Bounds:
    if not clip_ratio_c > 1:
        raise UserError(f"method.clip_ratio_c={clip_ratio_c} must be > 1 (verl's dual-clip bound on r for A<0)")
    return Bounds(eps1=eps_high, eps2=INF, eps3=clip_ratio_c - 1, eps4=eps_low)


def two_sided_bounds(*, eps_low: float, eps_high: float, delta: float, **_: object) -> Bounds:
    if not delta > 1 + eps_high:
        raise UserError(f"method.delta={delta} must be > 1 + eps_high = {1 + eps_high:g} (TRL's rule)")
    return Bounds(eps1=eps_high, eps2=INF, eps3=delta - 1, eps4=eps_low)


def abc_bounds(*, eps1: float, eps2: float, eps3: float, eps4: float, **_: object) -> Bounds:
    return Bounds(eps1=eps1, eps2=eps2, eps3=eps3, eps4=eps4)


def grpo(inputs: "LossInputs", *, eps_low: float = 0.2, eps_high: float = 0.2,
         importance_sampling_level: str = "token") -> "PolicyTerms":
    """GRPO / PPO clip -min(rA, clip(r, 1-eps_low, 1+eps_high)A): bounds Q1 and Q3 only."""
    return four_bound_terms(inputs, grpo_bounds(eps_low=eps_low, eps_high=eps_high), importance_sampling_level)


def dapo(inputs: "LossInputs", *, eps_low: float = 0.2, eps_high: float = 0.28,
         importance_sampling_level: str = "token") -> "PolicyTerms":
    """DAPO clip-higher: GRPO's rule with a wider upper bound."""
    return four_bound_terms(inputs, grpo_bounds(eps_low=eps_low, eps_high=eps_high), importance_sampling_level)


def dual_clip(inputs: "LossInputs", *, eps_low: float = 0.2, eps_high: float = 0.2, clip_ratio_c: float = 3.0,
              importance_sampling_level: str = "token") -> "PolicyTerms":
    """Dual-clip PPO: GRPO plus r <= c for A <= 0."""
    bounds = dual_clip_bounds(eps_low=eps_low, eps_high=eps_high, clip_ratio_c=clip_ratio_c)
    return four_bound_terms(inputs, bounds, importance_sampling_level)


def two_sided(inputs: "LossInputs", *, eps_low: float = 0.2, eps_high: float = 0.2, delta: float = 4.0,
              importance_sampling_level: str = "token") -> "PolicyTerms":
    """Two-sided clip (TRL's delta, INTELLECT-2): GRPO plus min(r, delta)."""
    bounds = two_sided_bounds(eps_low=eps_low, eps_high=eps_high, delta=delta)
    return four_bound_terms(inputs, bounds, importance_sampling_level)


def abc_grpo(inputs: "LossInputs", *, eps1: float = 0.2, eps2: float = 0.2, eps3: float = 0.2, eps4: float = 0.2,
             importance_sampling_level: str = "token") -> "PolicyTerms":
    """ABC-GRPO: four unconditional bounds, A>0 clip(r, 1-eps2, 1+eps1), A<=0 clip(r, 1-eps4, 1+eps3)."""
    return four_bound_terms(inputs, abc_bounds(eps1=eps1, eps2=eps2, eps3=eps3, eps4=eps4), importance_sampling_level)


def gspo(inputs: "LossInputs", *, eps_low: float = 3e-4, eps_high: float = 4e-4,
         importance_sampling_level: str = "sequence") -> "PolicyTerms":
    """GSPO: GRPO's clip on the sequence ratio s = exp(mean_t log r), with the paper's epsilons."""
    return four_bound_terms(inputs, grpo_bounds(eps_low=eps_low, eps_high=eps_high), importance_sampling_level)


def luspo(inputs: "LossInputs", *, eps_low: float = 3e-4, eps_high: float = 4e-4,
          importance_sampling_level: str = "sequence") -> "PolicyTerms":
    """LUSPO: GSPO with each sequence's loss scaled by its length (TRL's `luspo` aggregation)."""
    return four_bound_terms(inputs, grpo_bounds(eps_low=eps_low, eps_high=eps_high), importance_sampling_level)


_EPS_LOW = {"doc": "A<=0 lower bound 1 - eps_low (= eps4)", "domain": LOW}
_EPS_HIGH = {"doc": "A>0 upper bound 1 + eps_high (= eps1)", "domain": HIGH}
_LEVEL = {"doc": LEVEL_DOC, "domain": LEVEL}
_GRPO_PARAMS = {"eps_low": _EPS_LOW, "eps_high": _EPS_HIGH, "importance_sampling_level": _LEVEL}
TRL = "TRL 1.16 trl/trainer/grpo_trainer.py (_compute_loss)"

METADATA = {
    "grpo": {"reference": f"Shao et al. 2024 (DeepSeekMath, arXiv 2402.03300); {TRL}", "params": _GRPO_PARAMS,
             "bounds": grpo_bounds},
    "dapo": {"reference": f"Yu et al. 2025 (DAPO, arXiv 2503.14476), clip-higher; {TRL}",
             "params": _GRPO_PARAMS, "bounds": grpo_bounds},
    "dual_clip": {"reference": "Ye et al. 2020 (arXiv 1912.09729); verl 0.9.1 verl/trainer/ppo/core_algos.py "
                               "(compute_policy_loss_vanilla, clip_ratio_c)",
                  "params": {**_GRPO_PARAMS, "clip_ratio_c": {"doc": "A<=0 upper bound on r (= 1 + eps3)",
                                                              "domain": "> 1"}},
                  "bounds": dual_clip_bounds},
    "two_sided": {"reference": f"Prime Intellect 2025 (INTELLECT-2, arXiv 2505.07291); {TRL} (delta)",
                  "params": {**_GRPO_PARAMS, "delta": {"doc": "upper bound on r for every token (= 1 + eps3 "
                                                              "for A<=0)", "domain": "> 1"}},
                  "bounds": two_sided_bounds},
    "abc_grpo": {"reference": "ABC-GRPO (arXiv 2601.03895, Eq. 5-8); abcx abcx/methods/clip.py",
                 "params": {"eps1": {"doc": "A>0 upper bound 1 + eps1 (Q1)", "domain": HIGH},
                            "eps2": {"doc": "A>0 lower bound 1 - eps2 (Q2)", "domain": LOW},
                            "eps3": {"doc": "A<=0 upper bound 1 + eps3 (Q4)", "domain": HIGH},
                            "eps4": {"doc": "A<=0 lower bound 1 - eps4 (Q3)", "domain": LOW},
                            "importance_sampling_level": _LEVEL},
                 "bounds": abc_bounds},
    "gspo": {"reference": f"Zheng et al. 2025 (GSPO, arXiv 2507.18071); {TRL} (importance_sampling_level="
                          "'sequence'); verl `gspo`",
             "params": _GRPO_PARAMS, "bounds": grpo_bounds},
    "luspo": {"reference": f"LUSPO (length-unbiased sequence policy optimisation); {TRL} (loss_type='luspo')",
              "params": _GRPO_PARAMS, "bounds": grpo_bounds, "aggregation": "luspo"},
}
