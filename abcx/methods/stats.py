"""Aggregation of per-token losses and the metrics every method is measured with (pure torch).

Quadrants have one definition for every method (abcx.methods.clip's docstring): Q1 A>0 & r above
1+eps1, Q2 A>0 & r below 1-eps2, Q3 A<0 & r below 1-eps4, Q4 A<0 & r above 1+eps3, on the
method's band (its own bounds where it has them, else DEFAULT_BAND_EPS). A clip event is a token whose
gradient the band can change, so A != 0: a token with A = 0 (a group whose rewards are all equal) is in
no quadrant; those outside the band of the side the rule bounds them by (A <= 0: [1-eps4, 1+eps3]) are
counted on their own as clip/zero_adv_out (TRL's clip_ratio/low_mean and high_mean count the same way).
On top of the counts:

    grad/share_qN    sum of |weight*A - penalty| over QN's tokens / the sum over all tokens
    grad/share_zero_adv_out  the same over the out-of-band tokens with A = 0 (a penalty's gradient only)
    grad/share_in    the same for tokens inside the band
    grad/zeroed      fraction of tokens whose weight is 0 where the natural weight (r) is not
    grad/scaled_down fraction of tokens with 0 < weight < natural weight

so a soft gate (SAPO), a kept-gradient rule (GPPO) and a hard clip are compared on the same scale.
Everything is returned as sums (not fractions) so micro-batches and processes can be added up.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from abcx.errors import UserError

if TYPE_CHECKING:
    import torch

    from abcx.methods.clip import Bounds
    from abcx.methods.terms import PolicyTerms

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")  # what train.loss_type may be
AGGREGATIONS = LOSS_TYPES + ("luspo",)
# TRL 1.16 ties its other loss types to one aggregation each (GRPOTrainer._compute_loss).
TRL_AGGREGATION = {"cispo": "dapo", "vespo": "dapo", "sapo": "grpo", "luspo": "luspo"}
SCALED_TOL = 1e-6  # relative: a weight below natural * (1 - SCALED_TOL) counts as scaled down


def aggregation_of(loss_type: str) -> str:
    return TRL_AGGREGATION.get(loss_type, loss_type)


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
    luspo: sum over each sequence's tokens, mean over sequences (each sequence weighted by its length).
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
    if loss_type == "luspo":
        return masked.sum(-1).mean()
    raise UserError(f"train.loss_type={loss_type!r} is not supported; valid: {', '.join(LOSS_TYPES)}")


QUADRANT_KEYS = ("clip/q1", "clip/q2", "clip/q3", "clip/q4", "clip/clipped", "clip/zero_adv", "clip/zero_adv_out")
GRAD_KEYS = ("grad/share_q1", "grad/share_q2", "grad/share_q3", "grad/share_q4", "grad/share_zero_adv_out",
             "grad/share_in")
TOKEN_KEYS = ("grad/zeroed", "grad/scaled_down")
# meta.json's "quadrants" (written by abcx.training.train): the clip-event definition a run's Q1..Q4 use. Records
# without it counted A = 0 tokens in Q3/Q4 (abcx.report.sources.abcx_records notes them).
QUADRANT_DEFINITION = "A != 0"


def quadrant_selectors(ratio: "torch.Tensor", adv: "torch.Tensor", band: "Bounds") -> list["torch.Tensor"]:
    """Boolean [B, T] masks of Q1..Q4 outside the band (band = finite bounds: Bounds.band()), then of
    the out-of-band tokens with A = 0 (outside the A <= 0 band, which the rule bounds them by)."""
    pos, neg, zero = adv > 0, adv < 0, adv == 0
    below, above = ratio < 1 - band.eps4, ratio > 1 + band.eps3  # outside the A <= 0 band
    return [pos & (ratio > 1 + band.eps1), pos & (ratio < 1 - band.eps2),
            neg & below, neg & above, zero & (below | above)]


def quadrant_counts(
    ratio: "torch.Tensor", advantages: "torch.Tensor", mask: "torch.Tensor", bounds: "Bounds",
    terms: "PolicyTerms | None" = None,
) -> dict[str, "torch.Tensor"]:
    """Token counts of each quadrant outside the band, of tokens clipped (zero gradient) and of tokens
    with A = 0 (all of them, and those outside the band); with `terms`, the gradient mass per quadrant
    and the zeroed / scaled-down counts; plus the token total and the ratio's min/max/sum over
    completion tokens. `bounds` are the method's own: without `terms`, `clipped` counts r outside them."""
    import torch

    from abcx.methods.clip import _bound_tensors

    ratio = ratio.detach().expand_as(mask)
    adv = advantages.expand_as(mask)
    valid = mask > 0
    *quads, zero_out = [q & valid for q in quadrant_selectors(ratio, adv, bounds.band())]

    def count(selector: "torch.Tensor") -> "torch.Tensor":
        return (selector & valid).sum().to(torch.float64)

    if terms is None:
        low, high = _bound_tensors(bounds, adv)
        zeroed = (ratio < low) | (ratio > high)
    else:
        natural = (terms.natural if terms.natural is not None else ratio).expand_as(mask)
        weight = terms.weight.expand_as(mask)
        zeroed = (weight == 0) & (natural != 0)
    big = torch.finfo(ratio.dtype).max
    out = {f"clip/q{i + 1}": q.sum().to(torch.float64) for i, q in enumerate(quads)}
    out.update({
        "clip/clipped": count(zeroed),
        "clip/zero_adv": count(adv == 0),
        "clip/zero_adv_out": count(zero_out),
        "tokens": valid.sum().to(torch.float64),
        "ratio/sum": (ratio * valid).sum().to(torch.float64),
        "ratio/min": torch.where(valid, ratio, big).min().to(torch.float64),
        "ratio/max": torch.where(valid, ratio, -big).max().to(torch.float64),
    })
    if terms is not None:
        out.update(_gradient_sums(terms, weight, natural, adv, valid, quads, zero_out, zeroed))
    return out


