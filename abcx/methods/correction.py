"""Rollout/trainer mismatch correction: an axis of its own beside the clipping rule (the `correction`
config group, conf/correction/*.yaml), composed with any method and applied by the trainer.

The tokens were sampled by a behaviour policy mu (vLLM's engine, its precision and kernels); the
method's ratio r = pi_theta / pi_old is taken against the trainer's own log-probs pi_old of the same
weights. Their gap rho_t = pi_old(t) / mu(t) is corrected in two independent parts, each token's loss
multiplied by their product after the method (where TRL multiplies its own vLLM ratio):

    importance weight (is_level)  token:    rho_t                 truncated to [is_min, is_max] (TIS)
                                  sequence: prod_t rho_t          one weight for the whole sequence
    rejection (rs_level)          token:    rho_t                 outside [rs_min, rs_max]: weight 0
                                  sequence: prod_t rho_t            (the whole sequence)
                                  geometric: exp(mean_t log rho_t)  (the whole sequence)
                                  k3:       mean_t (rho_t - log rho_t - 1) > rs_max (the whole sequence)

A rejected token keeps its place in the loss's normaliser (as in TRL's *_mask modes). log rho is
clamped to +-20 before exp (verl's safety bound). TRL 1.16's vllm_importance_sampling_mode values are
settings of these: token_truncate = is_level=token with is_min/is_max; token_mask = is_level=token,
rs_level=token; sequence_truncate = is_level=sequence; sequence_mask (TRL's default, C_max 3) =
is_level=sequence, rs_level=sequence, rs_max=3 (the preset trl_default). verl's presets
decoupled_token_is, decoupled_seq_is, decoupled_seq_is_rs, decoupled_token_icepop, decoupled_geo_rs
and decoupled_k3_rs are token_tis, seq_tis, seq_mis, token_mis, geo_rs and k3_rs.

Where mu comes from: TRL 1.16 returns the sampler's log-probs (`sampling_per_token_logps`) only from
vLLM. Without vLLM (transformers' generate, as on CPU) there are none: generation and training are the
same model in the same process, so mu = pi_old and rho = 1 exactly; a correction then changes nothing,
and its metrics (correction/ratio_mean 1, correction/k3 0) say so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Mapping, Optional

from abcx.errors import UserError

if TYPE_CHECKING:
    import torch

IS_LEVELS = ("none", "token", "sequence")
RS_LEVELS = ("none", "token", "sequence", "geometric", "k3")
LOG_RATIO_CLAMP = 20.0
NO_BEHAVIOUR_LOGPROBS = ("a correction is set but train.use_vllm=false: TRL 1.16 has the sampler's own log-probs "
                         "only from vLLM, so the behaviour policy is pi_old itself and rho = 1 (the correction "
                         "changes nothing; its metrics show rho)")
SUM_KEYS = ("correction/tokens", "correction/ratio_sum", "correction/k3_sum", "correction/truncated",
            "correction/rejected", "correction/weight_sum")


@dataclass
class CorrectionConf:
    """The `correction` config group (the schema; presets in conf/correction/)."""

    name: str = "none"
    is_level: str = "none"
    is_min: Optional[float] = None
    is_max: Optional[float] = None
    rs_level: str = "none"
    rs_min: Optional[float] = None
    rs_max: Optional[float] = None


NONE = {f.name: f.default for f in fields(CorrectionConf)}


def active(group: Mapping[str, Any] | None) -> bool:
    return bool(group) and (group.get("is_level", "none") != "none" or group.get("rs_level", "none") != "none")


def hash_view(group: Mapping[str, Any] | None) -> dict | None:
    """The group as it enters the config hash: None (left out) when it is the default, so run ids of
    configs without a correction stay what they were before the group existed."""
    return None if group is None or dict(group) == NONE else dict(group)


def check(group: Mapping[str, Any]) -> None:
    """One line naming the field and what would be valid."""
    g = {**NONE, **dict(group)}
    for key, levels in (("is_level", IS_LEVELS), ("rs_level", RS_LEVELS)):
        if g[key] not in levels:
            raise UserError(f"correction.{key}={g[key]!r} is not valid; valid: {', '.join(levels)}")
    for key in ("is_min", "is_max", "rs_min", "rs_max"):
        value = g[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value <= 0):
            raise UserError(f"correction.{key}={value!r} is not valid; valid: a finite number > 0, or null")
    _check_part(g, "is", (g["is_min"], g["is_max"]))
    _check_part(g, "rs", (g["rs_min"], g["rs_max"]))


def _check_part(g: Mapping[str, Any], part: str, bounds: tuple) -> None:
    low, high = bounds
    level = g[f"{part}_level"]
    if level == "none" and (low is not None or high is not None):
        raise UserError(f"correction.{part}_{'min' if low is not None else 'max'} is set but "
                        f"correction.{part}_level=none; set correction.{part}_level too")
    if level == "k3":
        if high is None or low is not None:
            raise UserError("correction.rs_level=k3 takes only an upper bound on the mismatch KL; valid: "
                            "correction.rs_max > 0 and correction.rs_min=null")
        return
    if part == "rs" and level != "none" and low is None and high is None:
        raise UserError(f"correction.rs_level={level} needs a bound; set correction.rs_min and/or correction.rs_max")
    if low is not None and low > 1:
        raise UserError(f"correction.{part}_min={low} is above 1 and would cut the on-policy tokens (rho = 1); "
                        f"valid: 0 < {part}_min <= 1")
    if high is not None and high < 1:
        raise UserError(f"correction.{part}_max={high} is below 1 and would cut the on-policy tokens (rho = 1); "
                        f"valid: {part}_max >= 1")


def mismatch_log_ratio(old_logp: "torch.Tensor", behaviour_logp: "torch.Tensor", mask: "torch.Tensor") -> "torch.Tensor":
    """log rho = log pi_old - log mu on completion tokens (0 elsewhere, and where mu's log-prob is NaN,
    as TRL treats vLLM's missing log-probs), clamped to +-20."""
    import torch

    diff = torch.nan_to_num((old_logp.detach() - behaviour_logp.detach()) * mask, nan=0.0)
    return diff.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def _per_sequence(log_rho: "torch.Tensor", mask: "torch.Tensor", level: str) -> "torch.Tensor":
    """[B, 1]: the sequence's statistic of a level (sequence: sum log rho; geometric: mean; k3: mean k3)."""
    if level == "sequence":
        return (log_rho * mask).sum(-1, keepdim=True).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    count = mask.sum(-1, keepdim=True).clamp(min=1.0)
    if level == "geometric":
        return (log_rho * mask).sum(-1, keepdim=True) / count
    return (((log_rho.exp() - log_rho - 1) * mask).sum(-1, keepdim=True)) / count  # k3


def importance_weight(log_rho: "torch.Tensor", mask: "torch.Tensor", level: str, low: float | None,
                      high: float | None) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(weight [B, T], truncated [B, T] bool): rho per token or per sequence, clamped to [low, high]."""
    import torch

    rho = (log_rho.exp() if level == "token" else _per_sequence(log_rho, mask, "sequence").exp()).expand_as(log_rho)
    truncated = ((rho > high) if high is not None else torch.zeros_like(rho, dtype=torch.bool)) | \
        ((rho < low) if low is not None else torch.zeros_like(rho, dtype=torch.bool))
    return (rho if low is None and high is None else rho.clamp(min=low, max=high)), truncated


def rejected(log_rho: "torch.Tensor", mask: "torch.Tensor", level: str, low: float | None,
             high: float | None) -> "torch.Tensor":
    """Boolean [B, T]: tokens (token level) or whole sequences whose statistic lies outside [low, high]."""
    if level == "k3":
        return (_per_sequence(log_rho, mask, "k3") > high).expand_as(log_rho)
    stat = log_rho if level == "token" else _per_sequence(log_rho, mask, level)
    out = stat < -math.inf  # all False, of stat's shape
    if low is not None:
        out = out | (stat < math.log(low))
    if high is not None:
        out = out | (stat > math.log(high))
    return out.expand_as(log_rho)


@dataclass(frozen=True)
class Correction:
    """A correction bound to its settings for one run (default: none)."""

    is_level: str = "none"
    is_min: float | None = None
    is_max: float | None = None
    rs_level: str = "none"
    rs_min: float | None = None
    rs_max: float | None = None

    @classmethod
    def of(cls, group: Mapping[str, Any] | None) -> "Correction":
        g = dict(group or {})
        return cls(**{k: g[k] for k in ("is_level", "is_min", "is_max", "rs_level", "rs_min", "rs_max") if k in g})

    @property
    def active(self) -> bool:
        return self.is_level != "none" or self.rs_level != "none"

    def apply(self, old_logp: "torch.Tensor", behaviour_logp: "torch.Tensor",
              mask: "torch.Tensor") -> tuple["torch.Tensor", dict[str, "torch.Tensor"]]:
        """(detached per-token weight [B, T] to multiply the loss by, metric sums for `fractions`)."""
        import torch

        mask = mask.to(old_logp.dtype)
        log_rho = mismatch_log_ratio(old_logp, behaviour_logp, mask)
        weight, truncated = torch.ones_like(log_rho), torch.zeros_like(log_rho, dtype=torch.bool)
        if self.is_level != "none":
            weight, truncated = importance_weight(log_rho, mask, self.is_level, self.is_min, self.is_max)
        dropped = torch.zeros_like(truncated)
        if self.rs_level != "none":
            dropped = rejected(log_rho, mask, self.rs_level, self.rs_min, self.rs_max)
            weight = weight * (~dropped).to(weight.dtype)
        valid = mask > 0

        def total(x: "torch.Tensor") -> "torch.Tensor":
            return torch.where(valid, x.to(torch.float64), torch.zeros((), dtype=torch.float64)).sum()

        rho = log_rho.exp()
        sums = dict(zip(SUM_KEYS, (total(mask), total(rho), total(rho - log_rho - 1), total(truncated),
                                   total(dropped), total(weight))))
        return weight.detach(), sums


def fractions(sums: Mapping[str, float]) -> dict[str, float]:
    """The logged metrics from summed `apply` sums (micro-batches and processes added up); {} if none."""
    if "correction/tokens" not in sums:
        return {}
    tokens = max(float(sums["correction/tokens"]), 1.0)
    return {"correction/ratio_mean": float(sums["correction/ratio_sum"]) / tokens,
            "correction/k3": float(sums["correction/k3_sum"]) / tokens,
            "correction/truncated": float(sums["correction/truncated"]) / tokens,
            "correction/rejected": float(sums["correction/rejected"]) / tokens,
            "correction/weight_mean": float(sums["correction/weight_sum"]) / tokens}
