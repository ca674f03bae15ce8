"""What a sweep's strategy decided, for `abcx report --sweep NAME` (read from the sweep's folder,
results/sweeps/<name>/: queue.json's strategy, manifest.json's runs, decisions.jsonl):
- halving: a table of each run's metric at each rung (rank there), its state and why it stopped,
  and the figure `rungs` (the rung metric against step per run, the rung steps marked, the stopped
  runs marked where they stopped);
- seeds: a table of each compared pair's final paired interval and decision.
Other strategies add nothing here."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from abcx.record import RunRecord, read_json, read_jsonl, runs_dir
from abcx.report.render import Table, fmt_num
from abcx.record.states import State


def find_sweep_dir(sources, sweep: str | None) -> Path | None:
    """The sweep's folder under a results dir given as a source (or the parent of a runs/ source)."""
    if not sweep:
        return None
    from abcx.paths import NAME

    if not NAME.fullmatch(sweep) or sweep in (".", ".."):
        return None
    for source in sources or ():
        for root in (Path(source), Path(source).parent):
            folder = root / "sweeps" / sweep
            if (folder / "manifest.json").is_file():
                return folder
    return None


def _runs(sweep_dir: Path) -> list:
    manifest = read_json(sweep_dir / "manifest.json") or {}
    root = Path(manifest.get("results_dir") or sweep_dir.parent.parent)
    entries = sorted((e for e in manifest.get("runs") or [] if isinstance(e, dict) and e.get("run_id")),
                     key=lambda e: e.get("index", 0))
    return [SimpleNamespace(run_id=e["run_id"], path=runs_dir(root) / e["run_id"]) for e in entries]


def tables(sweep_dir: Path | None) -> list[Table]:
    """The strategy's tables (none for grid or optuna, or without a sweep folder)."""
    import pandas as pd

    from abcx.sweep.strategies import load_strategy, of

    if sweep_dir is None:
        return []
    spec = load_strategy(sweep_dir)
    table = of(spec).table
    if table is None:
        return []
    name, title, rows, shown, notes = table(spec, sweep_dir, _runs(sweep_dir), fmt_num)
    return [Table(name, title, pd.DataFrame(rows), pd.DataFrame(shown), notes)]


def curve(record: RunRecord, metric: str, window: int) -> tuple[list[int], list[float]]:
    """The rung metric over the run: its eval rows (eval/<benchmark>/<name>), or the trailing mean of
    a training metric over `window` logged values (what halving ranks by, at every step)."""
    from abcx.sweep.strategies.base import number

    if metric.startswith("eval/"):
        _, bench, name = metric.split("/")
        points = {r["step"]: (r.get("metrics") or {}).get(name) for r in read_jsonl(record.eval_path)
                  if r.get("benchmark") == bench and isinstance(r.get("step"), int)}
        steps = sorted(s for s, v in points.items() if number(v))
        return steps, [float(points[s]) for s in steps]
    logged = [(r["step"], r[metric]) for r in record.metrics() if isinstance(r.get("step"), int) and number(r.get(metric))]
    steps, values = [], []
    for i, (step, _v) in enumerate(logged):
        last = [v for _s, v in logged[max(0, i + 1 - window): i + 1]]
        steps.append(step)
        values.append(sum(last) / len(last))
    return steps, values


def plot_rungs(sweep_dir: Path | None, writer, plt) -> None:
    """The figure `rungs` of a halving sweep (nothing for other strategies)."""
    from abcx.sweep.strategies import load_strategy, of
    from abcx.sweep.strategies.halving import reader_for

    if sweep_dir is None or not of(load_strategy(sweep_dir)).plots_rungs:
        return
    spec = load_strategy(sweep_dir)
    runs = _runs(sweep_dir)
    rungs = reader_for(spec, runs).rungs
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for run in runs:
        record = RunRecord(run.path)
        steps, values = curve(record, spec.metric, spec.window)
        if not steps:
            continue
        status = record.status()
        stopped = status.get("state") == State.STOPPED
        label = run.run_id + (f" (stopped at step {status.get('step')})" if stopped else f" ({status.get('state')})")
        (line,) = ax.plot(steps, values, linestyle="--" if stopped else "-", label=label)
        if stopped:
            ax.plot([steps[-1]], [values[-1]], marker="X", markersize=9, color=line.get_color(), label="_stop")
    for i, step in enumerate(rungs):
        ax.axvline(step, color="0.6", linestyle=":", linewidth=1,
                   label=f"rungs (steps {', '.join(map(str, rungs))})" if i == 0 else "_rung")
    ax.set_title(f"Halving: {spec.metric} per run (eta {spec.eta}, {spec.mode})")
    ax.set_xlabel("training step")
    ax.set_ylabel(spec.metric if spec.metric.startswith("eval/") else f"{spec.metric} (mean of last {spec.window})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    writer.save(fig, "rungs", "the rung metric against step per run; dotted: the rungs; dashed and X: a stopped run, "
                "where it stopped")
