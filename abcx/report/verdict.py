"""The verdict: what a reader takes away first and last.

First, a compact table per model and benchmark (each method's headline accuracy, its difference from the
baseline with its 95% interval or `(n.s.)`, the entropy ratio and the Q4 share) that fits 80 columns;
last, one line per comparison that says which method, by how much, with what interval, what the interval
covers, and what to run next to decide. The notes say what a Gain interval covers (problems, or problems
and seeds) and when too few seeds leave seed-to-seed variation unmeasured.

Everything here reads Table 3 (`abcx.report.table.table3`) and the per-run summary; nothing is computed
twice.
"""
from __future__ import annotations

import math

from abcx.report.render import Table, fmt_ci, fmt_num

# What a Gain interval spans (a Table 3 Gain row's `<col>_covers`): the paired bootstrap resamples
# problems, and seeds only where each side has at least two; Welch's t on seed means spans seeds alone.
COVERS_PROBLEMS_AND_SEEDS = "problems and seeds"
COVERS_PROBLEMS = "problems only"
COVERS_SEEDS = "seeds only"
ENOUGH_SEEDS = 3  # below this many seeds a side, seed-to-seed variation is not (1) or barely (2) measured


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def headline_column(t3) -> str | None:
    """The accuracy a verdict leads with: Avg@n (= Pass@1), else the first column."""
    cols = t3.attrs.get("columns", []) if t3 is not None else []
    return next((c for c in cols if c.startswith("Avg@")), cols[0] if cols else None)


def gain_cell(row, col: str, percent: bool, *, relative: bool = False, compact: bool = False) -> str:
    """A Gain cell: the difference (pp when percent), its 95% interval, `(n.s.)` when the interval holds 0.
    `compact` (the verdict table) leaves out the interval of an n.s. difference to fit 80 columns."""
    mean, lo, hi, sig = row.get(f"{col}_mean"), row.get(f"{col}_lo"), row.get(f"{col}_hi"), row.get(f"{col}_sig")
    if not _finite(mean):
        return "–"
    d = 1 if percent else 3
    unit = " pp" if percent and not compact else ""
    text = f"{mean:+.{d}f}{unit}"
    rel = row.get(f"{col}_rel")
    if relative and _finite(rel):
        text = f"{rel:+.1%} ({text})"
    if not (_finite(lo) and _finite(hi)):
        return f"{text} (no interval)"
    interval = f"[{lo:+.{d}f}, {hi:+.{d}f}]"
    if sig == "n.s.":
        return f"{text} (n.s.)" if compact else f"{text} {interval} (n.s.)"
    return f"{text} {interval}"


def _seeds_text(n_a: int, n_b: int) -> str:
    return f"{n_a} seed{'s' if n_a != 1 else ''} each" if n_a == n_b else f"{n_a} vs {n_b} seeds"


def interval_note(t3) -> str:
    """What the Gain intervals cover, in one note (several kinds when rows differ)."""
    gains = t3[t3["kind"] == "gain"] if len(t3) else t3
    parts = []
    for col in t3.attrs.get("columns", []):
        if f"{col}_covers" not in gains.columns:
            continue
        for covers, g in gains.groupby(gains[f"{col}_covers"].fillna("")):
            seeds = sorted({_seeds_text(int(a), int(b)) for a, b in zip(g["n"], g["n_base"])})
            text = {COVERS_PROBLEMS_AND_SEEDS: "paired two-level bootstrap over problems and seeds",
                    COVERS_PROBLEMS: "paired bootstrap over problems only (seed-to-seed variation not in it)",
                    COVERS_SEEDS: "Welch t over seed means only (no per-problem counts)"}.get(covers)
            if text and (text, tuple(seeds)) not in parts:
                parts.append((text, tuple(seeds)))
    described = "; ".join(f"{text}, {', '.join(seeds)}" for text, seeds in parts)
    return (f"Gain intervals (95%): {described or 'none'}; (n.s.) = the interval holds 0: "
            f"noise, not a difference")


def add_seeds_command(sweep: str | None, seeds: int) -> str:
    """The command that adds seeds to a comparison (the sweep's seed axis replaced; finished seeds reused)."""
    target = max(ENOUGH_SEEDS, 2 * seeds)
    return f"abcx sweep run {sweep or '<sweep>'} seed={','.join(str(s) for s in range(target))}"


