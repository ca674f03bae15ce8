"""Other loggers' metric names mapped onto abcx's, from one documented, user-extensible YAML map.

The map (abcx/report/metric_map.yaml; `--metric-map FILE` adds or overrides entries) has three parts:
`rename` (a logged name is abcx's metric under another name: TRL's `completions/mean_length`),
`derive` (abcx's metric is the product of logged ones) and `layouts`, where a logger keeps its clip
fractions (TRL's `clip_ratio/high_mean` is Q1; a fork's `clip_ratio/ppo_style` times its share with
A > 0 is Q1). The same name can mean different things in two layouts (that fork's `high_mean` counts
both signs of A), so a run's quadrants come from ONE layout: the first in the map's order that the run
logs, or the one `use_layout: {GLOB: LAYOUT}` names for runs whose path or id matches. The map is
applied to each foreign source's RunSet after reading, so readers stay literal and abcx's own records
are never touched; each run's `quadrant_source` says where its quadrants came from. A quadrant no
entry yields stays missing: unknown, never 0.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import os
from pathlib import Path

from abcx.errors import UserError

DEFAULT_MAP = Path(__file__).with_name("metric_map.yaml")
SECTIONS = ("rename", "derive", "percent_like", "layouts", "use_layout")
QUADRANTS = ("clip/q1", "clip/q2", "clip/q3", "clip/q4")
RESERVED = ("step", "run_id")  # the history's key columns: no metric is renamed onto them, or from them
OWN = "abcx"  # the layout of a run that logs abcx's own quadrant names
NONE = "none"  # what a run that logs no layout's fields shows as its quadrant source
# An abcx record written before Q3/Q4 left out A = 0 (its meta.json has no "quadrants"; abcx.methods.stats).
OWN_WITH_ZERO_ADV = "abcx (A=0 in Q3/Q4)"


@dataclasses.dataclass(frozen=True)
class MetricMap:
    rename: dict
    derive: dict
    percent_like: tuple
    layouts: dict  # name -> {abcx name: (logged names whose product it is)}, in the order tried
    use_layout: tuple  # ((glob, layout name), ...): the first that matches a run names its layout
    files: tuple

    def percent(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.percent_like)

    def known_layouts(self) -> tuple:
        return (*self.layouts, OWN)


def _check_entry(section: str, name, target, path) -> None:
    ok = target is None or (isinstance(target, str) if section == "rename" else
                            isinstance(target, list) and target and all(isinstance(t, str) for t in target))
    if not isinstance(name, str) or not ok:
        want = "an abcx metric name" if section == "rename" else "a list of logged metric names (their product)"
        raise UserError(f"--metric-map {path}: {section}.{name}={target!r}; valid: {want}, or null to remove it")
    abcx_name = target if section == "rename" else name
    for given in (name, abcx_name):
        if given in RESERVED:
            raise UserError(f"--metric-map {path}: {section}.{name}: {given!r} is a column of every run's history, "
                            f"not a metric; valid: a metric name other than {', '.join(RESERVED)}")
    if abcx_name in QUADRANTS:
        raise UserError(f"--metric-map {path}: {section}.{name}: Q1..Q4 come from one layout per run; put it under "
                        f"layouts (e.g. layouts: {{mine: {{{abcx_name}: [{name if section == 'rename' else '...'}]}}}})")


def _check_layouts(layouts, path) -> None:
    if not isinstance(layouts, dict):
        raise UserError(f"--metric-map {path}: layouts must map layout names to {{abcx name: [logged names]}}")
    for name, entries in layouts.items():
        if name in (OWN, NONE):
            raise UserError(f"--metric-map {path}: layouts.{name}: {name!r} is reserved; give the layout another name")
        if entries is not None and not isinstance(entries, dict):
            raise UserError(f"--metric-map {path}: layouts.{name} must map abcx names to [logged names], or be null")
        for target, fields in (entries or {}).items():
            if not isinstance(target, str) or not (fields is None or isinstance(fields, str) or (
                    isinstance(fields, list) and fields and all(isinstance(f, str) for f in fields))):
                raise UserError(f"--metric-map {path}: layouts.{name}.{target}={fields!r}; valid: a list of logged "
                                f"metric names (their product), or null to remove it")
            named = [target, *([fields] if isinstance(fields, str) else fields or [])]
            if any(n in RESERVED for n in named):
                raise UserError(f"--metric-map {path}: layouts.{name}.{target}: {', '.join(RESERVED)} are columns of "
                                f"every run's history, not metrics; valid: metric names")


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
        elif key == "layouts":
            _check_layouts(value, path)
        elif key == "use_layout":
            if not isinstance(value, dict) or not all(isinstance(x, str) for kv in value.items() for x in kv):
                raise UserError(f"--metric-map {path}: use_layout must map run globs to layout names")
        elif not isinstance(value or {}, dict):
            raise UserError(f"--metric-map {path}: {key} must map logged names to abcx names")
        else:
            for name, target in (value or {}).items():
                _check_entry(key, name, target, path)
    return data


def _merge_layouts(layouts: dict, given: dict) -> dict:
    """A file's layouts over the ones so far: an existing layout keeps its place in the order (its
    entries updated, null removes one; the layout itself null: removed), new ones are tried first."""
    new, updated = {}, dict(layouts)
    for name, entries in given.items():
        if entries is None:
            updated.pop(name, None)
            continue
        layout = dict(updated.get(name, {}))
        for target, fields in entries.items():
            if fields is None:
                layout.pop(target, None)
            else:
                layout[target] = (fields,) if isinstance(fields, str) else tuple(fields)
        (updated if name in updated else new)[name] = layout
    return {**new, **updated}


def load(extra: str | os.PathLike | None = None) -> MetricMap:
    """The package's map, then the user's file on top (an entry set to null removes the default)."""
    from abcx.yaml_io import load_yaml

    rename, derive, percent, layouts, use, files = {}, {}, [], {}, {}, []
    for path in [DEFAULT_MAP, *([Path(extra)] if extra else [])]:
        if not os.path.lexists(path):
            raise UserError(f"--metric-map {path}: no such file")
        try:
            data = load_yaml(path)  # a folder or a device is one line too
        except UserError as err:
            raise UserError(f"--metric-map {err}; valid: a YAML file with sections {', '.join(SECTIONS)}") from None
        from abcx.secrets import check_free_text

        check_free_text(f"--metric-map {path}", data, into="the report")  # its names are printed as given
        data = _check(data, path)
        for section, target in (("rename", rename), ("derive", derive)):
            for name, value in (data.get(section) or {}).items():
                if value is None:
                    target.pop(name, None)
                else:
                    target[name] = value if section == "rename" else tuple(value)
        layouts = _merge_layouts(layouts, data.get("layouts") or {})
        percent.extend(data.get("percent_like") or [])
        use.update(data.get("use_layout") or {})
        files.append(str(path))
    mmap = MetricMap(rename, derive, tuple(percent), layouts, tuple(use.items()), tuple(files))
    for pattern, name in mmap.use_layout:
        if name not in mmap.known_layouts():
            raise UserError(f"--metric-map {files[-1]}: use_layout.{pattern}={name!r} is not a layout; "
                            f"known: {', '.join(mmap.known_layouts())}")
    return mmap


def matches(pattern: str, run_id: str, path: str) -> bool:
    """A use_layout glob against a run, as --label's globs match (its id, path or folder name)."""
    return any(fnmatch.fnmatchcase(s, pattern) for s in (run_id, path, os.path.basename(path)) if s)


