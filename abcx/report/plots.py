"""The report's figures (matplotlib, Agg backend), after Figure 4 of the paper and Yue et al.'s Pass@k
curve: reward, entropy and length over steps; Avg@n and Pass@k over steps from step 0 (the starting
model) and Pass@k against k on a log2 axis; the share of clip events by quadrant over the whole run as
bars above per-step curves. Each line is one run, or the mean over seeds of one group (the band then
its min–max), smoothed by a rolling window; captions say which. Legend labels say only what differs
between the runs a figure shows. Legends sit outside the data area (right of a lone panel, below
each panel of a grid, so every panel reads on its own), inside the saved figure.

`plots.json` in the output folder lists what was drawn, read back from the figures' own artists
(per panel: title, axis labels and scales, series with their point counts, bars, size in pixels, the
legend's labels and whether it covers data or leaves the figure), so a test or a script can check a
figure without looking at pixels.
"""
from __future__ import annotations

import json
import os
import re

from abcx.report.runset import RunSet
from abcx.report.table import EVAL_RE, QUADRANTS, run_labels
from abcx.record.states import State

PER_RUN = "each line: one run"
BAND = "line: mean over seeds; band: min–max over seeds"
LABEL_CHARS = 40  # a legend label longer than this is cut (with …): it says only what differs anyway
DPI = 110


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


class Groups:
    """The lines of one figure: label -> run ids, labelled by what differs between the runs it shows
    (not between every run of the report), and what a line is (one run, or a mean over seeds)."""

    def __init__(self, per_run, keys: list[str], run_ids) -> None:
        shown = per_run[per_run["run_id"].astype(str).isin({str(r) for r in run_ids})]
        differing = [k for k in keys if k == "method" or k not in shown.columns
                     or shown[k].astype(str).nunique() > 1]
        self.members: dict[str, list[str]] = {}
        for rid, label in group_labels(shown, differing).items():
            self.members.setdefault(_cut(label), []).append(rid)
        sizes = {len(ids) for ids in self.members.values()}
        self.same_n = len(sizes) <= 1
        self.n = max(sizes, default=0)

    def label(self, name: str, runs: int) -> str:
        """The legend label: `(n=3)` only where lines differ in how many runs they average."""
        return name if self.same_n else f"{name} (n={runs})"

    def band_text(self) -> str:
        """What a line (and its band) is, true for what is drawn."""
        if self.n <= 1:
            return PER_RUN
        return BAND + (f" ({self.n} runs per line)" if self.same_n else "")

    def items(self):
        return sorted(self.members.items())

    def __iter__(self):
        return iter(sorted(self.members))

    def __bool__(self) -> bool:
        return bool(self.members)


def _cut(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def group_labels(per_run, keys: list[str]) -> dict[str, str]:
    """run_id → a short legend label: the method with the fields that vary within it, then the other
    differing fields ("abc_grpo eps3=inf", "grpo max_steps=12")."""
    methods, contexts = run_labels(per_run, keys)
    return {rid: " ".join(x for x in (methods[rid], contexts[rid]) if x) for rid in methods}


def _wide(rs: RunSet, metric: str, run_ids: list[str], smooth: int = 1):
    sub = rs.metric(metric)
    sub = sub[sub["run_id"].isin(run_ids)]
    if sub.empty:
        return None
    wide = sub.pivot_table(index="step", columns="run_id", values="value", aggfunc="last", observed=True)
    if smooth > 1:  # per run, over its logged steps: a trailing window, as W&B's smoothing
        wide = wide.rolling(smooth, min_periods=1).mean()
    return wide


def _with_data(rs: RunSet, metrics, run_ids) -> list[str]:
    """The runs that have any value of these metrics: the runs a figure shows."""
    have: set[str] = set()
    for metric in metrics:
        sub = rs.metric(metric)
        have |= set(sub["run_id"].astype(str).unique()) if len(sub) else set()
    return [r for r in run_ids if str(r) in have]


def _legend(ax, n: int, where: str = "right") -> None:
    """Outside the data area, so it never covers a line or a bar: on the right of a figure's one panel,
    below each panel of a grid (each panel keeps its own legend and reads on its own)."""
    if where == "below":
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), borderaxespad=0.0,
                  ncol=min(n, 3), frameon=False)
    else:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  ncol=1 if n <= 8 else 2, frameon=False)


