"""The four-bound clip rule (ABC-GRPO, arXiv 2601.03895, Eq. 5-8): the centre of abcx's methods.

Which epsilon bounds which quadrant (the one mapping every count, clip and test relies on):

    eps1: A > 0,  upper bound 1 + eps1  ->  Q1 (A > 0, r above)
    eps2: A > 0,  lower bound 1 - eps2  ->  Q2 (A > 0, r below)
    eps3: A <= 0, upper bound 1 + eps3  ->  Q4 (A < 0, r above)
    eps4: A <= 0, lower bound 1 - eps4  ->  Q3 (A < 0, r below)

Notation: r = pi_theta / pi_old per token (or per sequence, GSPO), A = the sequence's group-relative
advantage. ABC-GRPO clips the ratio with four unconditional bounds,

    r~ = clip(r, 1 - eps2, 1 + eps1)   if A > 0
    r~ = clip(r, 1 - eps4, 1 + eps3)   if A <= 0
    loss = -r~ * A                     (zero gradient wherever r was clipped)

and every PPO-family clip in use is this rule with some bounds absent (eps = inf):

    method       eps1      eps2   eps3        eps4     gradient-identical to
    grpo         eps_high  inf    inf         eps_low  -min(rA, clip(r, 1-eps_low, 1+eps_high) A)
    dapo         0.28      inf    inf         0.2      the same with clip-higher
    dual_clip    eps_high  inf    c - 1       eps_low  verl's dual-clip PPO (clip_ratio_c = c)
    two_sided    eps_high  inf    delta - 1   eps_low  TRL's `delta` (INTELLECT-2)
    abc_grpo     eps1      eps2   eps3        eps4     the paper

(The literature writes an absent lower bound as eps2 = 1, i.e. 1 - eps2 = 0; since r > 0 that is the
same clip. abcx spells it `inf` so that 1 - eps <= 0 can be rejected as a typo.)

Quadrants (one definition for every method, so methods can be compared):
Q1: A > 0, r above the band; Q2: A > 0, r below; Q3: A < 0, r below; Q4: A < 0, r above.
A clip event is a token whose gradient the band can change, so A != 0 (the paper's quadrant table and
TRL's clip_ratio/low_mean use A < 0 too): a token with A = 0 carries no gradient under any rule and is
in no quadrant, although the rule bounds it with the A <= 0 pair (abcx.methods.stats counts those outside
that band on their own, clip/zero_adv_out).
The band is the method's own bound where it has one; where a method leaves a quadrant unbounded the
band borrows the bound of the same side from the other advantage sign (GRPO's Q2 band is 1 - eps_low,
its Q4 band 1 + eps_high). So for GRPO, Q2/Q4 count tokens outside the trust region that are *not*
clipped: the blind spots ABC-GRPO closes. `clipped` counts tokens whose gradient is actually zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from abcx.errors import UserError

if TYPE_CHECKING:
    from abcx.methods.terms import LossInputs, PolicyTerms

if TYPE_CHECKING:  # torch is imported lazily so that `abcx --help` never pays for it
    import torch

INF = math.inf
DEFAULT_BAND_EPS = 0.2


@dataclass(frozen=True)
class Bounds:
    """Four clip bounds: A > 0 uses [1 - eps2, 1 + eps1]; A <= 0 uses [1 - eps4, 1 + eps3]."""

    eps1: float
    eps2: float
    eps3: float
    eps4: float

    def __post_init__(self) -> None:
        for name in ("eps1", "eps2", "eps3", "eps4"):
            check_eps(name, getattr(self, name), lower=name in ("eps2", "eps4"))

    def band(self) -> "Bounds":
        """Finite bounds for the quadrant statistics (see the module docstring)."""

        def pick(own: float, other: float) -> float:
            if own != INF:
                return own
            return other if other != INF else DEFAULT_BAND_EPS

        return Bounds(
            eps1=pick(self.eps1, self.eps3),
            eps2=pick(self.eps2, self.eps4),
            eps3=pick(self.eps3, self.eps1),
            eps4=pick(self.eps4, self.eps2),
        )


def check_eps(field: str, value: float, *, lower: bool) -> None:
    """Reject an epsilon outside its domain with a one-line message naming the field."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{field}={value!r} is not a number; valid: a float >= 0 or inf")
    if math.isnan(value):
        raise UserError(f"{field}=nan is not valid; valid: a float >= 0 or inf (no bound)")
    if value < 0:
        raise UserError(f"{field}={value} is negative; valid: a float >= 0 or inf (no bound)")
    if lower and value != INF and value >= 1:
        raise UserError(
            f"{field}={value} puts the lower bound 1-eps at {1 - value:g} <= 0; "
            "valid: 0 <= eps < 1, or inf for no lower bound"
        )