def _gradient_sums(terms, weight, natural, adv, valid, quads, zero_out, zeroed) -> dict[str, "torch.Tensor"]:
    import torch

    coef = weight * adv
    if terms.penalty is not None:
        coef = coef - terms.penalty
    mass = torch.where(valid, coef.abs(), torch.zeros_like(coef)).to(torch.float64)
    out = {f"grad/mass_q{i + 1}": (mass * q).sum() for i, q in enumerate(quads)}
    out["grad/mass_zero_adv_out"] = (mass * zero_out).sum()
    out["grad/mass"] = mass.sum()
    scaled = (weight.abs() < natural.abs() * (1 - SCALED_TOL)) & ~zeroed
    out["grad/zeroed"] = (zeroed & valid).sum().to(torch.float64)
    out["grad/scaled_down"] = (scaled & valid).sum().to(torch.float64)
    return out


def quadrant_fractions(counts: Mapping[str, float]) -> dict[str, float]:
    """Fractions of completion tokens (and gradient shares) from summed `quadrant_counts`."""
    tokens = max(float(counts["tokens"]), 1.0)
    out = {key: float(counts[key]) / tokens for key in QUADRANT_KEYS}
    out["ratio/mean"] = float(counts["ratio/sum"]) / tokens
    out["ratio/min"] = float(counts["ratio/min"])
    out["ratio/max"] = float(counts["ratio/max"])
    if "grad/mass" in counts:
        total = float(counts["grad/mass"])
        parts = [*(f"q{i}" for i in range(1, 5)), "zero_adv_out"]
        shares = [float(counts[f"grad/mass_{p}"]) / total if total > 0 else 0.0 for p in parts]
        out.update({f"grad/share_{p}": s for p, s in zip(parts, shares)})
        out["grad/share_in"] = 1.0 - sum(shares) if total > 0 else 0.0
        out.update({key: float(counts[key]) / tokens for key in TOKEN_KEYS})
    return out
