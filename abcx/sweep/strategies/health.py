"""Health stops, for any strategy (`health:` in the strategy block): the limits a run's SweepControl
callback (abcx.training.callbacks) stops it at, with its reason: entropy under a floor or the fraction of
zero-variance groups over a threshold for `steps` logged steps, any non-finite value at once."""
from __future__ import annotations

from typing import Any

from abcx.errors import UserError
from abcx.sweep.strategies.base import number, whole

HEALTH_KEYS = {"entropy_floor", "zero_std_frac", "steps", "nonfinite"}


def parse_health(raw: Any, where: str) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or set(raw) - HEALTH_KEYS:
        bad = sorted(set(raw) - HEALTH_KEYS)[0] if isinstance(raw, dict) else None
        raise UserError(f"{where}{'.' + bad if bad else ''}: health takes {', '.join(sorted(HEALTH_KEYS))}")
    for key in ("entropy_floor", "zero_std_frac"):
        if raw.get(key) is not None and not number(raw[key]):
            raise UserError(f"{where}.{key}={raw[key]!r} must be a number")
    if raw.get("zero_std_frac") is not None and not 0 <= raw["zero_std_frac"] <= 1:
        raise UserError(f"{where}.zero_std_frac={raw['zero_std_frac']!r} must lie in [0, 1]")
    steps = raw.get("steps", 5)
    if not whole(steps, 1):
        raise UserError(f"{where}.steps={steps!r} must be a whole number >= 1")
    if not isinstance(raw.get("nonfinite", True), bool):
        raise UserError(f"{where}.nonfinite must be true or false")
    return {"steps": steps, "nonfinite": raw.get("nonfinite", True),
            **{k: float(raw[k]) for k in ("entropy_floor", "zero_std_frac") if raw.get(k) is not None}}
