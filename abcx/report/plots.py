"""The report's figures (matplotlib, Agg backend), after Figure 4 of the paper and Yue et al.'s Pass@k
curve: reward, entropy and length over steps; Avg@n and Pass@k over steps from step 0 (the starting
model) and Pass@k against k on a log2 axis; the share of clip events by quadrant over the whole run as
bars beside per-step curves. Each line is the mean over seeds of one group, smoothed by a rolling
window; the band is the min–max over seeds. Legends sit outside the axes so they never cover data.

`plots.json` in the output folder lists what was drawn, read back from the figures' own artists
(per panel: title, axis labels and scales, series with their point counts, bars), so a test or a
script can check a figure without looking at pixels.
"""
from __future__ import annotations

import json
import os
import re

from abcx.report.runset import RunSet
from abcx.report.table import EVAL_RE, QUADRANTS, run_labels
from abcx.record.states import State

BAND = "line: mean over seeds; band: min–max over seeds"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def group_labels(per_run, keys: list[str]) -> dict[str, str]:
    """run_id → a short legend label: the method with the fields that vary within it, then the other
    differing fields ("abc_grpo eps3=inf", "grpo max_steps=12")."""
    methods, contexts = run_labels(per_run, keys)
    return {rid: " ".join(x for x in (methods[rid], contexts[rid]) if x) for rid in methods}


