"""The one registry of sweep strategies: each entry names its keys (the sweep file's spelling and the
StrategySpec field each fills), its parser, its check on the planned points and its runner. The
validation (unknown keys), StrategySpec.to_json and `describe()` (the README's table) all derive from it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from abcx.errors import UserError
from abcx.record import read_json
from abcx.sweep.strategies.base import Decisions, StrategySpec, check_metric
from abcx.sweep.strategies.budget import parse_budget
from abcx.sweep.strategies.grid import Grid, parse_grid
from abcx.sweep.strategies.halving import Halving, check_rungs, parse_halving, rung_status, rung_table
from abcx.sweep.strategies.halving import undecided as halving_undecided
from abcx.sweep.strategies.health import parse_health
from abcx.sweep.strategies.search import Optuna, check_space, parse_optuna
from abcx.sweep.strategies.seeds import Seeds, check_seeds, pair_status, pair_table, parse_seeds, seed_points
from abcx.sweep.strategies.seeds import undecided as seeds_undecided

COMMON_KEYS = ("name", "health", "budget")


def _grid_points(spec: StrategySpec, points: list[tuple[str, ...]], base: tuple[str, ...], explicit: bool,
                 where: str) -> list[tuple[str, ...]]:
    return points


def _optuna_points(spec: StrategySpec, points: list[tuple[str, ...]], base: tuple[str, ...], explicit: bool,
                   where: str) -> list[tuple[str, ...]]:
    """An optuna search starts from one base point (the fixed overrides, or the one point/grid cell given)."""
    points = points if explicit else [base]
    if len(points) != 1:
        raise UserError(f"{where}: optuna searches space from one base point; the sweep has {len(points)} "
                        f"(put the shared settings in fixed, the searched ones in space)")
    return points


@dataclass(frozen=True)
class Strategy:
    """One strategy, declared once: what the sweep file may say, how it is parsed and checked, what runs
    it, and what the rest of abcx asks of it (so nothing outside this package compares its name)."""
    summary: str
    fields: tuple[tuple[str, str], ...]  # (key in the sweep file, StrategySpec attribute), in the file's order
    parse: Callable[[dict, StrategySpec, str], StrategySpec]
    runner: type
    check: Callable[[StrategySpec, list, str], None] | None = None
    # (spec, the sweep's expanded points, its base point, whether points/grid were given, where) -> planned points
    points: Callable[..., list[tuple[str, ...]]] = _grid_points
    makes_trials: bool = False      # the sweep's point is a template; the strategy plans the runs (optuna)
    supervised: bool = True         # False: without a budget, a backend may run the points as job arrays
    optional: tuple[str, ...] = ()  # fields written as null when empty (to_json)
    # (spec, sweep_dir, runs, fmt) -> (name, title, rows, shown, notes): what it decided, for the report
    table: Callable[..., tuple | None] | None = None
    # (spec, sweep_dir, runs) -> lines for `abcx sweep status`
    status_lines: Callable[..., list[str]] | None = None
    plots_rungs: bool = False       # the report's `rungs` figure applies
    # (spec, decisions, planned) -> whether a supervisor has work with no run to submit (a decision
    # a killed supervisor left unfinished, a run waiting at a rung); None: never
    undecided: Callable[..., bool] | None = None

    @property
    def keys(self) -> set[str]:
        return {key for key, _attr in self.fields}


def _check_optuna(spec: StrategySpec, planned: list, where: str) -> None:
    check_space(spec, planned, where)
    if spec.rungs:
        check_rungs(spec, planned, where)


RANKED = (("metric", "metric"), ("mode", "mode"), ("window", "window"))
STRATEGIES: dict[str, Strategy] = {
    "grid": Strategy("every point to the end, in order (the default)", (), parse_grid, Grid, supervised=False),
    "halving": Strategy(
        "asynchronous successive halving: a run pauses at each rung; the top 1/eta go on, the rest stay `stopped`",
        (("rungs", "rungs"), ("eta", "eta"), *RANKED), parse_halving, Halving, check_rungs,
        table=rung_table, status_lines=rung_status, plots_rungs=True, undecided=halving_undecided),
    "seeds": Strategy(
        "sequential seeds: a seed is added to a compared pair while the paired t-interval of its difference covers 0",
        (("min", "min_seeds"), ("max", "max_seeds"), ("compare", "compare"), ("metric", "metric"),
         ("alpha", "alpha"), ("window", "window")), parse_seeds, Seeds, check_seeds, points=seed_points,
        table=pair_table, status_lines=pair_status, undecided=seeds_undecided),
    "optuna": Strategy(
        "an optuna study (any sampler) over `space`, in SQLite beside the sweep; optional pruning at rungs",
        (("space", "space"), ("trials", "trials"), ("sampler", "sampler"), ("sampler_seed", "sampler_seed"),
         ("pruner", "pruner"), ("rungs", "rungs"), *RANKED), parse_optuna, Optuna, _check_optuna,
        points=_optuna_points, makes_trials=True, optional=("rungs",)),
}


def of(spec: StrategySpec) -> Strategy:
    """The registry entry of a parsed block: what callers ask instead of comparing names."""
    return STRATEGIES[spec.name]


def parse(raw: Any, where: str = "strategy") -> StrategySpec:
    """The `strategy:` block (or its to_json) -> StrategySpec; one UserError line naming the bad key."""
    if raw is None:
        return StrategySpec()
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a mapping with name: {' | '.join(STRATEGIES)}")
    name = raw.get("name", "grid")
    if name not in STRATEGIES:
        raise UserError(f"{where}.name={name!r} is not a strategy; valid: {', '.join(STRATEGIES)}")
    allowed = set(COMMON_KEYS) | STRATEGIES[name].keys
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise UserError(f"{where}.{unknown[0]} is not a key of strategy {name}; valid: {', '.join(sorted(allowed))}")
    base = StrategySpec(name=name, health=parse_health(raw.get("health"), f"{where}.health"),
                        device_hours=parse_budget(raw.get("budget"), f"{where}.budget"))
    return STRATEGIES[name].parse(raw, base, where)


def to_json(spec: StrategySpec) -> dict:
    """The block as a sweep file would give it: the common keys, then the strategy's own fields."""
    out: dict = {"name": spec.name, "health": spec.health or None,
                 "budget": None if spec.device_hours is None else {"device_hours": spec.device_hours}}
    for key, attr in STRATEGIES[spec.name].fields:
        value = getattr(spec, attr)
        out[key] = list(value) if isinstance(value, tuple) else value
    for key in STRATEGIES[spec.name].optional:  # optional there (optuna's rungs: no pruning)
        if not out.get(key):
            out[key] = None
    return out


