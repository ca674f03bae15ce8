"""`run_report`: sources → RunSet → summaries → rendered tables (+ PNG plots). The CLI calls this."""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

from abcx.errors import UserError
from abcx.report.render import FORMATS, Table, fmt_ci, fmt_num, render
from abcx.report.runset import RunSet, concat
from abcx.report.stats import FEW_RUNS
from abcx.report.table import short_names
from abcx.record.states import State

PLOT_FORMATS = ("png", "pdf", "svg")
MAX_LISTED_RUNS = 40  # beyond this the terminal table lists only runs that are not finished


@dataclasses.dataclass
class Report:
    runset: RunSet
    per_run: Any
    group_keys: list
    tables: list
    notes: list
    text: str | None = None
    plots: list = dataclasses.field(default_factory=list)
    verdict: list = dataclasses.field(default_factory=list)  # the lines that end the report

    def table(self, key: str) -> Table:
        """The table of that key ("verdict", "runs", "groups", "table3", "pivot", ...)."""
        return next(t for t in self.tables if t.key == key)


def _filter(rs: RunSet, sweep: str | None, group: str | None, tags: list[str]) -> RunSet:
    runs = rs.runs
    keep = runs.index == runs.index
    if group:
        keep &= runs["group"].astype(str) == group
    if sweep:
        in_sweep = runs["group"].astype(str) == sweep
        if "sweep" in runs.columns:  # an unreadable record's row has no sweep (NaN): in none
            in_sweep |= runs["sweep"].fillna("").astype(str).str.split(",").apply(lambda names: sweep in names)
        keep &= in_sweep
    for tag in tags:
        keep &= runs["tags"].fillna("").astype(str).map(lambda t, tag=tag: tag in t.split(","))
    if not keep.all():
        rs = rs.select(runs.index[keep])
    return rs


def _state_label(row) -> str:
    return f"{row['state']} (stale)" if row.get("stale") else str(row["state"])


HEADERS = {"label_source": "labels from", "quadrant_source": "quadrants from", "reward_final": "reward",
           "entropy_last": "entropy", "entropy_ratio": "H/H_base",
           "completion_length": "length", "q1_share": "Q1", "q2_share": "Q2", "q3_share": "Q3",
           "q4_share": "Q4"}


def _count(x) -> str:
    """A seed or a step as a whole number, whatever dtype pandas gave its column."""
    import numbers

    return fmt_num(int(x)) if isinstance(x, numbers.Real) and not isinstance(x, bool) and x == x else fmt_num(x)


def _runs_table(per_run, keys: list[str], last_n: int, many: bool) -> Table:
    from abcx.report import metric_map as M

    cols = ["run_id", "state", "stale", "source", "label_source", "quadrant_source", *[k for k in keys if k != "run_id"],
            "seed", "step", "reward_final", "entropy_last", "entropy_ratio", "completion_length",
            "q1_share", "q2_share", "q3_share", "q4_share", "detail", "path"]
    cols = list(dict.fromkeys(c for c in cols if c in per_run.columns))
    data = per_run[cols].copy()
    if "quadrant_source" in data.columns:  # an unreadable record has none
        data["quadrant_source"] = data["quadrant_source"].astype(object).where(data["quadrant_source"].notna(), "")
    data["stale"] = data["stale"].fillna(False).astype(bool)
    shown = data.assign(state=per_run.apply(_state_label, axis=1)).drop(columns=["stale", "path"])
    notes = []
    if many:
        finished = shown["state"] == State.FINISHED
        notes.append(f"{int(finished.sum())} finished runs not listed here (csv/json list every run)")
        shown = shown[~finished]
    display = shown.copy()
    for c in display.columns:
        if c in ("seed", "step"):  # counts, float only where a row lacks one (a foreign log, a broken record)
            display[c] = display[c].map(_count)
        elif display[c].dtype.kind == "f":
            display[c] = display[c].map(fmt_num)
    # The per-run view leaves the quadrant shares to the groups table, to fit a terminal.
    display = display.drop(columns=[c for c in display.columns if c.endswith("_share")])
    display = display.rename(columns={**HEADERS, **short_names(keys)})
    constant = [c for c in ("source", "labels from", "detail") if c in display.columns and
                display[c].astype(str).nunique() <= 1 and (c != "detail" or (display[c].astype(str) == "").all())]
    if "quadrants from" in display.columns and display["quadrants from"].isin([M.OWN, ""]).all():
        constant.append("quadrants from")  # only abcx's own runs of today: nothing to say
    display = display.drop(columns=constant)
    notes.append(f"reward = last logged; entropy, length = mean of the last {last_n} logged steps; "
                 f"H/H_base = entropy / baseline method's")
    return Table("runs", "Runs", data, display, notes)


