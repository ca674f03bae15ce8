"""abcx run records (`results/runs/<run_id>/`, format in docs/architecture.md) → RunSet.

Built for sweeps of thousands of runs: the small JSON/YAML files are read per run, but every
metrics.jsonl is parsed in one batched call (abcx.record.many.metric_columns) and turned into the long history
with array operations, no per-row Python.
"""
from __future__ import annotations

import datetime as dt
import json
import os

from abcx.errors import UserError
from abcx.methods.stats import QUADRANT_DEFINITION
from abcx.record import many
from abcx.report.metric_map import OWN, OWN_WITH_ZERO_ADV
from abcx.report.names import canonical
from abcx.report.runset import RunSet, flatten_config, make_runs, wide_from_arrays
from abcx.record.states import State

DEFAULT_STALE_AFTER_S = 3600.0


def _parse_time(value) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _run_row(path: str, now: dt.datetime, stale_after_s: float) -> tuple[dict, dict | None]:
    view = many.read_view(path)
    meta, status, cfg, summary, unstarted = view.meta, view.status, view.config, view.summary, view.unstarted
    raw_state = state = view.state
    stop = status.get("stop") if raw_state == State.STOPPED and isinstance(status.get("stop"), dict) else {}
    detail = str(stop.get("reason") or "")[:120]  # a stopped run says why (the rung and its rank, a health limit)
    if unstarted and raw_state != State.PENDING:
        detail += (": " if detail else "") + "never started (no config.yaml)"
    if status.get("error"):
        detail = (detail + ": " if detail else "") + str(status["error"]).splitlines()[0][:120]
    stale = False
    if state == State.RUNNING:
        updated = _parse_time(status.get("updated"))
        if updated is not None:
            age = (now - updated).total_seconds()
            if age > stale_after_s:
                stale = True
                detail = f"no status update for {age / 3600:.1f} h"
    method_cfg = cfg.get("method") if isinstance(cfg.get("method"), dict) else {}
    row = {
        "run_id": str(meta.get("run_id") or os.path.basename(os.path.normpath(path))),
        "source": "abcx",
        "state": state,
        "stale": stale,
        "method": str(meta.get("method") or method_cfg.get("name") or cfg.get("method") or ""),
        "seed": meta.get("seed", cfg.get("seed")),
        "group": str(meta.get("group") or ""),
        "sweep": ",".join(meta.get("sweeps") or ([meta["sweep"]] if meta.get("sweep") else [])),
        "tags": ",".join(map(str, meta.get("tags") or [])),
        "name": str(meta.get("run_id") or ""),
        "step": status.get("step"),
        "detail": detail,
        "path": path,
        "max_steps": status.get("max_steps"),
        "gpu_hours": status.get("gpu_hours"),
        "config_hash": meta.get("config_hash"),
        "has_config": bool(cfg),
        # A run that has started without saying which quadrant definition it used predates A != 0.
        "quadrant_source": OWN if meta.get("quadrants") == QUADRANT_DEFINITION or not cfg else OWN_WITH_ZERO_ADV,
    }
    row.update(flatten_config(cfg))
    return row, summary


def _broken_row(path: str, reason: str) -> dict:
    """A record that cannot be read: listed with the state its status.json gives (if any) and why,
    left out of every aggregate (its state is never `finished`)."""
    state = many.recorded_state(path) or State.UNKNOWN.value
    if state == State.FINISHED:
        state = State.UNKNOWN.value  # finished by its status, but its record cannot be read: not in the means
    name = os.path.basename(os.path.normpath(path))
    return {"run_id": name, "source": "abcx", "state": state, "stale": False, "method": name.split("-s")[0],
            "name": name, "detail": f"unreadable record: {reason}", "path": path, "has_config": False}


SETTING_NAMES = {"temperature": "T"}


def _sampling_of(row: dict) -> dict:
    """The sampling settings an evaluation row was drawn with (the seed aside: it does not change what
    is measured), with the sample count n."""
    sampling = row.get("sampling") if isinstance(row.get("sampling"), dict) else {}
    out = {k: v for k, v in sampling.items() if k != "seed"}
    if row.get("n") is not None:
        out["n"] = row["n"]
    return out