def _draw_groups(ax, wide_by_group: dict, title: str, ylabel: str, groups: Groups, base: float | None = None,
                 legend: str | None = "right") -> bool:
    drawn = 0
    for label, wide in sorted(wide_by_group.items()):
        if wide is None or wide.empty:
            continue
        steps = wide.index.to_numpy()
        mean = wide.mean(axis=1).to_numpy()
        if base is not None and steps.min() > 0:  # every run starts from the base model: step 0
            import numpy as np

            steps, mean = np.concatenate([[0], steps]), np.concatenate([[base], mean])
        line, = ax.plot(steps, mean, label=groups.label(label, wide.shape[1]), lw=1.5,
                        marker="o" if len(steps) < 12 else None, ms=3)
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
        _legend(ax, drawn, legend)
    return bool(drawn)


def _footnote(fig, text: str) -> None:
    fig.text(0.01, -0.02, text, fontsize=8, ha="left", va="top", color="0.3", wrap=True)


def _legend_outside(ax) -> bool | None:
    """Whether the axes' legend lies entirely outside its data area (None: no legend)."""
    legend = ax.get_legend()
    if legend is None:
        return None
    renderer = ax.figure.canvas.get_renderer()
    box, area = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    return bool(box.x0 >= area.x1 or box.x1 <= area.x0 or box.y0 >= area.y1 or box.y1 <= area.y0)


def _legend_over_data(ax) -> bool | None:
    """Whether the legend's box covers any drawn point of a line or any bar (None: no legend)."""
    import numpy as np

    legend = ax.get_legend()
    if legend is None:
        return None
    box = legend.get_window_extent(ax.figure.canvas.get_renderer())
    for line in ax.get_lines():
        xy = line.get_xydata()
        if len(xy):
            pts = ax.transData.transform(np.asarray(xy, dtype=float))
            inside = (pts[:, 0] >= box.x0) & (pts[:, 0] <= box.x1) & (pts[:, 1] >= box.y0) & (pts[:, 1] <= box.y1)
            if inside.any():
                return True
    return any(box.overlaps(p.get_window_extent()) for c in ax.containers for p in c.patches if p.get_height())


def _legend_in_figure(ax, fig_box) -> bool | None:
    legend = ax.get_legend()
    if legend is None:
        return None
    box = legend.get_window_extent(ax.figure.canvas.get_renderer())
    return bool(box.x0 >= fig_box.x0 - 1 and box.x1 <= fig_box.x1 + 1 and box.y0 >= fig_box.y0 - 1
                and box.y1 <= fig_box.y1 + 1)


def _describe(fig) -> tuple[list[dict], list[int]]:
    """What a figure holds, read from its artists: the machine-readable list of plots.json; and the
    saved image's size in pixels."""
    fig.canvas.draw()  # lays out text and legends, so their extents are final
    renderer = fig.canvas.get_renderer()
    whole = fig.get_tightbbox(renderer)  # inches: what bbox_inches="tight" saves
    fig_box = whole.transformed(fig.dpi_scale_trans)  # in display units, like the artists' extents
    panels = []
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        series = [{"label": str(line.get_label()), "points": int(len(line.get_xdata()))}
                  for line in ax.get_lines() if not str(line.get_label()).startswith("_")]
        bars = [{"label": str(c.get_label()), "bars": len(c.patches), "heights": [float(p.get_height()) for p in c.patches]}
                for c in ax.containers]
        area = ax.get_window_extent(renderer)
        legend = ax.get_legend()
        labels = [t.get_text() for t in legend.get_texts()] if legend is not None else []
        panels.append({"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
                       "xscale": ax.get_xscale(), "series": series, "bars": bars,
                       "images": len(ax.get_images()), "legend": legend is not None,
                       "legend_outside": _legend_outside(ax), "legend_over_data": _legend_over_data(ax),
                       "legend_in_figure": _legend_in_figure(ax, fig_box),
                       "legend_labels": labels, "label_chars": max((len(t) for t in labels), default=0),
                       "size_px": [round(area.width * DPI / fig.dpi), round(area.height * DPI / fig.dpi)]})
    return panels, [round(whole.width * DPI), round(whole.height * DPI)]