def _groups_table(groups, keys, metrics, last_n) -> Table:
    display = groups[[*(keys or ["all"]), "n"]].rename(columns=short_names(keys or []))
    display["left out"] = groups["other_states"].where(groups["n_other"] > 0, "")
    titles = HEADERS
    for m in metrics:
        if groups[f"{m}_mean"].notna().any():
            display[titles.get(m, m)] = [fmt_ci(a, b) for a, b in zip(groups[f"{m}_mean"], groups[f"{m}_ci"])]
    notes = ["Q1..Q4 = share of clip events by quadrant over the run: q_i / (q1+q2+q3+q4)"]
    few = groups[(groups["n"] > 1) & (groups["n"] < FEW_RUNS)]
    if len(few):
        notes.append(_few_runs_note(len(few), int(few["n"].min())))
    return Table("groups", f"Groups of finished runs: {_over_seeds(groups['n'])}", groups, display, notes)


def _over_seeds(n) -> str:
    """What a mean ± CI column holds, never claiming seeds that are not there."""
    if (n <= 1).all():
        return "one run each, so no interval (1 seed)"
    if (n >= 2).all():
        return "mean ± 95% CI over seeds"
    return "mean ± 95% CI over seeds where n ≥ 2 (n = 1: no interval)"


def _few_runs_note(n_groups: int, n: int) -> str:
    from abcx.report.stats import t975

    return (f"CAUTION: {n_groups} row(s) rest on {n} run(s); a 95% CI over {n} seeds uses t = {t975(n - 1):.1f} "
            f"and spans most of the metric's range: read it as 'not measured', not as an error bar "
            f"(run at least {FEW_RUNS} seeds)")


def _table3_display(t3) -> Any:
    from abcx.report.verdict import gain_cell

    cols = t3.attrs.get("columns", [])
    percent = bool(t3.attrs.get("percent"))
    display = t3[["model", "benchmark", "config", "method", "n"]].copy()
    for c in cols:
        display[c] = [gain_cell(r, c, percent, relative=True) if r["kind"] == "gain" else
                      fmt_ci(r[f"{c}_mean"], r[f"{c}_ci"], 1 if percent else 3) if r[f"{c}_mean"] == r[f"{c}_mean"]
                      else "–" for _, r in t3.iterrows()]
    for c in ("model", "config"):
        if (display[c] == "").all():
            display = display.drop(columns=c)
    return display


def _check_outputs(out: str | None, plots_dir: str | None) -> None:
    """--out names a file and --plots a folder, both writable: checked before any source is read."""
    from abcx.paths import check_writable

    if out:
        if os.path.isdir(out):
            raise UserError(f"--out {out}: is a folder; give a file path, e.g. {os.path.join(out, 'report.md')}")
        check_writable(os.path.dirname(os.path.abspath(out)), "--out's folder")
        if os.path.exists(out) and not os.access(out, os.W_OK):
            raise UserError(f"--out {out}: the file is not writable")
    if plots_dir:
        if os.path.exists(plots_dir) and not os.path.isdir(plots_dir):
            raise UserError(f"--plots {plots_dir}: is a file; give a folder for the PNG panels")
        check_writable(plots_dir, "--plots folder")


def _check_free_text(**options) -> None:
    """Options whose text the report prints or writes (labels, filters named in its notes, field names
    in its headers): never a credential."""
    from abcx.secrets import check_free_text

    for name, value in options.items():
        if value:
            check_free_text(f"--{name.replace('_', '-')}", value, into="the report")


