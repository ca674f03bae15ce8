"""Other loggers' metric names mapped onto abcx's, from one documented, user-extensible YAML map.

The map (abcx/report/metric_map.yaml; `--metric-map FILE` adds or overrides entries) has two parts:
`rename` (a logged name is abcx's metric under another name: TRL's `clip_ratio/high_mean` is Q1) and
`derive` (abcx's metric is the product of logged ones: a fork's `clip_ratio/ppo_style` times its share
with A > 0 is Q1). It is applied to each foreign source's RunSet after reading, so readers stay
literal and abcx's own records are never touched. A quadrant no entry yields stays missing: unknown,
never 0.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import os
from pathlib import Path

from abcx.errors import UserError

DEFAULT_MAP = Path(__file__).with_name("metric_map.yaml")
SECTIONS = ("rename", "derive", "percent_like")


@dataclasses.dataclass(frozen=True)
class MetricMap:
    rename: dict
    derive: dict
    percent_like: tuple
    files: tuple

    def percent(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.percent_like)


def _check(data, path) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--metric-map {path}: expected a mapping with keys {', '.join(SECTIONS)}")
    for key, value in data.items():
        if key not in SECTIONS:
            raise UserError(f"--metric-map {path}: unknown section {key!r}; valid: {', '.join(SECTIONS)}")
        if key == "percent_like":
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise UserError(f"--metric-map {path}: percent_like must be a list of name patterns")
            continue
        if not isinstance(value, dict):
            raise UserError(f"--metric-map {path}: {key} must map logged names to abcx names")
        for name, target in value.items():
            ok = target is None or (isinstance(target, str) if key == "rename" else
                                    isinstance(target, list) and target and all(isinstance(t, str) for t in target))
            if not isinstance(name, str) or not ok:
                want = "an abcx metric name" if key == "rename" else "a list of logged metric names (their product)"
                raise UserError(f"--metric-map {path}: {key}.{name}={target!r}; valid: {want}, or null to remove it")
    return data


def load(extra: str | os.PathLike | None = None) -> MetricMap:
    """The package's map, then the user's file on top (an entry set to null removes the default)."""
    from abcx.yaml_io import load_yaml

    rename, derive, percent, files = {}, {}, [], []
    for path in [DEFAULT_MAP, *([Path(extra)] if extra else [])]:
        if not path.is_file():
            raise UserError(f"--metric-map {path}: no such file")
        data = _check(load_yaml(path), path)
        for section, target in (("rename", rename), ("derive", derive)):
            for name, value in (data.get(section) or {}).items():
                if value is None:
                    target.pop(name, None)
                else:
                    target[name] = value if section == "rename" else tuple(value)
        percent.extend(data.get("percent_like") or [])
        files.append(str(path))
    return MetricMap(rename, derive, tuple(percent), tuple(files))


def apply(rs, mmap: MetricMap):
    """A RunSet with the map applied to its history: renamed columns merged into abcx's (a value
    abcx's name already holds wins), derived ones added where the source logged every factor."""
    wide = rs.wide.copy()
    for name in [c for c in wide.columns if c in mmap.rename]:
        target = mmap.rename[name]
        wide[target] = wide[target].fillna(wide[name]) if target in wide.columns else wide[name]
        wide = wide.drop(columns=name)
    notes = []
    for target, factors in mmap.derive.items():
        if not all(f in wide.columns for f in factors):
            continue
        product = None
        for factor in factors:
            values = wide[factor]
            if mmap.percent(factor):
                as_percent = values.groupby(wide["run_id"], observed=True).transform("max") > 1
                values = values.where(~as_percent, values / 100.0)
                if as_percent.any():
                    notes.append(f"{factor}: values above 1, read as percent")
            product = values if product is None else product * values
        wide[target] = wide[target].fillna(product) if target in wide.columns else product
    return dataclasses.replace(rs, wide=wide, notes=[*rs.notes, *dict.fromkeys(notes)])
