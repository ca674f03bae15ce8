"""The device-hour budget, for any strategy (`budget: {device_hours: X}`): no new work starts once
the sweep's runs have spent it, counted from the backend's accounting (sacct) or the run records."""
from __future__ import annotations

from typing import Any

from abcx.errors import UserError
from abcx.record import RunRecord
from abcx.sweep.strategies.base import StrategySpec, number

BUDGET_KEYS = {"device_hours"}


def parse_budget(raw: Any, where: str) -> float | None:
    budget = raw or {}
    if not isinstance(budget, dict) or set(budget) - BUDGET_KEYS:
        raise UserError(f"{where} must be {{device_hours: <hours>}}")
    hours = budget.get("device_hours")
    if hours is not None and (not number(hours) or hours <= 0):
        raise UserError(f"{where}.device_hours={hours!r} must be a positive number of hours")
    return None if hours is None else float(hours)


def spent_device_hours(records: list[RunRecord], usage: dict[str, float] | None = None) -> float:
    """Device-hours a sweep's runs have used: the backend's accounting per job where it has one
    (sacct), else the records' own (status.json `device_hours`)."""
    total = 0.0
    for record in records:
        status = record.status()
        job = str(status.get("job_id") or "")
        if usage and job in usage:
            total += usage[job]
        else:
            total += float(status.get("device_hours") or 0.0)
    return total


def budget_line(spec: StrategySpec, spent: float) -> str:
    if spec.device_hours is None:
        return ""
    left = max(0.0, spec.device_hours - spent)
    return f"budget {spec.device_hours:g} device-hours: {spent:.4f} spent, {left:.4f} left"