def _product(wide, factors, mmap: MetricMap, notes: list):
    product = None
    for factor in factors:
        values = wide[factor]
        if len(factors) > 1 and mmap.percent(factor):
            as_percent = values.groupby(wide["run_id"], observed=True).transform("max") > 1
            values = values.where(~as_percent, values / 100.0)
            if as_percent.any():
                notes.append(f"{factor}: values above 1, read as percent")
        product = values if product is None else product * values
    return product


def _rename_and_derive(wide, mmap: MetricMap, notes: list):
    """Renamed columns merged into abcx's (a value abcx's name already holds wins), derived ones added
    where the source logged every factor."""
    for name in [c for c in wide.columns if c in mmap.rename]:
        target = mmap.rename[name]
        wide[target] = wide[target].fillna(wide[name]) if target in wide.columns else wide[name]
        wide = wide.drop(columns=name)
    for target, factors in mmap.derive.items():
        if all(f in wide.columns for f in factors):
            product = _product(wide, factors, mmap, notes)
            wide[target] = wide[target].fillna(product) if target in wide.columns else product
    return wide


def _logs(layout: dict, logged: set) -> bool:
    return any(all(f in logged for f in fields) for fields in layout.values())


def choose_layouts(runs, wide, mmap: MetricMap) -> tuple[dict, list]:
    """({run_id: quadrant source}, notes): the layout each run's quadrants come from."""
    cols = [c for c in wide.columns if c not in ("run_id", "step")]
    logged = wide[cols].notna().groupby(wide["run_id"], observed=True).any()
    chosen, also, notes = {}, {}, []
    for rid, path in zip(runs.index.astype(str), runs["path"].astype(str)):
        has = set(logged.columns[logged.loc[rid].to_numpy()]) if rid in logged.index else set()
        named = next((name for pattern, name in mmap.use_layout if matches(pattern, rid, path)), None)
        if named:
            chosen[rid] = f"{named} (--metric-map)"
            if named != OWN and not _logs(mmap.layouts[named], has):
                notes.append(f"{rid}: use_layout names {named}, but the run logs none of its fields")
            continue
        fits = [name for name, layout in mmap.layouts.items() if _logs(layout, has)]
        chosen[rid] = OWN if has & set(QUADRANTS) else (fits[0] if fits else NONE)
        if len(fits) > 1 or (fits and chosen[rid] == OWN):
            also.setdefault((chosen[rid], tuple(f for f in fits if f != chosen[rid])), []).append(rid)
    for (name, others), rids in also.items():
        fields = sorted({f for o in others for fs in mmap.layouts[o].values() for f in fs} & set(cols))
        notes.append(f"{len(rids)} run(s) log more than one quadrant layout: quadrants from {name} only; the fields "
                     f"of {', '.join(others)} keep their logged names ({', '.join(fields)})")
    return chosen, notes


