"""The clipped policy-gradient loss as pure functions (ABC-GRPO, arXiv 2601.03895, Eq. 5-8).

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
Q1: A > 0, r above the band; Q2: A > 0, r below; Q3: A <= 0, r below; Q4: A <= 0, r above.
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

if TYPE_CHECKING:  # torch is imported lazily so that `abcx --help` never pays for it
    import torch

INF = math.inf
METHODS = ("grpo", "dapo", "dual_clip", "two_sided", "abc_grpo")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
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


def bounds_for(method: str, params: Mapping[str, float | None]) -> Bounds:
    """The four bounds of a method preset. `params` holds the preset's own parameters."""

    def need(name: str) -> float:
        value = params.get(name)
        if value is None:
            raise UserError(f"method.{name} is required for method {method!r}")
        return float(value)

    if method in ("grpo", "dapo"):
        return Bounds(eps1=need("eps_high"), eps2=INF, eps3=INF, eps4=need("eps_low"))
    if method == "dual_clip":
        c = need("clip_ratio_c")
        eps_high = need("eps_high")
        if not c > 1:
            raise UserError(f"method.clip_ratio_c={c} must be > 1 (verl's dual-clip bound on r for A<0)")
        return Bounds(eps1=eps_high, eps2=INF, eps3=c - 1, eps4=need("eps_low"))
    if method == "two_sided":
        delta = need("delta")
        eps_high = need("eps_high")
        if not delta > 1 + eps_high:
            raise UserError(f"method.delta={delta} must be > 1 + eps_high = {1 + eps_high:g} (TRL's rule)")
        return Bounds(eps1=eps_high, eps2=INF, eps3=delta - 1, eps4=need("eps_low"))
    if method == "abc_grpo":
        return Bounds(eps1=need("eps1"), eps2=need("eps2"), eps3=need("eps3"), eps4=need("eps4"))
    raise UserError(f"method.name={method!r} is unknown; valid: {', '.join(METHODS)}")


def importance_ratio(
    log_ratio: "torch.Tensor", mask: "torch.Tensor", level: str = "token"
) -> "torch.Tensor":
    """r = exp(log pi_theta - log pi_old): per token [B, T], or per sequence [B, 1] (GSPO's
    exp of the masked mean log-ratio)."""
    import torch

    if level == "token":
        return torch.exp(log_ratio)
    if level == "sequence":
        mean = (log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        return torch.exp(mean).unsqueeze(-1)
    raise UserError(f"method.importance_sampling_level={level!r} is unknown; valid: token, sequence")


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


def aggregate(
    loss: "torch.Tensor",
    mask: "torch.Tensor",
    loss_type: str,
    *,
    max_completion_length: int | None = None,
    num_items: "torch.Tensor | float | None" = None,
) -> "torch.Tensor":
    """Reduce per-token losses to a scalar, as TRL's loss types do (before gradient-accumulation scaling).

    grpo: mean over each sequence's tokens, then over sequences (the paper's Eq. 6 normalisation).
    bnpo: mean over all tokens of the batch.  dr_grpo: sum / (B * max_completion_length).
    dapo: sum / num_items, the token count of the whole accumulation window (the caller computes it).
    """
    masked = loss * mask
    if loss_type == "grpo":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ValueError("dr_grpo aggregation needs max_completion_length")
        return masked.sum() / (loss.size(0) * max_completion_length)
    if loss_type == "dapo":
        if num_items is None:
            raise ValueError("dapo aggregation needs num_items")
        return masked.sum() / num_items
    raise UserError(f"train.loss_type={loss_type!r} is not supported; valid: {', '.join(LOSS_TYPES)}")


QUADRANT_KEYS = (
    "clip/q1", "clip/q2", "clip/q3", "clip/q4", "clip/clipped", "clip/zero_adv",
)


def quadrant_counts(
    ratio: "torch.Tensor", advantages: "torch.Tensor", mask: "torch.Tensor", bounds: Bounds
) -> dict[str, "torch.Tensor"]:
    """Token counts (not yet fractions, so they can be summed across processes and micro-batches) of
    each quadrant outside the band, of tokens actually clipped, and of tokens with A = 0; plus the
    token total and the ratio's min/max/sum over completion tokens."""
    import torch

    ratio = ratio.detach().expand_as(mask) if ratio.shape != mask.shape else ratio.detach()
    adv = advantages.expand_as(mask)
    valid = mask > 0
    band = bounds.band()
    pos, nonpos = adv > 0, adv <= 0

    def count(selector: "torch.Tensor") -> "torch.Tensor":
        return (selector & valid).sum().to(torch.float64)

    low, high = _bound_tensors(bounds, adv)
    clipped = (ratio < low) | (ratio > high)
    big = torch.finfo(ratio.dtype).max
    return {
        "clip/q1": count(pos & (ratio > 1 + band.eps1)),
        "clip/q2": count(pos & (ratio < 1 - band.eps2)),
        "clip/q3": count(nonpos & (ratio < 1 - band.eps4)),
        "clip/q4": count(nonpos & (ratio > 1 + band.eps3)),
        "clip/clipped": count(clipped),
        "clip/zero_adv": count(adv == 0),
        "tokens": valid.sum().to(torch.float64),
        "ratio/sum": (ratio * valid).sum().to(torch.float64),
        "ratio/min": torch.where(valid, ratio, big).min().to(torch.float64),
        "ratio/max": torch.where(valid, ratio, -big).max().to(torch.float64),
    }


def quadrant_fractions(counts: Mapping[str, float]) -> dict[str, float]:
    """Fractions of completion tokens from summed `quadrant_counts`."""
    tokens = max(float(counts["tokens"]), 1.0)
    out = {key: float(counts[key]) / tokens for key in QUADRANT_KEYS}
    out["ratio/mean"] = float(counts["ratio/sum"]) / tokens
    out["ratio/min"] = float(counts["ratio/min"])
    out["ratio/max"] = float(counts["ratio/max"])
    return out