def _check_args(fmt: str, last_n: int, pivot, out, plots_dir, plot_format: str, smooth: int, sources,
                wandb_project) -> list:
    """Every argument checked before any source is read; returns the pivots as a list of specs."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: valid formats are {', '.join(FORMATS)}")
    if plot_format not in PLOT_FORMATS:
        raise UserError(f"--plot-format {plot_format!r}: valid formats are {', '.join(PLOT_FORMATS)}")
    if last_n < 1:
        raise UserError(f"--last-n {last_n}: must be at least 1")
    if smooth < 1:
        raise UserError(f"--smooth {smooth}: must be at least 1 (1 = no smoothing)")
    pivots = [pivot] if pivot and isinstance(pivot[0], str) else list(pivot or [])
    for spec in pivots:
        if len(spec) not in (2, 3):
            raise UserError(f"--pivot {','.join(spec)}: expected ROW_FIELD,COL_FIELD[,METRIC]")
    _check_outputs(out, plots_dir)
    if not sources and not wandb_project:
        raise UserError("no sources: give paths (results dir, run folders, globs, wandb dirs, "
                        "trainer_state.json) or --wandb-project")
    return pivots


def read_runs(sources, wandb_project=None, sweep=None, group=None, tags=(), *, api=None,
              stale_after_s: float | None = None, metric_map=None, label_rules=(),
              trust_pickles: bool = False) -> RunSet:
    """Every source read into one RunSet, filtered to the sweep / group / tags asked for; runs abcx
    did not train get abcx's metric names (`metric_map`) and labels (`label_rules`, else inferred)."""
    from abcx.report import labels as LB
    from abcx.report import metric_map as M
    from abcx.report.sources import abcx_records
    from abcx.report.sources.discover import read_sources

    mmap = metric_map or M.load()
    stale = abcx_records.DEFAULT_STALE_AFTER_S if stale_after_s is None else stale_after_s
    sets = [read_sources(list(sources), stale_after_s=stale, metric_map=mmap)] if sources else []
    if wandb_project:
        from abcx.report.sources import wandb_online

        sets.append(M.apply(wandb_online.read_project(api or wandb_online.PublicApi(), wandb_project,
                                                      sweep=sweep, group=group, tags=list(tags)), mmap))
    rs = _filter(concat(sets), sweep, group, list(tags))
    if rs.runs.empty:
        raise UserError(_no_match(concat(sets), sweep, group, list(tags)))
    return LB.apply_labels(rs, list(label_rules), trust_pickles=trust_pickles)


def _no_match(everything: RunSet, sweep, group, tags: list) -> str:
    """One line naming the filters given (never Python's None or []) and what the sources hold instead."""
    asked = " ".join([*([f"--sweep {sweep}"] if sweep else []), *([f"--group {group}"] if group else []),
                      *(f"--tag {t}" for t in tags)])
    runs = everything.runs
    held = []
    if sweep and "sweep" in runs.columns:
        names = sorted({n for v in runs["sweep"].dropna().astype(str) for n in v.split(",") if n})
        held.append(f"sweeps here: {', '.join(names[:10])}" if names else "no run here belongs to a sweep")
    if group and "group" in runs.columns:
        names = sorted(set(runs["group"].dropna().astype(str)) - {""})
        held.append(f"groups here: {', '.join(names[:10])}" if names else "no run here has a group")
    where = f" ({'; '.join(held)})" if held else ""
    return f"no runs match {asked}{where}" if asked else "no runs found in the sources given"


def _group_keys(rs: RunSet, group_by: list[str] | None) -> list[str]:
    """--group-by, else (model, method) when runs come from other tools too (their configs share no
    fields with abcx's), else abcx's default: method plus the trained config fields that differ."""
    from abcx.report import labels as LB
    from abcx.report import table as T

    if group_by:
        return [T.resolve_field(rs.runs, k) for k in group_by]
    if LB.is_mixed(rs.runs):
        rs.notes.append("runs from other tools: grouped by model and method (--group-by to change)")
        return [LB.MODEL_COLUMN, "method"]
    return T.default_group_keys(rs.runs)


def summarise(rs: RunSet, group_by=None, baseline: str = "grpo", last_n: int = 10,
              stale_after_s: float | None = None) -> tuple[list, Any, list]:
    """(group keys, per-run summary, notes on what was left out and why)."""
    from abcx.report import metric_map as M
    from abcx.report import table as T
    from abcx.report.sources import abcx_records

    keys = _group_keys(rs, group_by)
    per_run = T.run_summary(rs, last_n=last_n, baseline=baseline, group_keys=keys)
    notes = list(rs.notes)
    unknown_q = per_run["q1_share"].isna() & per_run["run_id"].isin(rs.metric("clip/q1")["run_id"].astype(str))
    if unknown_q.any():
        notes.append(f"quadrant shares unknown for {int(unknown_q.sum())} run(s) whose source does not log all four "
                     "quadrants (TRL logs Q1 and Q3 only; abcx/report/metric_map.yaml)")
    before = per_run["quadrant_source"] == M.OWN_WITH_ZERO_ADV if "quadrant_source" in per_run.columns else []
    if any(before):
        notes.append(f"{int(sum(before))} abcx run(s) recorded before Q3/Q4 left out tokens with A = 0 (meta.json has no "
                     f"'quadrants'): their Q3/Q4 include those tokens, which carry no gradient; quadrants from "
                     f"'{M.OWN_WITH_ZERO_ADV}' in the runs table")
    states = per_run["state"].value_counts()
    n_fin = int(states.get(State.FINISHED.value, 0))
    if n_fin < len(per_run):
        others = ", ".join(f"{c} {s}" for s, c in states.items() if s != State.FINISHED)
        notes.append(f"{len(per_run) - n_fin} run(s) not finished ({others}): listed, left out of means")
    n_stale = int(per_run["stale"].fillna(False).astype(bool).sum())
    if n_stale:
        stale = abcx_records.DEFAULT_STALE_AFTER_S if stale_after_s is None else stale_after_s
        notes.append(f"{n_stale} running run(s) have not updated status.json for over {stale / 3600:.1f} h (stale)")
    if baseline not in set(per_run["method"]):
        notes.append(f"baseline method {baseline} not among the runs: no entropy ratio or gains (--baseline)")
    return keys, per_run, notes


