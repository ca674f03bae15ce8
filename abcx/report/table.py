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


def default_group_keys(runs) -> list[str]:
    """`method` (when set) plus config fields that differ between runs, minus seeds/ids/paths and
    fields that only restate the method (e.g. a preset's eps values)."""
    keys = ["method"] if (runs["method"].astype(str) != "").any() else []
    for col in runs.columns:
        if not col.startswith("cfg.") or _ID_LEAF.search(_leaf(col)):
            continue
        values = runs[col].astype(str)
        if values.nunique(dropna=False) < 2:
            continue
        if keys and runs.assign(_v=values).groupby("method")["_v"].nunique().max() <= 1:
            continue
        keys.append(col)
    return keys


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
    ident = ["run_id", "state", "stale", "source", "label_source", "method", "seed", "step", "detail", "path"]
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
    finished = out["state"] == "finished"
    base = out[(out["method"] == baseline) & finished]
    ratio = pd.Series(np.nan, index=out.index)
    if len(base):
        overall = base["entropy_last"].mean()
        if context:
            ctx_key = out[context].astype(str).agg("\x1f".join, axis=1)
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
        done = g[g["state"] == "finished"]
        row = dict(zip(keys, gkey))
        row["n"] = len(done)
        other = g[g["state"] != "finished"]["state"].value_counts()
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


def table3(rs: RunSet, baseline: str = "grpo"):
    """Paper Table 3 layout: rows (model, benchmark, method) then Gain rows vs the baseline;
    columns Avg@k / Pass@k as mean, CI half-width (over seeds) and n. Returns (table, notes)."""
    import pandas as pd

    ev = eval_final(rs)
    notes: list[str] = []
    if ev.empty:
        return pd.DataFrame(), notes
    runs = rs.runs.assign(model=_model_column(rs.runs))
    ev = ev.merge(runs[["run_id", "method", "model", "state"]], on="run_id", how="left")
    left_out = ev.loc[ev["state"] != "finished", "run_id"].unique()
    if len(left_out):
        notes.append(f"Table 3 leaves out {len(left_out)} unfinished run(s): {', '.join(sorted(left_out)[:10])}")
    ev = ev[ev["state"] == "finished"]
    percent = bool(len(ev)) and ev["value"].between(0, 1).all()
    scale = 100.0 if percent else 1.0
    ev = ev.assign(col=ev["stat"].map({"avg": "Avg", "pass": "Pass"}) + "@" + ev["k"].astype(str),
                   value=ev["value"] * scale)
    cols = sorted(ev["col"].unique(), key=lambda c: (c.split("@")[0] != "Avg", int(c.split("@")[1])))
    rows = []
    for (model, bench), g in ev.groupby(["model", "benchmark"], sort=True):
        methods = sorted(g["method"].unique(), key=lambda m: (m != baseline, m))
        for method in methods:
            gm = g[g["method"] == method]
            row = {"model": model, "benchmark": bench, "method": method, "kind": "value",
                   "n": gm["run_id"].nunique()}
            for c in cols:
                row[f"{c}_mean"], row[f"{c}_ci"], _ = mean_ci(gm.loc[gm["col"] == c, "value"])
            rows.append(row)
        if baseline not in methods:
            notes.append(f"Table 3: no finished {baseline!r} runs for {model or 'model'}/{bench}: no Gain rows")
            continue
        base = g[g["method"] == baseline]
        for method in methods:
            if method == baseline:
                continue
            gm = g[g["method"] == method]
            row = {"model": model, "benchmark": bench, "method": f"Gain {method} vs {baseline}", "kind": "gain",
                   "n": gm["run_id"].nunique()}
            for c in cols:
                a, b = gm.loc[gm["col"] == c, "value"].tolist(), base.loc[base["col"] == c, "value"].tolist()
                gain, hw = diff_ci(a, b) if a and b else (math.nan, math.nan)
                row[f"{c}_mean"], row[f"{c}_ci"] = gain, hw
                # The paper's Gain row: relative change against the baseline's mean.
                base_mean = sum(b) / len(b) if b else math.nan
                row[f"{c}_rel"] = gain / base_mean if base_mean else math.nan
                row[f"{c}_sig"] = ("n/a" if math.isnan(gain) else "one seed" if math.isnan(hw)
                                   else "n.s." if abs(gain) <= hw else "sig")
            rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["columns"] = cols
    table.attrs["percent"] = percent
    if percent:
        notes.append("Table 3 values in %; Gain = relative change vs the baseline (difference in percentage "
                     "points in brackets); (n.s.) = the difference lies within its 95% CI (Welch t): noise, not a win")
    return table, notes


def pivot(per_run, rs: RunSet, row: str, col: str, metric: str = "reward_final", last_n: int = 10):
    """Mean over finished runs (seeds) of a per-run metric over two fields: rows × columns.

    `metric` is a per-run summary column (e.g. reward_final, entropy_last, q4_share) or any history
    metric, taken as its mean over the last `last_n` logged steps."""
    import numpy as np

    row, col = resolve_field(rs.runs, row), resolve_field(rs.runs, col)
    df = per_run.merge(rs.runs[["run_id", *{row, col} - set(per_run.columns)]], on="run_id", how="left")
    if metric not in df.columns:
        series = _last_n_mean(rs, metric, 1 if metric.startswith("eval/") else last_n)
        if series is None:
            raise UserError(f"pivot metric {metric!r}: no such summary column or logged metric; "
                            f"valid: {', '.join(SUMMARY_METRICS)} or one of {', '.join(rs.metrics[:20])}")
        df[metric] = series.reindex(df["run_id"]).to_numpy()
    df = df[df["state"] == "finished"]
    table = df.pivot_table(index=row, columns=col, values=metric, aggfunc="mean")
    table = table.replace([np.inf, -np.inf], np.nan)
    table.attrs["metric"] = metric
    return table
