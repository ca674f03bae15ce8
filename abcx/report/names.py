"""Logged keys that are metrics, as readers see them. Other loggers' names are mapped onto abcx's
afterwards, by the user-extensible map of abcx/report/metric_map.py."""
from __future__ import annotations

# Bookkeeping keys that are not metrics.
NOT_METRICS = {"step", "time", "epoch_time", "global_step"}


def canonical(name: str) -> str | None:
    """The metric name of a logged key, or None when the key is bookkeeping, not a metric.

    HF's W&B callback prefixes training logs with `train/`; W&B's own keys start with `_`.
    """
    if name.startswith("_") or name in NOT_METRICS or name.startswith("system/"):
        return None
    if name.startswith("train/"):
        name = name[len("train/"):]
    return name