def seeds_note(t3, sweep: str | None) -> str | None:
    """A note when a Gain rests on fewer than ENOUGH_SEEDS seeds a side, with the command that adds them."""
    gains = t3[t3["kind"] == "gain"] if len(t3) else t3
    if gains.empty:
        return None
    fewest = int(min(gains["n"].min(), gains["n_base"].min()))
    if fewest >= ENOUGH_SEEDS:
        return None
    how = "not measured: the intervals cover problems only" if fewest == 1 else \
        "barely measured: the intervals rest on 2 runs a side"
    return (f"{fewest} seed{'s' if fewest > 1 else ''} a side: seed-to-seed variation is {how}. Add seeds: "
            f"{add_seeds_command(sweep, fewest)} (or a `seeds` strategy, which adds them until the "
            f"interval decides)")


def _value_cell(row, col: str, percent: bool) -> str:
    mean, hw = row.get(f"{col}_mean"), row.get(f"{col}_ci")
    return fmt_ci(mean, hw, 1 if percent else 3) if _finite(mean) else "–"


def _per_run_mean(per_run, ids, column: str) -> float:
    if not ids or column not in per_run.columns:
        return math.nan
    values = per_run.loc[per_run["run_id"].astype(str).isin(ids), column]
    values = values[values.map(_finite)]
    return float(values.mean()) if len(values) else math.nan


def verdict_table(t3, per_run, baseline: str) -> Table | None:
    """Per model and benchmark, each method's headline accuracy, its difference from the baseline (the
    95% interval, or `(n.s.)` when it holds 0), H/H_base and the Q4 share; None without Table 3."""
    import pandas as pd

    col = headline_column(t3)
    if col is None or t3.empty:
        return None
    percent = bool(t3.attrs.get("percent"))
    gains = {(r["model"], r["benchmark"], r["config"], r["method"]): r for _, r in t3[t3["kind"] == "gain"].iterrows()}
    rows, data = [], []
    for _, r in t3[t3["kind"] != "gain"].iterrows():
        ids = str(r.get("runs") or "").split(",") if r["kind"] == "value" else []
        gain = gains.get((r["model"], r["benchmark"], r["config"], f"Gain {r['method']} vs {baseline}"))
        ratio, q4 = _per_run_mean(per_run, ids, "entropy_ratio"), _per_run_mean(per_run, ids, "q4_share")
        rows.append({"model": r["model"], "benchmark": r["benchmark"], "config": r["config"], "method": r["method"],
                     "seeds": str(int(r["n"])) if r["kind"] == "value" else "",
                     col: _value_cell(r, col, percent),
                     f"vs {baseline}": gain_cell(gain, col, percent, compact=True) if gain is not None else "",
                     "H/H_base": fmt_num(ratio, 2) if _finite(ratio) else "",
                     "Q4": f"{q4:.0%}" if _finite(q4) else ""})
        data.append({"model": r["model"], "benchmark": r["benchmark"], "config": r["config"], "method": r["method"],
                     "seeds": int(r["n"]) if r["kind"] == "value" else None, col: r.get(f"{col}_mean"),
                     f"{col}_ci": r.get(f"{col}_ci"),
                     **({f"diff_{k}": gain.get(f"{col}_{k}") for k in ("mean", "lo", "hi", "sig", "covers")}
                        if gain is not None else {}),
                     "entropy_ratio": ratio, "q4_share": q4})
    display, data = pd.DataFrame(rows), pd.DataFrame(data)
    models = sorted(set(display["model"]) - {""})
    for c in ("model", "config"):
        if display[c].nunique() <= 1:
            display = display.drop(columns=c)
    for c in ("H/H_base", "Q4"):
        if (display[c] == "").all():
            display = display.drop(columns=c)
    unit = " in %" if percent else ""
    where = f" ({models[0]})" if len(models) == 1 else ""
    if not gains:  # nothing to compare with: say so rather than head an empty column
        title = f"Verdict{where}: {col}{unit} (no finished {baseline} runs to compare with: --baseline)"
        return Table("verdict", title, data, display.drop(columns=f"vs {baseline}"), [], compact=True)
    title = f"Verdict{where}: {col}{unit}, difference from {baseline} with its 95% CI"
    notes = [f"vs {baseline}: {col} difference{' in pp' if percent else ''}, [95% CI] or (n.s.) when it holds 0; "
             f"H/H_base: entropy at the end / {baseline}'s; Q4: share of clip events with A < 0 and r too high"]
    return Table("verdict", title, data, display, notes, compact=True)


def _direction(mean: float, percent: bool) -> str:
    d = 1 if percent else 3
    if round(mean, d) == 0:
        return "the same as"
    return f"{abs(mean):.{d}f}{' pp' if percent else ''} {'higher' if mean > 0 else 'lower'}"