def importance_ratio(
    log_ratio: "torch.Tensor", mask: "torch.Tensor", level: str = "token"
) -> "torch.Tensor":
    """r = exp(log pi_theta - log pi_old): per token [B, T], or per sequence [B, 1] (GSPO's
    exp of the masked mean log-ratio)."""
    import torch

    if level == "token":
        return torch.exp(log_ratio)
    if level == "sequence":
        return torch.exp(sequence_log_ratio(log_ratio, mask))
    raise UserError(f"method.importance_sampling_level={level!r} is unknown; valid: token, sequence")


def sequence_log_ratio(log_ratio: "torch.Tensor", mask: "torch.Tensor") -> "torch.Tensor":
    """[B, 1] masked mean of the token log-ratios: log of GSPO's sequence ratio."""
    return ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)


def _bound_tensors(bounds: Bounds, advantages: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    import torch

    positive = advantages > 0
    low = torch.where(positive, 1.0 - bounds.eps2, 1.0 - bounds.eps4).to(advantages.dtype)
    high = torch.where(positive, 1.0 + bounds.eps1, 1.0 + bounds.eps3).to(advantages.dtype)
    return low, high


def clipped_ratio(ratio: "torch.Tensor", advantages: "torch.Tensor", bounds: Bounds) -> "torch.Tensor":
    """r~ of Eq. 5-6: the ratio clipped by the bounds of its advantage's sign. torch.clamp passes no
    gradient where it clips, which is exactly the paper's 'zero gradient wherever r is clipped'."""
    import torch

    low, high = _bound_tensors(bounds, advantages)
    return torch.clamp(ratio, min=low, max=high)


def per_token_loss(ratio: "torch.Tensor", advantages: "torch.Tensor", bounds: Bounds) -> "torch.Tensor":
    """-r~ * A. `advantages` is [B, 1] (or [B, T]); `ratio` is [B, T] or [B, 1] and broadcasts."""
    return -clipped_ratio(ratio, advantages, bounds) * advantages


def four_bound_terms(inputs: "LossInputs", bounds: Bounds, level: str = "token") -> "PolicyTerms":
    """The four-bound rule as PolicyTerms: value -r~A; weight r inside the bounds of A's sign, 0 where r
    was clipped (torch.clamp's own gradient: it passes at the bound itself). With level="sequence" the
    weight acts on the gradient of the sequence's mean log-ratio, as GSPO differentiates through s."""
    import torch

    from abcx.methods.terms import PolicyTerms

    mask = inputs.mask
    ratio = importance_ratio(inputs.logp.detach() - inputs.old_logp, mask, level)
    low, high = _bound_tensors(bounds, inputs.advantages)
    inside = (ratio >= low) & (ratio <= high)
    value = -torch.clamp(ratio, min=low, max=high) * inputs.advantages
    weight = torch.where(inside, ratio, torch.zeros_like(ratio))
    shape = mask.shape
    return PolicyTerms(value=value.expand(shape), weight=weight.expand(shape), natural=ratio.expand(shape),
                       sequence=level == "sequence")
