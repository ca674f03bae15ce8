"""Sweep files and command-line axes -> the list of points (each point = a list of plain overrides).

A sweep file `sweeps/<name>.yaml` (`strategy:`, optional, is abcx.sweep.strategies's block):

    name: epsilons
    description: ...
    fixed: [method=abc_grpo, train.max_steps=40]        # applied to every point
    grid: {method.eps3: [0.2, 0.28, .inf], seed: [0, 1]} # crossed
    points:                                             # optional; each crossed with the grid
      - [method=grpo]
      - [method=abc_grpo, method.eps3=0.4]

Command-line overrides use Hydra's grammar, parsed by Hydra's own OverridesParser: a sweep (`a,b`,
`range(..)`, `choice(..)`, `glob(..)` on a config group) is an axis that replaces the file's axis of
the same key or extends the grid; a plain override replaces an axis of its key, or joins `fixed`.
Within a point later sources win per key: fixed < points entry < grid < command line.
"""
from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from abcx.errors import UserError
from abcx.sweep.overrides import merge_overrides, override_key, value_text  # noqa: F401 - part of this module's API

SWEEPS_DIR = Path(os.environ.get("ABCX_SWEEPS_DIR", Path(__file__).resolve().parent.parent.parent / "sweeps"))
FILE_KEYS = {"name", "description", "fixed", "grid", "points", "strategy"}
HARD_MAX_POINTS = 100_000  # beyond --yes: planning takes ~2 ms a point


@dataclass(frozen=True)
class SweepSpec:
    name: str
    description: str = ""
    fixed: tuple[str, ...] = ()
    grid: dict[str, tuple[str, ...]] = field(default_factory=dict)  # key -> override values (as text)
    points: tuple[tuple[str, ...], ...] = ()
    cli: tuple[str, ...] = ()  # plain command-line overrides, applied last to every point
    source: str | None = None
    strategy: Any = None  # abcx.sweep.strategies.StrategySpec (default: grid)

    def __post_init__(self) -> None:
        if self.strategy is None:
            from abcx.sweep.strategies import StrategySpec

            object.__setattr__(self, "strategy", StrategySpec())


def available() -> list[str]:
    return sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml")) if SWEEPS_DIR.is_dir() else []


def _override_list(where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where} must be a list of overrides like [method=grpo, seed=1]")
    return tuple(value)


def load_sweep(name_or_path: str | os.PathLike) -> SweepSpec:
    """Read a sweep file: a path, or a name under sweeps/."""
    from abcx.paths import check_name
    from abcx.secrets import check_free_text
    from abcx.yaml_io import load_yaml

    text = str(name_or_path)
    check_free_text("the sweep's file name", text, into="the sweep's manifest")  # it names the sweep, it is kept
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or path.is_file()):
        check_name(text, "sweep")  # a bare name is a file under sweeps/, never a path
        path = SWEEPS_DIR / f"{text}.yaml"
    if not path.is_file():
        from abcx.errors import did_you_mean

        hint = did_you_mean(text, available())
        raise UserError(f"sweep {text!r} not found (no file {path}); {hint + ' ' if hint else ''}"
                        f"available: {', '.join(available()) or 'none'}")
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a sweep file is a mapping with keys {', '.join(sorted(FILE_KEYS))}")
    # Its name, description and strategy reach the manifest, the queue, job pickles and logs as written.
    check_free_text(str(path), data, into="the sweep's files (manifest, queue, jobs)")
    unknown = sorted(set(data) - FILE_KEYS)
    if unknown:
        from abcx.errors import did_you_mean

        hint = did_you_mean(unknown[0], sorted(FILE_KEYS))
        raise UserError(f"{path}: unknown key {unknown[0]!r}; {hint + ' ' if hint else ''}valid: {', '.join(sorted(FILE_KEYS))}")
    grid_in = data.get("grid") or {}
    if not isinstance(grid_in, dict):
        raise UserError(f"{path}: grid must map an override key to a list of values")
    grid = {}
    for key, values in grid_in.items():
        if not isinstance(values, list):
            raise UserError(f"{path}: grid.{key} must be a list of values, got {values!r}")
        grid[str(key)] = tuple(value_text(v) for v in values)
    points_in = data.get("points") or []
    if not isinstance(points_in, list):
        raise UserError(f"{path}: points must be a list of override lists")
    points = tuple(_override_list(f"{path}: points[{i}]", p) for i, p in enumerate(points_in))
    # The name is the sweep's folder under results_dir/sweeps/: one plain path component.
    name = data.get("name") or path.stem
    if isinstance(name, int) and not isinstance(name, bool):  # `name: 2024` is a plain name too
        name = str(name)
    if not isinstance(name, str):
        raise UserError(f"{path}: name must be a plain name (letters, digits, '.', '_', '-'), got {name!r}"[:300])
    check_name(name, f"{path}: sweep name")
    from abcx.sweep.strategies import parse as parse_strategy

    return SweepSpec(
        name=name, description=str(data.get("description") or ""),
        fixed=_override_list(f"{path}: fixed", data.get("fixed")), grid=grid, points=points, source=str(path),
        strategy=parse_strategy(data.get("strategy"), f"{path}: strategy"),
    )


