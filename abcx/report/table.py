"""Summaries of a RunSet: per run, per group (mean ± 95% CI over seeds), Table 3, epsilon pivots.

Only finished runs enter means; the others stay listed in the per-run table with their state and a
note says how many were left out (never mixed silently with finished ones).
"""
from __future__ import annotations

import math
import re

from abcx.errors import UserError
from abcx.report.runset import RunSet
from abcx.report.stats import diff_ci, mean_ci
from abcx.record.states import State

QUADRANTS = ("clip/q1", "clip/q2", "clip/q3", "clip/q4")
SUMMARY_METRICS = ("reward_final", "entropy_last", "entropy_ratio", "completion_length",
                   "q1_share", "q2_share", "q3_share", "q4_share")
MODEL_FIELDS = ("cfg.model.name", "cfg.model.name_or_path", "cfg.model.id", "cfg.model.path", "cfg.model")
EVAL_RE = re.compile(r"^eval/(?P<bench>.+)/(?P<stat>avg|pass)@(?P<k>\d+)$")
# Config leaves that identify a run rather than describe the experiment; never default group keys.
_ID_LEAF = re.compile(r"(^|_)(seed|id|ids|dir|path|paths|hash|name_or_path|output|job|host|date)$")


def _leaf(col: str) -> str:
    return col.rsplit(".", 1)[-1].lower()


def resolve_field(runs, name: str) -> str:
    """A user-given field name as a runs column: exact, or with the `cfg.` prefix added."""
    if name in runs.columns:
        return name
    if f"cfg.{name}" in runs.columns:
        return f"cfg.{name}"
    valid = [c for c in runs.columns if c in ("method", "group", "tags", "source", "state") or c.startswith("cfg.")]
    shown = ", ".join(valid[:25]) + (" ..." if len(valid) > 25 else "")
    raise UserError(f"field {name!r} is not a run field; valid: {shown}")


def _configured(runs):
    """Runs whose config was read (a run that never started, or an unreadable record, has none: its
    empty config would make every field look as if it differed)."""
    if "has_config" not in runs.columns:
        return runs
    return runs[runs["has_config"].astype(object).ne(False).to_numpy()]


def default_group_keys(runs) -> list[str]:
    """`method` (when set) plus the config fields that enter the config hash (what is trained) and
    differ among these runs (the finished ones, when there are any), minus seeds/ids/paths and fields that only restate the method (e.g. a
    preset's eps values). Logger, launcher and results_dir fields never split groups."""
    from abcx.config.identity import enters_hash

    runs = _configured(runs)
    finished = (runs["state"] == State.FINISHED).to_numpy()
    if finished.any():  # the means are over finished runs: what differs among them names the groups
        runs = runs[finished]
    keys = ["method"] if (runs["method"].astype(str) != "").any() else []
    for col in runs.columns:
        if not col.startswith("cfg.") or _ID_LEAF.search(_leaf(col)) or not enters_hash(col[4:]):
            continue
        values = runs[col].astype(str)
        if values.nunique(dropna=False) < 2:
            continue
        if keys and runs.assign(_v=values).groupby("method")["_v"].nunique().max() <= 1:
            continue
        keys.append(col)
    return keys


RESERVED_NAMES = {"n", "runs", "state", "seed", "step", "method", "model", "benchmark", "source", "detail",
                  "reward", "entropy", "length", "left out", "config", "run_id"}


def short_names(keys: list[str]) -> dict[str, str]:
    """Display names for group keys: the config leaf ("eps3") unless two keys share it or it is the
    name of a column the tables already have (eval.n is not the runs count `n`)."""
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    names = {k: (leaf if leaves.count(leaf) == 1 and leaf not in RESERVED_NAMES else k.removeprefix("cfg."))
             for k, leaf in zip(keys, leaves)}
    if "cfg.model.name" in names:  # the model a run trained: "model", as the (model, method) grouping says
        names["cfg.model.name"] = "model"
    return names


