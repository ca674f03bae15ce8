"""PNG panels (matplotlib, Agg backend): metrics over steps per group with a mean line and a
min–max band across seeds; Avg@k / Pass@k over steps; quadrant shares over steps; epsilon heatmap."""
from __future__ import annotations

import os
import re

from abcx.report.runset import RunSet
from abcx.report.table import EVAL_RE, QUADRANTS


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def group_labels(per_run, keys: list[str]) -> dict[str, str]:
    """run_id → a short legend label built from the group key values ("abc eps3=0.3")."""
    labels = {}
    for _, r in per_run.iterrows():
        parts = [str(r[k]) if k == "method" else f"{k.rsplit('.', 1)[-1]}={r[k]}" for k in keys]
        labels[str(r["run_id"])] = " ".join(parts) or "all"
    return labels


def _wide(rs: RunSet, metric: str, run_ids: list[str]):
    sub = rs.metric(metric)
    sub = sub[sub["run_id"].isin(run_ids)]
    if sub.empty:
        return None
    return sub.pivot_table(index="step", columns="run_id", values="value", aggfunc="last", observed=True)


def _draw_groups(ax, wide_by_group: dict, title: str) -> bool:
    drawn = False
    for label, wide in sorted(wide_by_group.items()):
        if wide is None or wide.empty:
            continue
        steps = wide.index.to_numpy()
        mean = wide.mean(axis=1).to_numpy()
        line, = ax.plot(steps, mean, label=f"{label} (n={wide.shape[1]})", lw=1.5)
        if wide.shape[1] > 1:
            ax.fill_between(steps, wide.min(axis=1).to_numpy(), wide.max(axis=1).to_numpy(),
                            color=line.get_color(), alpha=0.2, lw=0)
        drawn = True
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=7)
    return drawn


def _groups(labels: dict[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for rid, label in labels.items():
        out.setdefault(label, []).append(rid)
    return out


def _save(fig, path: str, written: list[str]) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    written.append(path)


def plot_all(rs: RunSet, per_run, keys: list[str], out_dir: str, pivot_table=None) -> list[str]:
    """Write every panel the data allows into out_dir; return the PNG paths."""
    import numpy as np

    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
    finished = per_run[per_run["state"] == "finished"]
    chosen = finished if len(finished) else per_run
    groups = _groups(group_labels(chosen, keys))
    written: list[str] = []

    for metric in ("reward", "entropy", "completion_length"):
        wides = {g: _wide(rs, metric, ids) for g, ids in groups.items()}
        if any(w is not None for w in wides.values()):
            fig, ax = plt.subplots(figsize=(6, 4))
            _draw_groups(ax, wides, metric)
            _save(fig, os.path.join(out_dir, f"{metric}.png"), written)

    by_bench: dict[str, dict[str, list[int]]] = {}
    for m in rs.metrics:
        if (match := EVAL_RE.match(m)):
            by_bench.setdefault(match["bench"], {}).setdefault(match["stat"], []).append(int(match["k"]))
    for bench, stats in sorted(by_bench.items()):
        panels = [(s, max(stats[s])) for s in ("avg", "pass") if s in stats]
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
        for ax, (stat, k) in zip(axes[0], panels):
            name = f"eval/{bench}/{stat}@{k}"
            _draw_groups(ax, {g: _wide(rs, name, ids) for g, ids in groups.items()},
                         f"{bench} {stat.capitalize()}@{k}")
        _save(fig, os.path.join(out_dir, f"eval_{re.sub(r'[^A-Za-z0-9_.-]+', '_', bench)}.png"), written)

    if any(q in rs.metrics for q in QUADRANTS):
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), sharey=True)
        shares = _quadrant_shares(rs, [r for ids in groups.values() for r in ids])
        for i, ax in enumerate(axes):
            wides = {}
            for g, ids in groups.items():
                sub = shares[shares["run_id"].isin(ids)]
                wides[g] = sub.pivot_table(index="step", columns="run_id", values=f"q{i + 1}",
                                           aggfunc="last", observed=True) if len(sub) else None
            _draw_groups(ax, wides, f"Q{i + 1} share of clip events")
        _save(fig, os.path.join(out_dir, "quadrant_shares.png"), written)

    if pivot_table is not None and pivot_table.size:
        fig, ax = plt.subplots(figsize=(1.2 * pivot_table.shape[1] + 2.5, 0.9 * pivot_table.shape[0] + 1.8))
        data = pivot_table.to_numpy(dtype=float)
        im = ax.imshow(data, cmap="viridis", aspect="auto")
        ax.set_xticks(range(pivot_table.shape[1]), [str(c) for c in pivot_table.columns])
        ax.set_yticks(range(pivot_table.shape[0]), [str(r) for r in pivot_table.index])
        ax.set_xlabel(str(pivot_table.columns.name))
        ax.set_ylabel(str(pivot_table.index.name))
        mid = np.nanmin(data) + (np.nanmax(data) - np.nanmin(data)) / 2 if np.isfinite(data).any() else 0
        for (i, j), v in np.ndenumerate(data):
            if v == v:  # dark text on the bright end of viridis, light text on the dark end
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", color="k" if v > mid else "w", fontsize=8)
        fig.colorbar(im, ax=ax, label=pivot_table.attrs.get("metric", ""))
        ax.set_title(f"{pivot_table.attrs.get('metric', '')} (mean over seeds)")
        _save(fig, os.path.join(out_dir, "pivot_heatmap.png"), written)
    return written


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