def verdict_lines(t3, baseline: str, sweep: str | None, limit: int = 3) -> list[str]:
    """One line per comparison on the headline column: which method, the difference, its interval, what
    the interval covers, and what to run next to decide (more seeds, while fewer than 3 a side or n.s.)."""
    col = headline_column(t3)
    if col is None or t3.empty:
        return []
    percent = bool(t3.attrs.get("percent"))
    values = {(r["model"], r["benchmark"], r["config"], r["method"]): r for _, r in t3[t3["kind"] == "value"].iterrows()}
    gains = t3[(t3["kind"] == "gain") & t3[f"{col}_mean"].map(_finite)]
    models = set(t3["model"]) - {""}
    lines = []
    for _, g in gains.head(limit).iterrows():
        label = g["method"].removeprefix("Gain ").removesuffix(f" vs {baseline}")
        a = values.get((g["model"], g["benchmark"], g["config"], label), {})
        b = values.get((g["model"], g["benchmark"], g["config"], baseline), {})
        where = " ".join(x for x in (g["benchmark"], f"({g['config']})" if g["config"] else "",
                                     f"[{g['model']}]" if len(models) > 1 else "") if x)
        unit = "%" if percent else ""
        scores = f"{col} {fmt_num(a.get(f'{col}_mean'), 1 if percent else 3)}{unit} vs " \
                 f"{fmt_num(b.get(f'{col}_mean'), 1 if percent else 3)}{unit}" if len(a) and len(b) else col
        direction = _direction(g[f"{col}_mean"], percent)
        line = f"Verdict: on {where}, {label} scores {direction}{'' if direction == 'the same as' else ' than'} " \
               f"{baseline} ({scores})"
        lines.append(line + _interval_clause(g, col, percent) + _next_step(g, col, sweep))
    if len(gains) > limit:
        lines.append(f"(and {len(gains) - limit} more comparison(s): the verdict table)")
    return lines


def _interval_clause(g, col: str, percent: bool) -> str:
    lo, hi, covers = g.get(f"{col}_lo"), g.get(f"{col}_hi"), g.get(f"{col}_covers")
    if not (_finite(lo) and _finite(hi)):
        return "; no interval (one seed and no per-problem counts): not a measured difference."
    d, unit = (1, " pp") if percent else (3, "")
    seeds = _seeds_text(int(g["n"]), int(g["n_base"]))
    problems = g.get(f"{col}_problems")
    over = {COVERS_PROBLEMS_AND_SEEDS: f"over {int(problems) if _finite(problems) else 'the'} problems and seeds "
                                       f"({seeds})",
            COVERS_PROBLEMS: f"over {int(problems) if _finite(problems) else 'the'} problems only ({seeds})",
            COVERS_SEEDS: f"over seeds only ({seeds})"}.get(covers, "")
    holds = "holds 0: no difference measured" if g.get(f"{col}_sig") == "n.s." else "excludes 0"
    return f"; 95% CI [{lo:+.{d}f}, {hi:+.{d}f}]{unit} {over}, {holds}."


def _next_step(g, col: str, sweep: str | None) -> str:
    fewest = int(min(g["n"], g["n_base"]))
    if fewest < ENOUGH_SEEDS:
        what = "not measured" if fewest == 1 else "barely measured"
        return f" Seed-to-seed variation is {what}; to decide: {add_seeds_command(sweep, fewest)}"
    if g.get(f"{col}_sig") == "n.s.":
        return f" To narrow it: {add_seeds_command(sweep, fewest)}"
    return ""


def gain_rows_long(t3, baseline: str):
    """Table 3's Gain cells as rows of the tidy long CSV: method, metric `gain_vs_<baseline>/<benchmark>/
    <col>`, value, its interval (`low`, `high`), `significance` (sig, n.s., ...) and what the interval
    covers (`interval_over`)."""
    import pandas as pd

    rows = []
    for _, g in (t3[t3["kind"] == "gain"] if len(t3) else t3).iterrows():
        label = g["method"].removeprefix("Gain ").removesuffix(f" vs {baseline}")
        for col in t3.attrs.get("columns", []):
            if not _finite(g.get(f"{col}_mean")):
                continue
            where = "/".join(x for x in (g["model"], g["benchmark"], g["config"]) if x)
            rows.append({"method": label, "metric": f"gain_vs_{baseline}/{where}/{col.lower()}",
                         "value": g[f"{col}_mean"], "low": g.get(f"{col}_lo"), "high": g.get(f"{col}_hi"),
                         "significance": g.get(f"{col}_sig"), "interval_over": g.get(f"{col}_covers") or ""})
    return pd.DataFrame(rows, columns=["method", "metric", "value", "low", "high", "significance", "interval_over"])
