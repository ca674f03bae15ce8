"""Hydra override text as sweeps handle it: the key an override sets, later overrides winning per key,
and a YAML value written back as override text. Shared by the sweep file's expansion (abcx.sweep.spec)
and the strategies that add points of their own (seeds, trials)."""
from __future__ import annotations

import math
from typing import Any


def value_text(value: Any) -> str:
    """A YAML value as Hydra override text (YAML's .inf -> inf, None -> null, True -> true)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if math.isnan(value):
            return "nan"
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{value_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def override_key(override: str) -> str:
    """The key an override sets (`+train.extra.x=1` -> `train.extra.x`), used to let later ones win."""
    head = override.split("=", 1)[0]
    return head.lstrip("+~").split("@", 1)[0]


def merge_overrides(*sources) -> tuple[str, ...]:
    """Overrides from several sources, later ones winning per key (each winner at its latest position)."""
    merged: dict[str, str] = {}
    for o in (o for source in sources for o in source):
        merged.pop(override_key(o), None)
        merged[override_key(o)] = o
    return tuple(merged.values())
