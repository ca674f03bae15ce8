"""What every strategy shares: the parsed `strategy:` block (StrategySpec), what the supervisor starts
(Start), the decisions file, the ranking metric read from a run's own record, and the small checks
the parsers use."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abcx.errors import UserError
from abcx.record import RunRecord, fault_occurrence, now_iso, read_jsonl

DECISIONS_FILE = "decisions.jsonl"
SWEEP_FAILED = "failed"  # the decision of a sweep that cannot go on


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
    """results/sweeps/<name>/decisions.jsonl: one line per decision, with the numbers it rested on.

    The file is what a strategy has decided, so a restarted supervisor rebuilds its state from it and
    the run records (never from "anything not finished is pending"): a decision is written before it
    is acted on (a promotion before its job starts, a cut before the run's record says so), and a
    strategy that finds one not yet acted on finishes acting on it instead of deciding again."""

    def __init__(self, sweep_dir: Path) -> None:
        self.path = Path(sweep_dir) / DECISIONS_FILE

    def add(self, event: str, **fields: Any) -> dict:
        row = {"time": now_iso(), "event": event, **fields}
        with open(self.path, "a") as f:
            f.write(json.dumps(row, sort_keys=True, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        fault_occurrence(f"decision.{event}")  # tests kill the supervisor here (abcx.record.faults)
        return row

    def rows(self, *events: str) -> list[dict]:
        """Every decision (only those of `events`, if given), oldest first."""
        return [r for r in read_jsonl(self.path) if not events or r.get("event") in events]

    def fail(self, reason: str) -> None:
        """The sweep cannot go on (its metric is not logged): the last decision says why."""
        self.add(SWEEP_FAILED, reason=reason)

    def failure(self) -> str | None:
        """Why the sweep could not go on, while that is its last decision (a later rerun may go on)."""
        rows = self.rows()
        return rows[-1].get("reason") if rows and rows[-1].get("event") == SWEEP_FAILED else None

    def said(self, event: str, **match: Any) -> dict | None:
        """The latest decision of `event` whose fields equal `match` (None: never decided)."""
        return next((r for r in reversed(self.rows(event)) if all(r.get(k) == v for k, v in match.items())), None)


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


class MetricMissing(UserError):
    """The runs do not log the strategy's metric (found at the first rung that needs it): the sweep fails."""


def valid_metrics(cfg) -> list[str]:
    """The ranking metrics a run of this config can log: eval/<benchmark>/<name> for its benchmarks and
    eval.n (what abcx.evaluation writes), then the training metrics (abcx.training.metric_names)."""
    from abcx.evaluation.metrics import logged_names
    from abcx.training.metric_names import described

    evals = [f"eval/{bench}/{name}" for bench in cfg.eval.benchmarks for name in logged_names(cfg.eval.n)]
    return evals + described()


def check_metric(spec: StrategySpec, planned: list, where: str) -> None:
    """The metric is one every planned run can log; else one line with the valid names (and the closest)."""
    import difflib

    from abcx.training.metric_names import may_log

    for run in planned:
        valid = valid_metrics(run.cfg)
        if spec.metric in valid or (not spec.metric.startswith("eval/") and may_log(spec.metric)):
            continue
        close = difflib.get_close_matches(spec.metric, valid, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        whose = "the runs" if run is planned[0] else f"point {run.index + 1} [{' '.join(run.overrides)}]"
        raise UserError(f"{where}.metric={spec.metric} is not a metric {whose} log{'' if run is planned[0] else 's'}"
                        f"{hint}; valid: {', '.join(valid)}")


def require_metric(record: RunRecord, metric: str, step: int) -> None:
    """MetricMissing unless the run logged `metric` by `step` (a non-finite value counts: it is logged).
    The static check (check_metric) accepts a name some settings log; this is where a sweep learns a
    run did not, at the first rung that needed it, and says what the run did log."""
    if metric.startswith("eval/"):
        rows = [r for r in read_jsonl(record.eval_path) if isinstance(r.get("metrics"), dict) and r.get("step") == step]
        logged = sorted({f"eval/{r.get('benchmark')}/{name}" for r in rows for name in r["metrics"]})
        where = f"at step {step}"
    else:
        rows = [r for r in record.metrics() if isinstance(r.get("step"), int) and r["step"] <= step]
        logged = sorted({k for r in rows for k in r} - {"step", "time"})
        where = f"up to step {step}"
    if metric not in logged:
        raise MetricMissing(f"strategy.metric={metric}: run {record.run_id} logged no {metric} {where}; it logged: "
                            f"{', '.join(logged) or 'nothing'}")


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