def _eval_entries(path: str) -> list[dict]:
    """eval.jsonl rows keyed by (step, benchmark, sampling settings); a repeated key keeps its last row."""
    file = many.eval_file(path)
    entries: dict[tuple, dict] = {}
    for i, row in enumerate(many.eval_rows(path), start=1):
        bench, metrics = row.get("benchmark"), row.get("metrics")
        if not isinstance(bench, str) or not isinstance(metrics, dict) or not isinstance(row.get("step"), int):
            raise UserError(f"{file} line {i}: needs 'step' (int), 'benchmark' (str) and 'metrics' (object)")
        sampling = _sampling_of(row)
        key = (row["step"], bench, json.dumps(sampling, sort_keys=True, default=str))
        entries[key] = {"step": row["step"], "benchmark": bench, "sampling": sampling, "setting": key[2],
                        "metrics": metrics, "per_problem": row.get("per_problem")}
    return list(entries.values())


def _describe(sampling: dict, only=None) -> str:
    keys = ["n", *sorted(k for k in sampling if k != "n")] if only is None else only
    return ", ".join(f"{SETTING_NAMES.get(k, k)}={sampling.get(k)}" for k in keys if k in sampling)


def eval_labels(entries: list[dict]) -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    """(benchmark, setting) -> label, and label -> its settings in words. A benchmark evaluated with one
    setting keeps its name; with several, each setting is its own benchmark row, named by what differs
    ("chain (n=64)"), so no table or curve ever mixes samples drawn differently."""
    by_bench: dict[str, dict[str, dict]] = {}
    for e in entries:
        by_bench.setdefault(e["benchmark"], {})[e["setting"]] = e["sampling"]
    labels, words = {}, {}
    for bench, settings in by_bench.items():
        fields = sorted({k for s in settings.values() for k in s})
        differ = [k for k in fields if len({json.dumps(s.get(k)) for s in settings.values()}) > 1]
        differ = sorted(differ, key=lambda k: k != "n")
        for key, sampling in settings.items():
            label = bench if len(settings) == 1 else f"{bench} ({_describe(sampling, differ)})"
            labels[(bench, key)] = label
            words[label] = _describe(sampling)
    return labels, words


def _base_evals(base_paths: list[str], labels: dict, models: set[str], notes: list[str]) -> dict:
    """label -> the starting model's latest evaluation with the runs' settings. Of several evaluated
    models, the one named like the runs' model (`abcx eval tiny` -> results/evals/tiny) is used."""
    found: dict[str, list[dict]] = {}
    for path in base_paths:
        name = os.path.basename(os.path.normpath(path))
        try:
            entries = _eval_entries(path)
        except UserError as err:
            notes.append(f"base evaluation {path}: {err} (left out)")
            continue
        for e in sorted(entries, key=lambda e: e["step"] or 0):
            label = labels.get((e["benchmark"], e["setting"]))
            if label is not None:
                found.setdefault(label, []).append({"name": name, "step": 0, "metrics": e["metrics"]})
    out = {}
    for label, cands in found.items():
        named = [c for c in cands if c["name"] in models]
        pick = named or (cands if len({c["name"] for c in cands}) == 1 else [])
        if pick:
            out[label] = pick[-1]
    return out