class _Writer:
    def __init__(self, out_dir: str, fmt: str):
        self.out_dir, self.fmt, self.files, self.manifest = out_dir, fmt, [], []

    def save(self, fig, name: str, caption: str) -> None:
        path = os.path.join(self.out_dir, f"{name}.{self.fmt}")
        panels, size = _describe(fig)
        fig.savefig(path, dpi=DPI, bbox_inches="tight")  # tight: the outside legends are kept
        self.manifest.append({"file": os.path.basename(path), "caption": caption, "size_px": size, "panels": panels})
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
    run_ids = [str(r) for r in chosen["run_id"]]

    def groups_of(metrics) -> Groups:  # each figure labels its lines by what differs among its own runs
        return Groups(chosen, keys, _with_data(rs, metrics, run_ids))

    w = _Writer(out_dir, fmt)
    _training(rs, groups_of, w, smooth)
    _evaluations(rs, groups_of, w)
    _quadrants(rs, groups_of, w, smooth)
    for i, table in enumerate(pivot_tables or []):
        _heatmap(table, w, "pivot_heatmap" if i == 0 else f"pivot_heatmap{i + 1}")
    from abcx.report.sweep import plot_rungs

    plot_rungs(sweep_dir, w, _plt())
    return w.finish()


TRAINING = (("reward", "reward (mean over the batch)"), ("entropy", "token entropy (nats)"),
            ("completion_length", "completion length (tokens)"))


def _smoothing(smooth: int, wides) -> str:
    """Said only where a window really averaged several logged values."""
    longest = max((len(w) for w in wides if w is not None), default=0)
    return f", rolling mean over {smooth} logged steps" if smooth > 1 and longest > 1 else ""


def _training(rs: RunSet, groups_of, w: _Writer, smooth: int) -> None:
    plt = _plt()
    for metric, ylabel in TRAINING:
        groups = groups_of([metric])
        wides = {g: _wide(rs, metric, ids, smooth) for g, ids in groups.items()}
        if any(x is not None for x in wides.values()):
            fig, ax = plt.subplots(figsize=(6.5, 4))
            window = _smoothing(smooth, wides.values())
            _draw_groups(ax, wides, metric, ylabel, groups)
            _footnote(fig, groups.band_text() + window)
            w.save(fig, metric, f"{metric} over training steps; {groups.band_text()}{window}")


def _eval_names(rs: RunSet) -> dict[str, dict[str, list[int]]]:
    by_bench: dict[str, dict[str, list[int]]] = {}
    for m in rs.metrics:
        if (match := EVAL_RE.match(m)):
            by_bench.setdefault(match["bench"], {}).setdefault(match["stat"], []).append(int(match["k"]))
    return by_bench


def _evaluations(rs: RunSet, groups_of, w: _Writer) -> None:
    """Per benchmark: Avg@n and Pass@n over steps from step 0, and Pass@k against k (log2 axis);
    each panel with its own legend, so each reads on its own."""
    plt = _plt()
    for bench, stats in sorted(_eval_names(rs).items()):
        base = rs.base_evals.get(bench, {}).get("metrics", {})
        panels = [(s, max(stats[s])) for s in ("avg", "pass") if s in stats]
        groups = groups_of([f"eval/{bench}/{s}@{k}" for s, ks in stats.items() for k in ks])
        fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4.4 * (len(panels) + 1), 4.2), squeeze=False,
                                 layout="constrained")
        points = 0
        for ax, (stat, k) in zip(axes[0], panels):
            name = f"{stat}@{k}"
            _draw_groups(ax, {g: _wide(rs, f"eval/{bench}/{name}", ids) for g, ids in groups.items()},
                         f"{bench}: {stat.capitalize()}@{k}", f"{stat.capitalize()}@{k}", groups,
                         base=base.get(name), legend="below")
            points = max([points] + [len(line.get_xdata()) for line in ax.get_lines()])
        _pass_at_k(axes[0][-1], rs, bench, sorted(stats.get("pass", [])), groups, base)
        step0 = f"; step 0 = the starting model ({rs.base_evals[bench]['name']})" if base else \
            "; no evaluation of the starting model (run `abcx eval <model>` with the same eval settings)"
        few = "; evaluated at 2 steps only (set eval.every_steps for curves)" if points == 2 else ""
        setting = rs.eval_settings.get(bench, "")
        what = groups.band_text()
        _footnote(fig, f"{what}; sampled with {setting}{step0}{few}" if setting else what + step0 + few)
        w.save(fig, f"eval_{re.sub(r'[^A-Za-z0-9_.-]+', '_', bench)}",
               f"{bench} ({setting}): Avg@n and Pass@n over training, Pass@k against k at the last evaluation; "
               f"{what}{step0}")