def build_tables(rs: RunSet, per_run, keys: list, baseline: str, last_n: int, pivots: list,
                 many: bool, sweep: str | None = None) -> tuple[list, list, list]:
    """(tables, notes, pivot tables): the verdict, runs, groups, Table 3 and one table per pivot."""
    from abcx.report import table as T
    from abcx.report import verdict as V

    notes: list[str] = []
    metrics = [m for m in T.SUMMARY_METRICS if per_run[m].notna().any()]
    tables = [_runs_table(per_run, keys, last_n, many=many)]
    if (per_run["state"] == State.FINISHED).any():
        tables.append(_groups_table(T.group_summary(per_run, keys, metrics), keys, metrics, last_n))
    labels, contexts = T.run_labels(per_run, keys)
    t3, t3_notes = T.table3(rs, baseline, labels, contexts)
    notes.extend(t3_notes)
    if len(t3):
        values = t3[t3["kind"] == "value"]
        few = values[(values["n"] > 1) & (values["n"] < FEW_RUNS)]
        t3_table_notes = [_few_runs_note(len(few), int(few["n"].min()))] if len(few) else []
        tables.append(Table("table3", f"Evaluation (Table 3 layout): {_over_seeds(values['n'])}", t3,
                            _table3_display(t3), t3_table_notes))
        lead = V.verdict_table(t3, per_run, baseline)
        if lead is not None:
            lead.notes += [n for n in (V.interval_note(t3), V.seeds_note(t3, _sweep_hint(sweep, rs.runs)))
                           if n and (t3["kind"] == "gain").any()]
            tables.insert(0, lead)
    for i, spec in enumerate(pivots):
        tables.append(_pivot_table(i, spec, per_run, rs, last_n))
    return tables, notes, [t.data for t in tables if t.key.startswith("pivot")]


def _pivot_table(i: int, spec, per_run, rs: RunSet, last_n: int) -> Table:
    from abcx.report import table as T

    row, col, *rest = spec
    pv = T.pivot(per_run, rs, row, col, metric=rest[0] if rest else "reward_final", last_n=last_n)
    display = pv.map(fmt_num).reset_index()
    rname, cname = (str(n).removeprefix("cfg.") for n in (pv.index.name, pv.columns.name))
    display.columns = [f"{rname} \\ {cname}", *map(str, pv.columns)]
    return Table("pivot" if i == 0 else f"pivot{i + 1}", f"{pv.attrs['metric']}: mean over seeds, {rname} × {cname}",
                 pv, display, [pv.attrs["selection"]] if pv.attrs.get("selection") else [])


def _sweep_hint(sweep: str | None, runs) -> str | None:
    """The sweep to add seeds to: the one reported on, else the one sweep all finished runs belong to."""
    if sweep or "sweep" not in runs.columns:
        return sweep
    done = runs[runs["state"] == State.FINISHED]["sweep"].dropna().astype(str)
    shared = set.intersection(*({n for n in v.split(",") if n} for v in done)) if len(done) else set()
    return sorted(shared)[0] if len(shared) == 1 else None


def _long_table(rs: RunSet, per_run, keys: list, t3, baseline: str):
    """The tidy long table of --format csv: every run's metrics, then Table 3's Gains as rows of it."""
    from abcx.report import table as T
    from abcx.report import verdict as V

    long = T.tidy_long(rs, per_run, keys)
    gains = V.gain_rows_long(t3, baseline) if t3 is not None else None
    if gains is None or gains.empty:
        return long
    import pandas as pd

    return pd.concat([long, gains], ignore_index=True)