def check(spec: StrategySpec, planned: list, where: str = "strategy") -> None:
    """What the planned points must allow for the strategy (before anything is written): a ranking
    metric they log (base.check_metric), then the strategy's own check."""
    if spec.metric:  # a ranking strategy: its metric is one the runs log
        check_metric(spec, planned, where)
    checker = STRATEGIES[spec.name].check
    if checker is not None:
        checker(spec, planned, where)


def undecided(spec: StrategySpec, sweep_dir: Path, planned: list) -> bool:
    """Whether the sweep's strategy has work left although no run needs submitting (a rerun after a
    supervisor was killed between a decision and acting on it): then a supervisor runs anyway."""
    ask = STRATEGIES[spec.name].undecided
    return bool(ask and ask(spec, Decisions(sweep_dir), planned))


def make(spec: StrategySpec, planned: list, decisions: Decisions, todo: list | None = None, plan=None):
    """The strategy's runner; `plan(points, start_index)` plans runs it adds (seeds, trials)."""
    return STRATEGIES[spec.name].runner(spec, planned, decisions, todo, plan)


def points_of(spec: StrategySpec, points: list[tuple[str, ...]], base: tuple[str, ...], explicit: bool,
              where: str) -> list[tuple[str, ...]]:
    """The points a sweep plans under its strategy, from its expanded points (abcx.sweep.spec.planned_points):
    the grid's own, each with seed=0..min-1 (seeds), or the one base point of a search (optuna)."""
    return STRATEGIES[spec.name].points(spec, points, base, explicit, where)


def load_strategy(sweep_dir: Path) -> StrategySpec:
    """The strategy a sweep was last run with (its queue file), grid when unknown."""
    queue = read_json(Path(sweep_dir) / "queue.json") or {}
    try:
        return parse(queue.get("strategy"))
    except UserError:
        return StrategySpec()


def describe() -> str:
    """The strategies as a markdown table (README's, kept equal by tests/test_sweep_strategies.py)."""
    rows = ["| strategy | keys (beside name, health, budget) | what it does |", "|---|---|---|"]
    for name, strategy in STRATEGIES.items():
        keys = ", ".join(f"`{key}`" for key, _attr in strategy.fields) or "-"
        rows.append(f"| `{name}` | {keys} | {strategy.summary} |")
    return "\n".join(rows)
