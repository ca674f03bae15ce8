"""`RunSet`: the one in-memory shape every source is read into.

`runs`: one row per run, indexed by run_id, with the fixed columns in `RUN_COLUMNS` followed by the
run's config flattened as `cfg.<dotted.path>` columns. `history`: a long table
(run_id, step, metric, value), built on demand from the wide store (`wide`: run_id, step, one column
per metric); within one (run, metric) the logged values are in ascending step order, which the
summaries rely on for "last N logged steps". `run_id` is categorical: a 1,000-run sweep has ~10^7 history cells.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from abcx.record.states import State

STATES = tuple(s.value for s in State)  # abcx.record.states: the one vocabulary (crashed/unknown from other sources)
RUN_COLUMNS = ("run_id", "source", "state", "stale", "method", "seed", "group", "tags", "name", "step",
               "detail", "path")
HISTORY_COLUMNS = ("run_id", "step", "metric", "value")


def flatten_config(cfg: Any, prefix: str = "cfg") -> dict[str, Any]:
    """Nested mappings → {"cfg.a.b": value}; lists become JSON text so every value is hashable."""
    import json

    out: dict[str, Any] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, dict):
            out[path] = "{}"
        elif isinstance(node, (list, tuple)):
            out[path] = json.dumps(list(node), default=str)
        else:
            out[path] = node

    if isinstance(cfg, dict):
        for k, v in cfg.items():
            walk(v, f"{prefix}.{k}")
    return out


def make_runs(rows: list[dict]):
    """Runs DataFrame from per-run dicts (missing fixed columns filled with defaults)."""
    import pandas as pd

    defaults = {"source": "", "state": State.UNKNOWN.value, "stale": False, "method": "", "seed": None,
                "group": "", "tags": "", "name": "", "step": None, "detail": "", "path": ""}
    full = [{**defaults, **r} for r in rows]
    df = pd.DataFrame(full)
    if df.empty:
        df = pd.DataFrame(columns=list(RUN_COLUMNS))
    cfg_cols = sorted(c for c in df.columns if c.startswith("cfg."))
    other = [c for c in df.columns if c not in RUN_COLUMNS and c not in cfg_cols]
    df = df[list(RUN_COLUMNS) + other + cfg_cols]
    df.index = pd.Index(df["run_id"].astype(str).to_numpy())
    return df


def empty_wide():
    import numpy as np
    import pandas as pd

    return pd.DataFrame({"run_id": pd.Categorical([]), "step": np.zeros(0, dtype="int64")})


def wide_from_arrays(run_ids, run_codes, steps, columns: dict):
    """Wide history from per-row arrays: run_codes (index into run_ids), steps, {metric: float array}.

    Zero-copy where pandas allows; no per-row Python. Rows must already be in (run, step) order.
    """
    import numpy as np
    import pandas as pd

    data = {"run_id": pd.Categorical.from_codes(np.asarray(run_codes, dtype="int32"), categories=list(run_ids)),
            "step": np.asarray(steps, dtype="int64")}
    for name, values in columns.items():
        data[name] = np.asarray(values, dtype="float64")
    return pd.DataFrame(data, copy=False)


def wide_from_records(records: list[tuple[str, int, str, float]]):
    """Wide history from (run_id, step, metric, value) tuples — for sources with few rows."""
    import pandas as pd

    if not records:
        return empty_wide()
    df = pd.DataFrame.from_records(records, columns=list(HISTORY_COLUMNS))
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype("float64")
    wide = df.pivot_table(index=["run_id", "step"], columns="metric", values="value", aggfunc="last",
                          sort=True).reset_index()
    wide.columns.name = None
    wide["run_id"] = wide["run_id"].astype("category")
    wide["step"] = wide["step"].astype("int64")
    return wide


def long_from_wide(wide):
    """Long (run_id, step, metric, value) table; NaN cells (metric not logged at that step) dropped."""
    import numpy as np
    import pandas as pd

    names = [c for c in wide.columns if c not in ("run_id", "step")]
    codes = wide["run_id"].cat.codes.to_numpy()
    steps = wide["step"].to_numpy()
    parts = ([], [], [], [])
    for i, name in enumerate(names):
        values = wide[name].to_numpy(dtype="float64")
        keep = ~np.isnan(values)
        parts[0].append(codes[keep])
        parts[1].append(steps[keep])
        parts[2].append(np.full(int(keep.sum()), i, dtype="int32"))
        parts[3].append(values[keep])
    if not names:
        return pd.DataFrame({"run_id": pd.Categorical([]), "step": np.zeros(0, dtype="int64"),
                             "metric": pd.Categorical([]), "value": np.zeros(0)})
    return pd.DataFrame({
        "run_id": pd.Categorical.from_codes(np.concatenate(parts[0]), dtype=wide["run_id"].dtype),
        "step": np.concatenate(parts[1]),
        "metric": pd.Categorical.from_codes(np.concatenate(parts[2]), categories=names),
        "value": np.concatenate(parts[3]),
    })


@dataclasses.dataclass
class RunSet:
    """`runs` plus the history, stored wide (run_id, step, one float column per metric) because the
    long form of a 1,000 x 1,000-step sweep is 1.6e7 rows; `history` gives the long form on demand."""

    runs: Any  # pandas.DataFrame
    wide: Any  # pandas.DataFrame: run_id (categorical), step, metric columns (NaN = not logged)
    summaries: dict = dataclasses.field(default_factory=dict)  # run_id -> source's own final summary
    notes: list = dataclasses.field(default_factory=list)
    # run_id -> {benchmark label: {"step", "per_problem"}} of the run's latest evaluation (abcx records),
    # for the paired bootstrap; benchmark label -> its sampling settings in words.
    evals: dict = dataclasses.field(default_factory=dict)
    eval_settings: dict = dataclasses.field(default_factory=dict)
    # benchmark label -> {"name", "step", "metrics"}: the starting model's evaluation (step 0), when
    # `abcx eval <model>` evaluated it with the runs' sampling settings.
    base_evals: dict = dataclasses.field(default_factory=dict)

    @staticmethod
    def empty() -> "RunSet":
        return RunSet(make_runs([]), empty_wide())

    @property
    def history(self):
        """Long table (run_id, step, metric, value); per (run_id, metric) rows are in step order."""
        cached = self.__dict__.get("_history")
        if cached is None:
            cached = self.__dict__["_history"] = long_from_wide(self.wide)
        return cached

    @property
    def metrics(self) -> list[str]:
        return sorted(c for c in self.wide.columns if c not in ("run_id", "step") and self.wide[c].notna().any())

    def metric(self, name: str):
        """History rows of one metric (run_id, step, value), in (run, step) order."""
        w = self.wide
        if name not in w.columns or name in ("run_id", "step"):
            import pandas as pd

            return pd.DataFrame({"run_id": pd.Categorical([]), "step": [], "value": []})
        values = w[name]
        keep = values.notna().to_numpy()
        return w.loc[keep, ["run_id", "step", name]].rename(columns={name: "value"})

    def select(self, run_ids) -> "RunSet":
        import pandas as pd

        keep = pd.Index(run_ids)
        runs = self.runs.loc[self.runs.index.isin(keep)]
        wide = self.wide[self.wide["run_id"].isin(keep)]
        wide = wide.assign(run_id=wide["run_id"].cat.remove_unused_categories())
        return RunSet(runs, wide.reset_index(drop=True),
                      {k: v for k, v in self.summaries.items() if k in keep}, list(self.notes),
                      {k: v for k, v in self.evals.items() if k in keep}, dict(self.eval_settings),
                      dict(self.base_evals))


def concat(sets: list[RunSet]) -> RunSet:
    """Join RunSets; a run_id seen twice (e.g. the same run as abcx record and W&B folder) is renamed
    `<run_id>@<source>` so both stay visible instead of one silently replacing the other."""
    import pandas as pd

    sets = [s for s in sets if len(s.runs)]
    if not sets:
        return RunSet.empty()
    seen: set[str] = set()
    runs_parts, hist_parts, summaries, notes, evals, settings, base = [], [], {}, [], {}, {}, {}
    for s in sets:
        runs, hist = s.runs.copy(), s.wide
        rename = {}
        for rid, src in zip(runs["run_id"], runs["source"]):
            new = rid
            i = 1
            while new in seen:
                new = f"{rid}@{src}" if i == 1 else f"{rid}@{src}{i}"
                i += 1
            seen.add(new)
            if new != rid:
                rename[rid] = new
        if rename:
            runs["run_id"] = runs["run_id"].replace(rename)
            runs.index = pd.Index(runs["run_id"].to_numpy())
            hist = hist.assign(run_id=hist["run_id"].cat.rename_categories(
                lambda c: rename.get(c, c)))
            notes.append(f"duplicate run ids renamed: {', '.join(f'{a} → {b}' for a, b in rename.items())}")
        runs_parts.append(runs)
        hist_parts.append(hist)
        summaries.update({rename.get(k, k): v for k, v in s.summaries.items()})
        evals.update({rename.get(k, k): v for k, v in s.evals.items()})
        settings.update(s.eval_settings)
        base.update(s.base_evals)
        notes.extend(s.notes)
    runs = pd.concat(runs_parts)
    cfg_cols = sorted(c for c in runs.columns if c.startswith("cfg."))
    runs = runs[[c for c in runs.columns if not c.startswith("cfg.")] + cfg_cols]
    if len(hist_parts) == 1:
        wide = hist_parts[0]
    else:
        from pandas.api.types import union_categoricals

        # As text, whatever each part's categories were made from (an empty history has object ones).
        run_cat = union_categoricals([h["run_id"].cat.set_categories(h["run_id"].cat.categories.astype(str))
                                      for h in hist_parts])
        wide = pd.concat([h.drop(columns="run_id") for h in hist_parts], ignore_index=True)
        wide.insert(0, "run_id", run_cat)
    return RunSet(runs, wide.reset_index(drop=True), summaries, notes, evals, settings, base)