def _parse(overrides: list[str] | tuple[str, ...]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides(overrides=list(overrides))
    except HydraException as err:
        raise UserError(f"cannot parse override: {' '.join(str(err).split())[:300]}") from None


def _axis_values(o) -> tuple[str, ...]:
    """The values of a sweep override as override text, expanded by Hydra."""
    from abcx.config.schema import GROUPS, group_options

    from hydra.core.override_parser.types import ValueType

    key = o.key_or_group
    if o.value_type == ValueType.GLOB_CHOICE_SWEEP:
        if key not in GROUPS:
            raise UserError(f"{o.input_line!r}: glob() selects config group options; {key} is not a group "
                            f"(groups: {', '.join(GROUPS)})")
        values = o.value().filter(group_options(key))
        if not values:
            raise UserError(f"{o.input_line!r} matches no {key} option; options: {', '.join(group_options(key))}")
        return tuple(values)
    try:
        return tuple(o.sweep_string_iterator())
    except Exception as err:  # noqa: BLE001 - Hydra raises several types for unsupported sweeps
        raise UserError(f"{o.input_line!r}: cannot expand this sweep ({' '.join(str(err).split())[:200]})") from None


def with_cli(spec: SweepSpec, overrides: list[str] | tuple[str, ...]) -> SweepSpec:
    """Apply command-line overrides: sweeps become (or replace) grid axes, plain ones are applied last."""
    grid = dict(spec.grid)
    cli: list[str] = []
    for o in _parse(overrides):
        key = o.key_or_group
        if o.is_sweep_override():
            if o.is_delete():
                raise UserError(f"{o.input_line!r}: a deletion cannot be swept")
            values = _axis_values(o)
            grid = {k: v for k, v in grid.items() if override_key(k) != key}
            grid[o.get_key_element()] = values
        elif key in {override_key(k) for k in grid}:
            # A single value on the command line replaces the file's axis of that key.
            axis = next(k for k in grid if override_key(k) == key)
            grid[axis] = (o.get_value_element_as_str(),)
        else:
            cli.append(o.input_line)
    return replace(spec, grid=grid, cli=tuple(cli))


def expand(spec: SweepSpec) -> list[tuple[str, ...]]:
    """Every point's plain overrides, in a stable order (points outer, grid axes in file order)."""
    if not spec.grid and not spec.points:
        raise UserError(f"sweep {spec.name!r} is empty: give it a grid (key: [values]) or points")
    empty = [k for k, v in spec.grid.items() if not v]
    if empty:
        raise UserError(f"sweep {spec.name!r}: grid axis {empty[0]!r} has no values")
    total = max(1, len(spec.points)) * math.prod(len(v) for v in spec.grid.values())
    if total > HARD_MAX_POINTS:  # counted before expanding: a grid that large would not finish planning
        raise UserError(f"sweep {spec.name!r} has {total} points; abcx plans at most {HARD_MAX_POINTS}")
    axes = [[f"{k}={v}" for v in values] for k, values in spec.grid.items()]
    out = []
    for extra in spec.points or ((),):
        for combo in itertools.product(*axes):
            merged: dict[str, str] = {}
            for o in (*spec.fixed, *extra, *combo, *spec.cli):
                merged.pop(override_key(o), None)  # re-insert so the winner keeps its latest position
                merged[override_key(o)] = o
            out.append(tuple(merged.values()))
    return out


def planned_points(sweep: SweepSpec) -> list[tuple[str, ...]]:
    """The points a sweep plans under its strategy (abcx.sweep.strategies.points_of): its grid and
    points, the seeds a seeds strategy adds, or the one base point an optuna search starts from."""
    from abcx.sweep.strategies import StrategySpec, of, points_of

    strategy = sweep.strategy or StrategySpec()
    explicit = bool(sweep.grid or sweep.points)
    # A search may start from its fixed overrides alone; any other sweep without points is empty (expand says so).
    points = expand(sweep) if explicit or not of(strategy).makes_trials else []
    return points_of(strategy, points, merge_overrides(sweep.fixed, sweep.cli), explicit,
                     f"{sweep.source or sweep.name}: strategy")