def _apply_layouts(wide, chosen: dict, mmap: MetricMap, notes: list):
    """Each run's quadrants from its layout alone: on its rows, every quadrant column holds that
    layout's value or nothing. A single logged name is renamed (cleared on those rows)."""
    import numpy as np

    by_layout: dict[str, list] = {}
    for rid, source in chosen.items():
        by_layout.setdefault(source.removesuffix(" (--metric-map)"), []).append(rid)
    touched = set()
    for name, rids in by_layout.items():
        if name in (OWN, NONE):
            continue
        rows = wide["run_id"].astype(str).isin(rids).to_numpy()
        layout, renamed = mmap.layouts[name], []
        for target in dict.fromkeys([*QUADRANTS, *layout]):
            fields = layout.get(target, ())
            value = _product(wide, fields, mmap, notes) if fields and all(f in wide.columns for f in fields) \
                else np.nan
            if target in wide.columns or not np.isscalar(value):
                wide[target] = (wide[target] if target in wide.columns else np.nan)
                wide[target] = wide[target].where(~rows, value)
                touched.add(target)
            if len(fields) == 1 and fields[0] in wide.columns:
                renamed.append(fields[0])
        for field in renamed:
            wide[field] = wide[field].where(~rows)
            touched.add(field)
    return wide.drop(columns=[c for c in touched if wide[c].isna().all()])


def apply(rs, mmap: MetricMap):
    """A RunSet with the map applied to its history and `quadrant_source` set for each run."""
    wide, notes = rs.wide.copy(), []
    wide = _rename_and_derive(wide, mmap, notes)
    chosen, layout_notes = choose_layouts(rs.runs, wide, mmap)
    wide = _apply_layouts(wide, chosen, mmap, notes)
    runs = rs.runs.assign(quadrant_source=[chosen.get(str(r), NONE) for r in rs.runs.index])
    return dataclasses.replace(rs, wide=wide, runs=runs, notes=[*rs.notes, *dict.fromkeys(notes), *layout_notes])
