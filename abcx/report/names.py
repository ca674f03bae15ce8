"""Metric names from other loggers mapped onto abcx's canonical names (docs/architecture.md)."""
from __future__ import annotations

# TRL logs these under other names; everything else (rewards/<fn>/mean, clip_ratio/*, reward,
# entropy, ...) already is the abcx name or is kept as TRL wrote it.
TRL_TO_ABCX = {
    "completions/mean_length": "completion_length",
}
# Bookkeeping keys that are not metrics.
NOT_METRICS = {"step", "time", "epoch_time", "global_step"}


def canonical(name: str) -> str | None:
    """abcx name for a logged key, or None when the key is bookkeeping, not a metric.

    HF's W&B callback prefixes training logs with `train/`; W&B's own keys start with `_`.
    """
    if name.startswith("_") or name in NOT_METRICS or name.startswith("system/"):
        return None
    if name.startswith("train/"):
        name = name[len("train/"):]
    return TRL_TO_ABCX.get(name, name)