def _value_text(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def run_labels(per_run, keys: list[str]) -> tuple[dict, dict]:
    """(run_id -> method label, run_id -> context) for short, readable labels.

    The method label is the method plus the method fields that vary among that method's runs
    ("abc_grpo eps3=inf"; a grpo run stays "grpo"); the context is the other group keys
    ("max_steps=12"), on which a baseline is matched."""
    names = short_names(keys)
    method_keys = [k for k in keys if k.startswith("cfg.method.")]
    context_keys = [k for k in keys if k != "method" and k not in method_keys]
    varying: dict[str, set] = {}
    if "method" in per_run.columns:
        for method, g in per_run.groupby(per_run["method"].astype(str)):
            varying[method] = {k for k in method_keys if g[k].astype(str).nunique() > 1}
    methods, contexts = {}, {}
    for _, r in per_run.iterrows():
        method = str(r.get("method", "") or "")
        parts = [f"{names[k]}={_value_text(r[k])}" for k in method_keys if k in varying.get(method, ())]
        methods[str(r["run_id"])] = " ".join([method, *parts]).strip() or "all"
        contexts[str(r["run_id"])] = " ".join(f"{names[k]}={_value_text(r[k])}" for k in context_keys
                                              if r[k] == r[k] and r[k] is not None)
    return methods, contexts


def _last_n_mean(rs: RunSet, metric: str, n: int):
    sub = rs.metric(metric)
    if sub.empty:
        return None
    from_end = sub.groupby("run_id", observed=True, sort=False).cumcount(ascending=False)
    return sub[from_end.to_numpy() < n].groupby("run_id", observed=True)["value"].mean()


def _last(rs: RunSet, metric: str):
    sub = rs.metric(metric)
    if sub.empty:
        return None
    return sub.groupby("run_id", observed=True)["value"].last()


def _method_keys(keys: list[str]) -> set[str]:
    return {k for k in keys if k == "method" or k.startswith("cfg.method.")}


def run_summary(rs: RunSet, last_n: int = 10, baseline: str = "grpo", group_keys: list[str] | None = None):
    """One row per run: identity and state, group keys, then SUMMARY_METRICS."""
    import numpy as np
    import pandas as pd

    runs = rs.runs
    keys = list(group_keys) if group_keys is not None else default_group_keys(runs)
    ident = ["run_id", "state", "stale", "source", "label_source", "quadrant_source", "method", "seed", "step", "detail",
             "path"]
    out = runs[[c for c in ident if c in runs.columns]].copy()
    for k in keys:
        if k not in out.columns:
            out[k] = runs[k]
    for col, series in (("reward_final", _last(rs, "reward")),
                        ("entropy_last", _last_n_mean(rs, "entropy", last_n)),
                        ("completion_length", _last_n_mean(rs, "completion_length", last_n))):
        out[col] = series.reindex(out.index).to_numpy() if series is not None else np.nan
    # Entropy relative to the baseline method's runs that share every non-method group key.
    context = [k for k in keys if k not in _method_keys(keys)]
    finished = out["state"] == State.FINISHED
    base = out[(out["method"] == baseline) & finished]
    ratio = pd.Series(np.nan, index=out.index)
    if len(base):
        overall = base["entropy_last"].mean()
        if context:
            ctx_key = out[context].apply(lambda s: s.map(str)).agg("\x1f".join, axis=1)
            base_means = base["entropy_last"].groupby(ctx_key[base.index]).mean()
            ref = ctx_key.map(base_means).fillna(overall)
        else:
            ref = pd.Series(overall, index=out.index)
        ratio = out["entropy_last"] / ref
    out["entropy_ratio"] = ratio.to_numpy()
    # Share of clip events by quadrant over the whole run (paper Fig. 4f): q_i / (q1+q2+q3+q4).
    sums = []
    for q in QUADRANTS:
        sub = rs.metric(q)
        sums.append(sub.groupby("run_id", observed=True)["value"].sum().reindex(out.index) if len(sub)
                    else pd.Series(np.nan, index=out.index))
    # A share needs all four quadrants: a source that does not log one (TRL: Q2, Q4) leaves it
    # unknown, and a share over the others would pass that unknown off as 0.
    total = sum(sums)
    for i, s in enumerate(sums, start=1):
        out[f"q{i}_share"] = (s / total.where(total > 0)).to_numpy()
    return out.reset_index(drop=True)


def _fill_keys(df, keys):
    return df.assign(**{k: df[k].astype(object).where(df[k].notna(), "—").astype(str) for k in keys})


def group_summary(per_run, keys: list[str], metrics=SUMMARY_METRICS):
    """Mean ± CI half-width per group over finished runs; `n` finished, `n_other` left out."""
    import pandas as pd

    if not keys:
        per_run = per_run.assign(all="all")
        keys = ["all"]
    df = _fill_keys(per_run, keys)
    rows = []
    for gkey, g in df.groupby(keys, sort=True, dropna=False):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        done = g[g["state"] == State.FINISHED]
        row = dict(zip(keys, gkey))
        row["n"] = len(done)
        other = g[g["state"] != State.FINISHED]["state"].value_counts()
        row["n_other"] = int(other.sum())
        row["other_states"] = ", ".join(f"{c} {s}" for s, c in other.items())
        for m in metrics:
            mean, hw, _ = mean_ci(done[m]) if len(done) else (math.nan, math.nan, 0)
            row[f"{m}_mean"], row[f"{m}_ci"] = mean, hw
        rows.append(row)
    return pd.DataFrame(rows)


def _model_column(runs):
    for field in MODEL_FIELDS:
        if field in runs.columns:
            return runs[field].astype(object).where(runs[field].notna(), "").astype(str)
    return runs["method"].map(lambda _: "")


def eval_final(rs: RunSet):
    """Long table of each run's last Avg@k / Pass@k per benchmark: run_id, benchmark, stat, k, value."""
    import pandas as pd

    names = [m for m in rs.metrics if EVAL_RE.match(m)]
    parts = []
    for name in names:
        m = EVAL_RE.match(name)
        last = _last(rs, name)
        parts.append(pd.DataFrame({"run_id": last.index.astype(str), "benchmark": m["bench"],
                                   "stat": m["stat"], "k": int(m["k"]), "value": last.to_numpy()}))
    if not parts:
        return pd.DataFrame(columns=["run_id", "benchmark", "stat", "k", "value"])
    return pd.concat(parts, ignore_index=True)


def _eval_columns(ev) -> list[str]:
    """Avg@n and Pass@k columns; Pass@1 is left out where Avg@n is shown, since the unbiased Pass@1
    is c/n per problem, which is Avg@n exactly."""
    cols = sorted(ev["col"].unique(), key=lambda c: (c.split("@")[0] != "Avg", int(c.split("@")[1])))
    if any(c.startswith("Avg@") for c in cols):
        cols = [c for c in cols if c != "Pass@1"]
    return cols


def _paired_gain(rs: RunSet, bench: str, runs_a, runs_b, col: str, scale: float):
    """(gain, low, high, problems) of a column between two sets of runs by the paired two-level bootstrap
    over problems and seeds, or None when a side lacks per-problem counts on the same problems."""
    from abcx.evaluation.metrics import bootstrap_diff_pooled

    def side(ids):
        found = [rs.evals.get(r, {}).get(bench, {}).get("per_problem") for r in ids]
        return found if found and all(isinstance(p, list) and p for p in found) else None

    a, b = side(runs_a), side(runs_b)
    if a is None or b is None or len({len(p) for p in a + b}) != 1:
        return None
    stat, k = col.split("@")
    try:
        est, lo, hi = bootstrap_diff_pooled(a, b, None if stat == "Avg" else int(k), iters=1000)
    except (UserError, ValueError):
        return None
    return est * scale, lo * scale, hi * scale, len(a[0])


def _gain_row(rs, g, gm, base, label, baseline, cols, scale, head) -> dict:
    from abcx.report.verdict import COVERS_PROBLEMS, COVERS_PROBLEMS_AND_SEEDS, COVERS_SEEDS

    ids_a, ids_b = sorted(gm["run_id"].unique()), sorted(base["run_id"].unique())
    row = {**head, "method": f"Gain {label} vs {baseline}", "kind": "gain", "n": len(ids_a), "n_base": len(ids_b)}
    for c in cols:
        a, b = gm.loc[gm["col"] == c, "value"].tolist(), base.loc[base["col"] == c, "value"].tolist()
        paired = _paired_gain(rs, head["benchmark"], ids_a, ids_b, c, scale) if a and b else None
        if paired is not None:
            gain, lo, hi, row[f"{c}_problems"] = paired
            row[f"{c}_test"] = "paired bootstrap"
            covers = COVERS_PROBLEMS_AND_SEEDS if min(len(ids_a), len(ids_b)) >= 2 else COVERS_PROBLEMS
        else:
            gain, hw = diff_ci(a, b) if a and b else (math.nan, math.nan)
            lo, hi = gain - hw, gain + hw
            row[f"{c}_test"] = "Welch t"
            covers = COVERS_SEEDS if lo == lo else ""
        row[f"{c}_mean"], row[f"{c}_lo"], row[f"{c}_hi"], row[f"{c}_covers"] = gain, lo, hi, covers
        row[f"{c}_ci"] = (hi - lo) / 2 if lo == lo and hi == hi else math.nan
        base_mean = sum(b) / len(b) if b else math.nan
        row[f"{c}_rel"] = gain / base_mean if base_mean else math.nan  # the paper's relative Gain
        row[f"{c}_sig"] = ("n/a" if math.isnan(gain) else "one seed" if math.isnan(lo)
                           else "n.s." if lo <= 0 <= hi else "sig")
    return row


def table3(rs: RunSet, baseline: str = "grpo", labels: dict | None = None, contexts: dict | None = None):
    """Paper Table 3 layout: rows (model, benchmark, config, method) then Gain rows vs the baseline
    with the same config; columns Avg@n / Pass@k as mean, CI half-width (over seeds) and n.

    `labels` (run_id -> method label) and `contexts` (run_id -> the other differing fields) come from
    `run_labels`; a Gain compares a label with the baseline method's runs in the same context, by the
    paired two-level bootstrap over problems and seeds where per-problem counts exist. Returns (table, notes)."""
    import pandas as pd

    ev = eval_final(rs)
    notes: list[str] = []
    if ev.empty:
        return pd.DataFrame(), notes
    runs = rs.runs.assign(model=_model_column(rs.runs))
    labels = labels or dict(zip(runs["run_id"], runs["method"].astype(str)))
    contexts = contexts or {}
    ev = ev.merge(runs[["run_id", "method", "model", "state"]], on="run_id", how="left")
    ev["label"] = ev["run_id"].map(lambda r: labels.get(r, ""))
    ev["config"] = ev["run_id"].map(lambda r: contexts.get(r, ""))
    left_out = ev.loc[ev["state"] != State.FINISHED, "run_id"].unique()
    if len(left_out):
        notes.append(f"Table 3 leaves out {len(left_out)} unfinished run(s): {', '.join(sorted(left_out)[:10])}")
    ev = ev[ev["state"] == State.FINISHED]
    percent = bool(len(ev)) and ev["value"].between(0, 1).all()
    scale = 100.0 if percent else 1.0
    ev = ev.assign(col=ev["stat"].map({"avg": "Avg", "pass": "Pass"}) + "@" + ev["k"].astype(str),
                   value=ev["value"] * scale)
    cols = _eval_columns(ev)
    rows = []
    for (model, bench, config), g in ev.groupby(["model", "benchmark", "config"], sort=True):
        order = sorted(g["label"].unique(), key=lambda m: (m != baseline, m))
        head = {"model": model, "benchmark": bench, "config": config}
        base_eval = rs.base_evals.get(bench)
        if base_eval and not any(r.get("kind") == "base" and r["benchmark"] == bench for r in rows):
            # The starting model, as the paper's Table 3 lists it: one evaluation, so no interval.
            row = {**head, "config": "", "method": f"base ({base_eval['name']})", "kind": "base", "n": 1}
            for c in cols:
                value = base_eval["metrics"].get(c.lower())
                row[f"{c}_mean"] = float(value) * scale if isinstance(value, (int, float)) else math.nan
                row[f"{c}_ci"] = math.nan
            rows.append(row)
        for label in order:
            gm = g[g["label"] == label]
            row = {**head, "method": label, "kind": "value", "n": gm["run_id"].nunique(),
                   "runs": ",".join(sorted(gm["run_id"].unique()))}  # what the verdict joins H/H_base and Q4 on
            for c in cols:
                row[f"{c}_mean"], row[f"{c}_ci"], _ = mean_ci(gm.loc[gm["col"] == c, "value"])
            rows.append(row)
        base = g[g["method"] == baseline]
        if base.empty:
            where = "/".join(x for x in (model or "model", bench, config) if x)
            notes.append(f"Table 3: no finished {baseline} runs for {where}: no Gain rows")
            continue
        for label in order:
            gm = g[g["label"] == label]
            if (gm["method"] == baseline).all():
                continue
            rows.append(_gain_row(rs, g, gm, base, label, baseline, cols, scale, head))
    table = pd.DataFrame(rows)
    table.attrs["columns"] = cols
    table.attrs["percent"] = percent
    if percent:
        notes.append("Table 3 values in %; Gain = relative change vs the baseline, the difference in percentage "
                     "points (pp) and its 95% interval in brackets")
    if any(c.startswith("Avg@") for c in cols):
        notes.append("Avg@n = Pass@1 (the unbiased Pass@1 is c/n), so only Avg@n is shown")
    for bench in sorted(ev["benchmark"].unique()):
        if bench in rs.eval_settings:
            notes.append(f"{bench}: sampled with {rs.eval_settings[bench]}")
    return table, notes


def pivot(per_run, rs: RunSet, row: str, col: str, metric: str = "reward_final", last_n: int = 10):
    """Mean over finished runs (seeds) of a per-run metric over two fields: rows × columns.

    `metric` is a per-run summary column (e.g. reward_final, entropy_last, q4_share) or any history
    metric, taken as its mean over the last `last_n` logged steps."""
    import numpy as np

    row, col = resolve_field(rs.runs, row), resolve_field(rs.runs, col)
    df = per_run.merge(rs.runs[["run_id", *{row, col} - set(per_run.columns)]], on="run_id", how="left")
    if metric not in df.columns:
        metric = _eval_label_of(rs, metric)
        series = _last_n_mean(rs, metric, 1 if metric.startswith("eval/") else last_n)
        if series is None:
            raise UserError(f"pivot metric {metric!r}: no such summary column or logged metric; "
                            f"valid: {', '.join(SUMMARY_METRICS)} or one of {', '.join(rs.metrics[:20])}")
        df[metric] = series.reindex(df["run_id"]).to_numpy()
    df = df[df["state"] == State.FINISHED]
    df, note = _select_grid(df, rs, row, col, metric)
    table = df.pivot_table(index=row, columns=col, values=metric, aggfunc="mean")
    table = table.replace([np.inf, -np.inf], np.nan)
    table.attrs["metric"] = metric
    table.attrs["selection"] = note
    return table


def _eval_label_of(rs: RunSet, metric: str) -> str:
    """`eval/<bench>/<name>` where the records hold one benchmark under several sampling settings: the
    labels say the setting ("eval/chain (n=64)/pass@64", abcx.report.sources.abcx_records.eval_labels),
    and which exist depends on every run read, not on the runs selected. The one label these runs were
    evaluated with is meant; several are refused, named."""
    parts = metric.split("/")
    if len(parts) != 3 or parts[0] != "eval" or metric in rs.metrics:
        return metric
    prefix, suffix = f"eval/{parts[1]} (", f")/{parts[2]}"
    labelled = [m for m in rs.metrics if m.startswith(prefix) and m.endswith(suffix)]
    if len(labelled) > 1:
        raise UserError(f"pivot metric {metric!r}: these runs were evaluated on {parts[1]} with several settings; "
                        f"name one: {', '.join(labelled)}")
    return labelled[0] if labelled else metric


def _select_grid(df, rs: RunSet, row: str, col: str, metric: str):
    """(the runs a pivot averages, a note on those left out or None).

    A pivot cell is a mean over seeds, so its runs vary only along the two axes (and in seed). Runs
    without an axis (grpo has no eps3) are left out; the rest form one grid per setting of every other
    field that enters the config hash. The grid that fills the most cells is taken and the others are
    named in the note; two grids that fill as many cells are refused in one line that says which
    selection to add."""
    from abcx.config.identity import enters_hash

    runs = _configured(rs.runs.loc[rs.runs.index.isin(df["run_id"])])
    placed = (runs[row].notna() & runs[col].notna()).to_numpy()
    missing, runs = int((~placed).sum()), runs[placed]
    spec = f"--pivot {row.removeprefix('cfg.')},{col.removeprefix('cfg.')},{metric}"
    if runs.empty:
        raise UserError(f"{spec}: no finished run has both {row.removeprefix('cfg.')} and "
                        f"{col.removeprefix('cfg.')}; select runs that have them (--sweep)")
    others = [c for c in runs.columns if c.startswith("cfg.") and c not in (row, col)
              and not _ID_LEAF.search(_leaf(c)) and enters_hash(c[4:])]
    if "method" not in (row, col):
        others.insert(0, "method")
    cell = runs[row].map(str) + "\x1f" + runs[col].map(str)  # map(str): NaN becomes "nan", a value
    # A field that differs within a cell would mix settings there; one that is constant within each cell
    # restates an axis (method.name beside method, a preset's eps beside the method) and is kept.
    others = [c for c in others if runs[c].map(str).groupby(cell).nunique().max() > 1]
    setting = runs[others].apply(lambda s: s.map(str)).agg("\x1f".join, axis=1) if others else \
        runs["run_id"].map(lambda _: "")
    cells = cell.groupby(setting).nunique()
    best = cells[cells == cells.max()].index
    if len(best) > 1:
        tied = setting.isin(best).to_numpy()
        differ = [c.removeprefix("cfg.") for c in others if runs.loc[tied, c].map(str).nunique() > 1]
        raise UserError(f"{spec}: {len(best)} sets of runs fill {cells.max()} cell(s) each and differ in "
                        f"{', '.join(differ)}; a cell averages seeds only: select one set with "
                        f"{_selection_hint(runs[tied], setting[tied])} or pivot on that field")
    chosen = (setting == best[0]).to_numpy()
    left = runs[~chosen]
    parts = [f"{missing} run(s) without {row.removeprefix('cfg.')} or {col.removeprefix('cfg.')}"] if missing else []
    if len(left):
        differ = [c.removeprefix("cfg.") for c in others]
        parts.append(f"{len(left)} run(s) of other settings ({', '.join(differ)})")
    note = (f"pivot over {int(chosen.sum())} run(s) that differ only in its axes and seed; left out: "
            f"{' and '.join(parts)}; choose others with {_selection_hint(runs, setting)}") if parts else None
    return df[df["run_id"].isin(runs.loc[chosen, "run_id"])], note


def _selection_hint(runs, setting) -> str:
    """`--sweep NAME` for each set of runs that one sweep holds whole, else the generic filters."""
    if "sweep" not in runs.columns:
        return "--sweep/--group/--tag"
    names = []
    for _, members in runs.groupby(setting.to_numpy()):
        shared = set.intersection(*({n for n in str(v).split(",") if n and v == v} for v in members["sweep"]))
        names += sorted(shared)[:1]
    return " or ".join(f"--sweep {n}" for n in sorted(set(names))) or "--sweep/--group/--tag"


def tidy_long(rs: RunSet, per_run, keys: list[str]):
    """One tidy long table: run_id, state, method, seed, the group-key config columns, metric, step,
    value. Every logged metric at every step, then each run's summary metrics at its last step."""
    import pandas as pd

    names = {k: k.removeprefix("cfg.") for k in keys if k != "method"}
    ident = per_run[["run_id", "state", "method", "seed", *names]].rename(columns=names)
    hist = rs.history
    hist = pd.DataFrame({"run_id": hist["run_id"].astype(str), "metric": hist["metric"].astype(str),
                         "step": hist["step"].astype("Int64"), "value": hist["value"]})
    summary = per_run.melt(id_vars=["run_id"], value_vars=[m for m in SUMMARY_METRICS if m in per_run],
                           var_name="metric", value_name="value").dropna(subset=["value"])
    summary["step"] = summary["run_id"].map(dict(zip(per_run["run_id"], per_run["step"]))).astype("Int64")
    long = pd.concat([hist, summary[["run_id", "metric", "step", "value"]]], ignore_index=True)
    return ident.merge(long, on="run_id", how="left")[[*ident.columns, "metric", "step", "value"]]
