"""What every strategy shares: the parsed `strategy:` block (StrategySpec), what the supervisor starts
(Start), the decisions file, the ranking metric read from a run's own record, and the small checks
the parsers use."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abcx.errors import UserError
from abcx.record import RunRecord, now_iso, read_jsonl

DECISIONS_FILE = "decisions.jsonl"


@dataclass(frozen=True)
class StrategySpec:
    """The `strategy:` block, parsed (abcx.sweep.strategies.registry.parse); to_json gives it back."""
    name: str = "grid"
    health: dict = field(default_factory=dict)
    device_hours: float | None = None
    rungs: tuple[int, ...] = ()
    eta: int = 3
    metric: str = ""
    mode: str = "max"
    window: int = 5
    min_seeds: int = 2
    max_seeds: int = 8
    compare: tuple[str, ...] = ()
    alpha: float = 0.05
    space: dict = field(default_factory=dict)  # optuna: key -> {low, high, log} or {choices: [...]}
    trials: int = 0
    sampler: str = "TPESampler"
    sampler_seed: int | None = None
    pruner: str = "MedianPruner"


@dataclass
class Start:
    """What the supervisor starts: a run and where it pauses (None: train to the end)."""
    run: Any
    stop_at: int | None
    why: dict = field(default_factory=dict)


class Decisions:
    """results/sweeps/<name>/decisions.jsonl: one line per decision, with the numbers it rested on."""

    def __init__(self, sweep_dir: Path) -> None:
        self.path = Path(sweep_dir) / DECISIONS_FILE

    def add(self, event: str, **fields: Any) -> dict:
        row = {"time": now_iso(), "event": event, **fields}
        with open(self.path, "a") as f:
            f.write(json.dumps(row, sort_keys=True, default=str) + "\n")
            f.flush()
        return row

    def rows(self) -> list[dict]:
        return list(read_jsonl(self.path))


def number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def whole(value: Any, least: int) -> bool:
    """A whole number (not a bool) >= least."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def parse_metric(raw: dict, where: str) -> tuple[str, str, int]:
    """(metric, mode, window) of a ranking strategy; one UserError line naming the bad key."""
    metric = raw.get("metric")
    if not isinstance(metric, str) or not metric:
        raise UserError(f"{where}.metric is required: eval/<benchmark>/<avg@k|pass@k> or a training metric (reward)")
    mode = raw.get("mode", "max")
    if mode not in ("max", "min"):
        raise UserError(f"{where}.mode={mode!r}; valid: max, min")
    window = raw.get("window", 5)
    if not whole(window, 1):
        raise UserError(f"{where}.window={window!r} must be a whole number >= 1")
    return metric, mode, window


def metric_at(record: RunRecord, metric: str, step: int, window: int = 5) -> float | None:
    """The ranking metric of a run at a rung step, from its own record: the eval row at that step
    (eval/<benchmark>/<name>), or the mean of a training metric's last `window` logged values up to it."""
    if metric.startswith("eval/"):
        _, bench, name = metric.split("/")
        rows = [r for r in read_jsonl(record.eval_path) if r.get("step") == step and r.get("benchmark") == bench]
        value = (rows[-1].get("metrics") or {}).get(name) if rows else None
        return float(value) if number(value) else None
    values = [r[metric] for r in record.metrics() if isinstance(r.get("step"), int) and r["step"] <= step
              and number(r.get(metric))]
    return sum(values[-window:]) / len(values[-window:]) if values else None


class Queue:
    """A strategy that works through a list of runs (`todo`) and reacts to nothing when one ends."""

    todo: list

    def waiting(self) -> list[str]:
        return [r.run_id for r in self.todo]

    def ended(self, run, record: RunRecord) -> None:
        return None

    def finish(self) -> None:
        return None