def _pass_at_k(ax, rs: RunSet, bench: str, ks: list[int], groups: Groups, base: dict) -> None:
    import numpy as np

    drawn = 0
    for label, ids in groups.items():
        curves = []
        for k in ks:
            sub = rs.metric(f"eval/{bench}/pass@{k}")
            last = sub[sub["run_id"].isin(ids)].groupby("run_id", observed=True)["value"].last()
            curves.append(last.to_numpy())
        if not ks or not all(len(c) for c in curves):
            continue
        mean = [float(np.mean(c)) for c in curves]
        line, = ax.plot(ks, mean, marker="o", ms=3, label=groups.label(label, len(curves[0])))
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
        _legend(ax, drawn, "below")


def _quadrants(rs: RunSet, groups_of, w: _Writer, smooth: int) -> None:
    """Figure 4f: the share of clip events by quadrant over the whole run (bars), above per-step shares,
    as a grid that prints on one page (portrait): the bars across the top, Q1..Q4 two by two below."""
    import numpy as np

    if not any(q in rs.metrics for q in QUADRANTS):
        return
    plt = _plt()
    groups = groups_of(QUADRANTS)
    ids = [r for _g, member in groups.items() for r in member]
    fig = plt.figure(figsize=(8.3, 10.2), layout="constrained")
    grid = fig.add_gridspec(3, 2, height_ratios=[1.1, 1, 1])
    bars_ax = fig.add_subplot(grid[0, :])
    curve_axes = [fig.add_subplot(grid[1 + i // 2, i % 2]) for i in range(4)]
    totals = {}
    for i, q in enumerate(QUADRANTS, start=1):
        sub = rs.metric(q)
        totals[f"Q{i}"] = sub[sub["run_id"].isin(ids)].groupby("run_id", observed=True)["value"].sum()
    names = list(groups)
    width = 0.8 / max(1, len(names))
    whole = sum(t.reindex(ids).fillna(0) for t in totals.values())
    for j, label in enumerate(names):
        member = groups.members[label]
        shares = [float((totals[q].reindex(member).fillna(0) / whole.reindex(member).where(lambda s: s > 0)).mean())
                  for q in totals]
        bars_ax.bar(np.arange(4) + j * width, np.nan_to_num(shares), width, label=groups.label(label, len(member)))
    bars_ax.set_xticks(np.arange(4) + width * (len(names) - 1) / 2, list(totals))
    bars_ax.set_title("clip events by quadrant, whole run", fontsize=10)
    bars_ax.set_xlabel("quadrant")
    bars_ax.set_ylabel("share of clip events" + (" (mean over seeds)" if groups.n > 1 else ""))
    bars_ax.grid(alpha=0.3, axis="y")
    if names:
        _legend(bars_ax, len(names), "right")
    shares = _quadrant_shares(rs, ids)
    wides_all = []
    for i, ax in enumerate(curve_axes, start=1):
        wides = {}
        for g, member in groups.items():
            sub = shares[shares["run_id"].isin(member)]
            wide = sub.pivot_table(index="step", columns="run_id", values=f"q{i}", aggfunc="last",
                                   observed=True) if len(sub) else None
            wides[g] = wide.rolling(smooth, min_periods=1).mean() if wide is not None and smooth > 1 else wide
        wides_all += list(wides.values())
        _draw_groups(ax, wides, f"Q{i} share per step", f"Q{i} share of clip events", groups, legend="below")
    window = _smoothing(smooth, wides_all)
    _footnote(fig, f"bars: q_i / (q1+q2+q3+q4) summed over the run; curves: per step, {groups.band_text()}{window}")
    w.save(fig, "quadrant_shares", f"share of clip events by quadrant: whole run (bars) and per step; "
                                   f"{groups.band_text()}{window}")


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