def _groups(labels: dict[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for rid, label in labels.items():
        out.setdefault(label, []).append(rid)
    return out


def _wide(rs: RunSet, metric: str, run_ids: list[str], smooth: int = 1):
    sub = rs.metric(metric)
    sub = sub[sub["run_id"].isin(run_ids)]
    if sub.empty:
        return None
    wide = sub.pivot_table(index="step", columns="run_id", values="value", aggfunc="last", observed=True)
    if smooth > 1:  # per run, over its logged steps: a trailing window, as W&B's smoothing
        wide = wide.rolling(smooth, min_periods=1).mean()
    return wide


def _legend(ax, n: int) -> None:
    """Outside the axes on the right: never on top of the data, one column up to 8 entries."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
              ncol=1 if n <= 8 else 2, frameon=False)


def _draw_groups(ax, wide_by_group: dict, title: str, ylabel: str, base: float | None = None,
                 legend: bool = True) -> bool:
    drawn = 0
    for label, wide in sorted(wide_by_group.items()):
        if wide is None or wide.empty:
            continue
        steps = wide.index.to_numpy()
        mean = wide.mean(axis=1).to_numpy()
        if base is not None and steps.min() > 0:  # every run starts from the base model: step 0
            import numpy as np

            steps, mean = np.concatenate([[0], steps]), np.concatenate([[base], mean])
        line, = ax.plot(steps, mean, label=f"{label} (n={wide.shape[1]})", lw=1.5, marker="o" if len(steps) < 12 else None, ms=3)
        if wide.shape[1] > 1:
            ax.fill_between(wide.index.to_numpy(), wide.min(axis=1).to_numpy(), wide.max(axis=1).to_numpy(),
                            color=line.get_color(), alpha=0.2, lw=0)
        drawn += 1
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title, fontsize=10)
    ax.set_xlabel("training step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if drawn and legend:
        _legend(ax, drawn)
    return bool(drawn)


def _footnote(fig, text: str) -> None:
    fig.text(0.01, -0.02, text, fontsize=8, ha="left", va="top", color="0.3")


def _legend_outside(ax) -> bool | None:
    """Whether the axes' legend lies entirely outside its data area (None: no legend)."""
    legend = ax.get_legend()
    if legend is None:
        return None
    renderer = ax.figure.canvas.get_renderer()
    box, area = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    return bool(box.x0 >= area.x1 or box.x1 <= area.x0 or box.y0 >= area.y1 or box.y1 <= area.y0)


def _describe(fig) -> list[dict]:
    """What a figure holds, read from its artists: the machine-readable list of plots.json."""
    fig.canvas.draw()  # lays out text and legends, so their extents are final
    panels = []
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        series = [{"label": str(line.get_label()), "points": int(len(line.get_xdata()))}
                  for line in ax.get_lines() if not str(line.get_label()).startswith("_")]
        bars = [{"label": str(c.get_label()), "bars": len(c.patches), "heights": [float(p.get_height()) for p in c.patches]}
                for c in ax.containers]
        panels.append({"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
                       "xscale": ax.get_xscale(), "series": series, "bars": bars,
                       "images": len(ax.get_images()), "legend": ax.get_legend() is not None,
                       "legend_outside": _legend_outside(ax)})
    return panels


class _Writer:
    def __init__(self, out_dir: str, fmt: str):
        self.out_dir, self.fmt, self.files, self.manifest = out_dir, fmt, [], []

    def save(self, fig, name: str, caption: str) -> None:
        path = os.path.join(self.out_dir, f"{name}.{self.fmt}")
        fig.savefig(path, dpi=110, bbox_inches="tight")  # tight: the outside legends are kept
        self.manifest.append({"file": os.path.basename(path), "caption": caption, "panels": _describe(fig)})
        _plt().close(fig)
        self.files.append(path)

    def finish(self) -> list[str]:
        with open(os.path.join(self.out_dir, "plots.json"), "w", encoding="utf-8") as fh:
            json.dump({"format": self.fmt, "figures": self.manifest}, fh, indent=2)
        return self.files


def plot_all(rs: RunSet, per_run, keys: list[str], out_dir: str, pivot_tables=(), fmt: str = "png",
             smooth: int = 5, baseline: str = "grpo", sweep_dir=None) -> list[str]:
    """Write every figure the data allows into out_dir, and plots.json; return the figure paths.
    `sweep_dir` (report --sweep): the strategy's own figure too (a halving sweep's rung curves)."""
    os.makedirs(out_dir, exist_ok=True)
    finished = per_run[per_run["state"] == State.FINISHED]
    chosen = finished if len(finished) else per_run
    groups = _groups(group_labels(chosen, keys))
    w = _Writer(out_dir, fmt)
    _training(rs, groups, w, smooth)
    _evaluations(rs, groups, w)
    _quadrants(rs, groups, w, smooth)
    for i, table in enumerate(pivot_tables or []):
        _heatmap(table, w, "pivot_heatmap" if i == 0 else f"pivot_heatmap{i + 1}")
    from abcx.report.sweep import plot_rungs

    plot_rungs(sweep_dir, w, _plt())
    return w.finish()


TRAINING = (("reward", "reward (mean over the batch)"), ("entropy", "token entropy (nats)"),
            ("completion_length", "completion length (tokens)"))


def _training(rs: RunSet, groups: dict, w: _Writer, smooth: int) -> None:
    plt = _plt()
    for metric, ylabel in TRAINING:
        wides = {g: _wide(rs, metric, ids, smooth) for g, ids in groups.items()}
        if any(x is not None for x in wides.values()):
            fig, ax = plt.subplots(figsize=(6.5, 4))
            window = f", rolling mean over {smooth} steps" if smooth > 1 else ""
            _draw_groups(ax, wides, metric, ylabel)
            _footnote(fig, BAND + window)
            w.save(fig, metric, f"{metric} over training steps; {BAND}{window}")


def _eval_names(rs: RunSet) -> dict[str, dict[str, list[int]]]:
    by_bench: dict[str, dict[str, list[int]]] = {}
    for m in rs.metrics:
        if (match := EVAL_RE.match(m)):
            by_bench.setdefault(match["bench"], {}).setdefault(match["stat"], []).append(int(match["k"]))
    return by_bench


def _evaluations(rs: RunSet, groups: dict, w: _Writer) -> None:
    """Per benchmark: Avg@n and Pass@n over steps from step 0, and Pass@k against k (log2 axis)."""
    plt = _plt()
    for bench, stats in sorted(_eval_names(rs).items()):
        base = rs.base_evals.get(bench, {}).get("metrics", {})
        panels = [(s, max(stats[s])) for s in ("avg", "pass") if s in stats]
        fig, axes = plt.subplots(1, len(panels) + 1, figsize=(6 * (len(panels) + 1), 4), squeeze=False)
        for ax, (stat, k) in zip(axes[0], panels):
            name = f"{stat}@{k}"
            _draw_groups(ax, {g: _wide(rs, f"eval/{bench}/{name}", ids) for g, ids in groups.items()},
                         f"{bench}: {stat.capitalize()}@{k}", f"{stat.capitalize()}@{k}",
                         base=base.get(name), legend=False)
        _pass_at_k(axes[0][-1], rs, bench, sorted(stats.get("pass", [])), groups, base)
        step0 = f"; step 0 = the starting model ({rs.base_evals[bench]['name']})" if base else \
            "; no evaluation of the starting model (run `abcx eval <model>` with the same eval settings)"
        setting = rs.eval_settings.get(bench, "")
        _footnote(fig, f"{BAND}; sampled with {setting}{step0}" if setting else BAND + step0)
        w.save(fig, f"eval_{re.sub(r'[^A-Za-z0-9_.-]+', '_', bench)}",
               f"{bench} ({setting}): Avg@n and Pass@n over training, Pass@k against k at the last evaluation{step0}")


def _pass_at_k(ax, rs: RunSet, bench: str, ks: list[int], groups: dict, base: dict) -> None:
    import numpy as np

    drawn = 0
    for label, ids in sorted(groups.items()):
        curves = []
        for k in ks:
            sub = rs.metric(f"eval/{bench}/pass@{k}")
            last = sub[sub["run_id"].isin(ids)].groupby("run_id", observed=True)["value"].last()
            curves.append(last.to_numpy())
        if not ks or not all(len(c) for c in curves):
            continue
        mean = [float(np.mean(c)) for c in curves]
        line, = ax.plot(ks, mean, marker="o", ms=3, label=f"{label} (n={len(curves[0])})")
        if len(curves[0]) > 1:
            ax.fill_between(ks, [c.min() for c in curves], [c.max() for c in curves], color=line.get_color(),
                            alpha=0.2, lw=0)
        drawn += 1
    base_ks = [k for k in ks if f"pass@{k}" in base]
    if base_ks:
        ax.plot(base_ks, [base[f"pass@{k}"] for k in base_ks], "k--", marker="s", ms=3, label="base model (step 0)")
        drawn += 1
    ax.set_xscale("log", base=2)
    ax.set_title(f"{bench}: Pass@k against k (last evaluation)", fontsize=10)
    ax.set_xlabel("k (samples per problem, log2)")
    ax.set_ylabel("Pass@k")
    ax.grid(alpha=0.3, which="both")
    if drawn:
        _legend(ax, drawn)


def _quadrants(rs: RunSet, groups: dict, w: _Writer, smooth: int) -> None:
    """Figure 4f: the share of clip events by quadrant over the whole run (bars), beside per-step shares."""
    import numpy as np

    if not any(q in rs.metrics for q in QUADRANTS):
        return
    plt = _plt()
    ids = [r for g in groups.values() for r in g]
    fig, axes = plt.subplots(1, 5, figsize=(22, 3.8), gridspec_kw={"width_ratios": [1.3, 1, 1, 1, 1]})
    totals = {}
    for i, q in enumerate(QUADRANTS, start=1):
        sub = rs.metric(q)
        totals[f"Q{i}"] = sub[sub["run_id"].isin(ids)].groupby("run_id", observed=True)["value"].sum()
    names = sorted(groups)
    width = 0.8 / max(1, len(names))
    whole = sum(t.reindex(ids).fillna(0) for t in totals.values())
    for j, label in enumerate(names):
        member = groups[label]
        shares = [float((totals[q].reindex(member).fillna(0) / whole.reindex(member).where(lambda s: s > 0)).mean())
                  for q in totals]
        axes[0].bar(np.arange(4) + j * width, np.nan_to_num(shares), width, label=label)
    axes[0].set_xticks(np.arange(4) + width * (len(names) - 1) / 2, list(totals))
    axes[0].set_title("clip events by quadrant, whole run", fontsize=10)
    axes[0].set_xlabel("quadrant")
    axes[0].set_ylabel("share of clip events (mean over seeds)")
    shares = _quadrant_shares(rs, ids)
    for i, ax in enumerate(axes[1:], start=1):
        wides = {}
        for g, member in groups.items():
            sub = shares[shares["run_id"].isin(member)]
            wide = sub.pivot_table(index="step", columns="run_id", values=f"q{i}", aggfunc="last",
                                   observed=True) if len(sub) else None
            wides[g] = wide.rolling(smooth, min_periods=1).mean() if wide is not None and smooth > 1 else wide
        _draw_groups(ax, wides, f"Q{i} share per step", f"Q{i} share of clip events", legend=i == 4)
    fig.subplots_adjust(wspace=0.35)
    _footnote(fig, f"bars: q_i / (q1+q2+q3+q4) summed over the run; curves: per step, {BAND}"
                   + (f", rolling mean over {smooth} steps" if smooth > 1 else ""))
    w.save(fig, "quadrant_shares", f"share of clip events by quadrant: whole run (bars) and per step; {BAND}")


def _heatmap(table, w: _Writer, name: str) -> None:
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.2 * table.shape[1] + 2.5, 0.9 * table.shape[0] + 1.8))
    data = table.to_numpy(dtype=float)
    im = ax.imshow(data, cmap="viridis", aspect="auto")
    ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns])
    ax.set_yticks(range(table.shape[0]), [str(r) for r in table.index])
    ax.set_xlabel(str(table.columns.name).removeprefix("cfg."))  # named as on the command line
    ax.set_ylabel(str(table.index.name).removeprefix("cfg."))
    finite = np.isfinite(data)
    mid = np.nanmin(data) + (np.nanmax(data) - np.nanmin(data)) / 2 if finite.any() else 0
    for (i, j), v in np.ndenumerate(data):
        if v == v:  # dark text on the bright end of viridis, light text on the dark end
            ax.text(j, i, f"{v:.3g}", ha="center", va="center", color="k" if v > mid else "w", fontsize=8)
    metric = table.attrs.get("metric", "")
    fig.colorbar(im, ax=ax, label=metric)
    ax.set_title(f"{metric} (mean over seeds)")
    w.save(fig, name, f"{metric}: mean over seeds per cell")


def _quadrant_shares(rs: RunSet, run_ids: list[str]):
    """Per (run, step): q_i / (q1+q2+q3+q4), NaN where no clip event happened at that step."""
    import pandas as pd

    parts = []
    for i, q in enumerate(QUADRANTS, start=1):
        sub = rs.metric(q)
        parts.append(sub[sub["run_id"].isin(run_ids)].set_index(["run_id", "step"])["value"].rename(f"q{i}"))
    wide = pd.concat(parts, axis=1).fillna(0.0)
    total = wide.sum(axis=1)
    wide = wide.div(total.where(total > 0), axis=0)
    return wide.reset_index()