def read_records(paths: list[str], stale_after_s: float = DEFAULT_STALE_AFTER_S,
                 now: dt.datetime | None = None, base_paths: list[str] = ()) -> RunSet:
    import numpy as np

    now = now or dt.datetime.now(dt.timezone.utc)
    rows, summaries, notes, kept = [], {}, [], []
    for p in paths:
        try:
            row, summary = _run_row(p, now, stale_after_s)
        except UserError as err:  # one broken record never stops the report: listed, left out of means
            row, summary = _broken_row(p, str(err).replace(p, "").strip(" :/") or str(err)), None
            notes.append(f"run record {p}: {err} (listed, left out of the aggregates)")
        kept.append(p)
        rows.append(row)
        if summary is not None:
            summaries[row["run_id"]] = summary
    paths = kept
    run_ids = [r["run_id"] for r in rows]
    if len(set(run_ids)) != len(run_ids):
        dup = next(r for r in run_ids if run_ids.count(r) > 1)
        where = [p for p, r in zip(paths, run_ids) if r == dup]
        raise UserError(f"run_id {dup!r} appears in two records: {where[0]} and {where[1]}")

    metric_files = [many.metrics_file(p) for p in paths]
    present = [i for i, p in enumerate(paths)
               if many.has_metrics(p) and not rows[i]["detail"].startswith("unreadable record")]
    counts, cols = many.metric_columns([paths[i] for i in present])
    codes = np.repeat(np.asarray(present, dtype="int64"), counts)
    steps = cols.pop("step", np.full(len(codes), np.nan))
    if np.isnan(steps).any():  # a run whose metrics lines lack `step`: listed as unreadable, history dropped
        for code in np.unique(codes[np.isnan(steps)]):
            bad = int(np.flatnonzero(np.isnan(steps) & (codes == code))[0])
            line = bad - int(np.searchsorted(codes, code)) + 1
            reason = f"{metric_files[code]} line {line}: no 'step' field"
            rows[code].update(state=State.UNKNOWN.value, detail=f"unreadable record: {reason}")
            notes.append(f"run record {paths[code]}: {reason} (listed, left out of the aggregates)")
        keep = ~np.isin(codes, codes[np.isnan(steps)])
        codes, steps = codes[keep], steps[keep]
        cols = {k: v[keep] for k, v in cols.items()}
    steps = steps.astype("int64")

    # Keep per-run step order; a resumed run may log a step twice: the later line wins.
    if len(steps) and not np.all((np.diff(steps) > 0) | (np.diff(codes) != 0)):
        order = np.lexsort((steps, codes))
        codes, steps = codes[order], steps[order]
        cols = {k: v[order] for k, v in cols.items()}
        last = np.ones(len(steps), dtype=bool)
        last[:-1] = (codes[1:] != codes[:-1]) | (steps[1:] != steps[:-1])
        codes, steps = codes[last], steps[last]
        cols = {k: v[last] for k, v in cols.items()}

    eval_by_run: dict[int, list[dict]] = {}
    for i, p in enumerate(paths):
        try:
            eval_by_run[i] = [] if rows[i]["detail"].startswith("unreadable record") else _eval_entries(p)
        except UserError as err:  # evaluations unreadable: the run stays, without them
            eval_by_run[i] = []
            notes.append(f"run record {p}: {err} (its evaluations are left out)")
    labels, settings = eval_labels([e for es in eval_by_run.values() for e in es])
    evals: dict[str, dict] = {}
    for i, es in eval_by_run.items():
        for e in sorted(es, key=lambda e: e["step"]):  # the latest step of each label wins
            label = labels[(e["benchmark"], e["setting"])]
            if isinstance(e["per_problem"], list):
                evals.setdefault(run_ids[i], {})[label] = {"step": e["step"], "per_problem": e["per_problem"]}
        eval_by_run[i] = [(e["step"], f"eval/{labels[(e['benchmark'], e['setting'])]}/{name}", float(v))
                          for e in es for name, v in e["metrics"].items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool)]
    with_eval = np.asarray([i for i, e in eval_by_run.items() if e], dtype="int64")
    named: dict[str, np.ndarray] = {}
    for key, values in cols.items():
        name = canonical(key)
        if name is None:
            continue
        if name.startswith("eval/") and len(with_eval):
            # eval.jsonl is the authoritative copy of evaluation results for that run.
            values = np.where(np.isin(codes, with_eval), np.nan, values)
        named[name] = values if name not in named else np.where(np.isnan(values), named[name], values)
    # Eval rows are few: append them as extra wide rows.
    extra = [(i, s, m, v) for i, e in eval_by_run.items() for (s, m, v) in e]
    if extra:
        import pandas as pd

        ev = pd.DataFrame(extra, columns=["code", "step", "metric", "value"])
        ev = ev.drop_duplicates(["code", "step", "metric"], keep="last")
        wide = ev.pivot_table(index=["code", "step"], columns="metric", values="value", aggfunc="last")
        n_old = len(steps)
        codes = np.concatenate([codes, wide.index.get_level_values(0).to_numpy()])
        steps = np.concatenate([steps, wide.index.get_level_values(1).to_numpy()])
        for name in named:
            named[name] = np.concatenate([named[name], np.full(len(wide), np.nan)])
        for name in wide.columns:
            old = named.get(name, np.full(n_old + len(wide), np.nan))
            old[n_old:] = wide[name].to_numpy()
            named[name] = old
        # No global re-sort (16 x 10^6 gathers): eval metrics live only in these appended rows,
        # which are in (run, step) order, so per (run, metric) step order still holds.
    models = {str(r.get("cfg.model.name")) for r in rows} | {os.path.basename(str(r.get("cfg.model.path")))
                                                             for r in rows}
    base = _base_evals(list(base_paths), labels, models, notes)
    return RunSet(make_runs(rows), wide_from_arrays(run_ids, codes, steps, named), summaries, notes,
                  evals, settings, base)