def _write(report: Report, tables: list, notes: list, fmt: str, out: str | None, console) -> None:
    """The tables in `fmt` to `out` or stdout. CSV is one tidy long table that `pandas.read_csv` loads
    in one call, so its notes and the verdict go to stderr rather than into the file."""
    verdict = report.verdict
    if fmt == "csv":
        for n in [*notes, *verdict]:
            print(n if n.startswith("Verdict") else f"note: {n}", file=sys.stderr)
        notes, verdict = [], []
    if out:
        if fmt == "rich":
            import io

            from rich.console import Console

            buffer = io.StringIO()
            render(tables, notes, fmt, Console(file=buffer, width=200, color_system=None), verdict)
            _write_out(out, buffer.getvalue())
        else:
            report.text = render(tables, notes, fmt, verdict=verdict)
            _write_out(out, report.text)
    else:
        report.text = render(tables, notes, fmt, console=console, verdict=verdict)
        if report.text is not None:
            print(report.text, end="")


def _write_out(out: str, text: str) -> None:
    """--out whole or not at all: a regular file is written beside and renamed into place; a device or
    pipe (/dev/stdout) is written directly. A write that fails (a full disk, /dev/full) is one line."""
    import tempfile

    target = os.path.realpath(out)  # a symlink's target is written, the link stays
    try:
        if os.path.exists(target) and not os.path.isfile(target):
            with open(target, "w", encoding="utf-8") as fh:
                fh.write(text)
            return
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=f".{os.path.basename(target)}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # as open() would have made it, not mkstemp's 0600
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as err:
        raise UserError(f"--out {out}: cannot be written ({err.strerror or err}); give a file path in a writable "
                        f"folder with free space") from None


def run_report(sources: list[str], wandb_project: str | None = None, sweep: str | None = None,
               group: str | None = None, tags: list[str] = (), group_by: list[str] | None = None,
               baseline: str = "grpo", last_n: int = 10, fmt: str = "rich", plots_dir: str | None = None,
               out: str | None = None, pivot: tuple | None = None, *, api=None, console=None,
               stale_after_s: float | None = None, plot_format: str = "png", smooth: int = 5,
               label_rules: list[str] = (), labels_file: str | None = None, metric_map: str | None = None,
               trust_pickles: bool = False) -> Report:
    """Read every source, summarise, print (or write to `out`) the tables in `fmt`, and write the
    panels to `plots_dir` (with plots.json, the list of what was drawn). `pivot` = (row_field,
    col_field[, metric]) with metric default `reward_final`. `api` replaces the W&B public API.
    `label_rules` (GLOB=key:value,...), `labels_file` and `metric_map` label and translate runs abcx
    did not train (abcx/report/labels.py, metric_map.py)."""
    from abcx.report import labels as LB
    from abcx.report import metric_map as M

    pivots = _check_args(fmt, last_n, pivot, out, plots_dir, plot_format, smooth, sources, wandb_project)
    _check_free_text(label=list(label_rules), tag=list(tags), sweep=sweep, group=group, group_by=group_by,
                     pivot=[list(p) for p in pivots], baseline=baseline, wandb_project=wandb_project)
    mmap = M.load(metric_map)
    rules = [LB.parse_rule(r) for r in label_rules] + (LB.load_rules(labels_file) if labels_file else [])
    rs = read_runs(sources, wandb_project, sweep, group, tags, api=api, stale_after_s=stale_after_s,
                   metric_map=mmap, label_rules=rules, trust_pickles=trust_pickles)
    keys, per_run, notes = summarise(rs, group_by, baseline, last_n, stale_after_s)
    many = len(per_run) > MAX_LISTED_RUNS and fmt in ("rich", "markdown", "latex")
    tables, table_notes, pivot_tables = build_tables(rs, per_run, keys, baseline, last_n, pivots, many, sweep)
    notes.extend(table_notes)
    from abcx.report import verdict as V

    t3 = next((t.data for t in tables if t.key == "table3"), None)
    verdict = V.verdict_lines(t3, baseline, _sweep_hint(sweep, rs.runs)) if t3 is not None else []
    from abcx.report import sweep as SW

    sweep_dir = SW.find_sweep_dir(sources, sweep)  # what its strategy decided: rungs, seed intervals
    tables.extend(SW.tables(sweep_dir))
    if fmt == "csv":
        tables = [Table("long", "every run's metrics, one row per value, then each Gain with its interval",
                        _long_table(rs, per_run, keys, t3, baseline), None)]
    report = Report(rs, per_run, keys, tables, notes, verdict=verdict)
    if plots_dir:
        from abcx.report.plots import plot_all

        report.plots = plot_all(rs, per_run, keys, plots_dir, pivot_tables=pivot_tables, fmt=plot_format,
                                smooth=smooth, baseline=baseline, sweep_dir=sweep_dir)
        notes.append(f"{len(report.plots)} plot(s) written to {plots_dir} (listed in plots.json)")
    _write(report, tables, notes, fmt, out, console)
    return report
