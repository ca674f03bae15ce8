"""W&B offline run folders (`wandb/offline-run-*/run-<id>.wandb`) → RunSet.

Offline mode writes config and summary only into the `.wandb` log (no config.yaml / summary json), so
everything comes from its records (`wandb_log`). No exit record means the process never finished:
killed, crashed, or still running — reported as `crashed` with that said in `detail`.
"""
from __future__ import annotations

import glob
import json
import math
import os

from abcx.errors import UserError
from abcx.report.names import canonical
from abcx.report.runset import RunSet, flatten_config, wide_from_records, make_runs
from abcx.record.states import State


def is_run_dir(path: str) -> bool:
    return bool(glob.glob(os.path.join(glob.escape(path), "run-*.wandb")))


def _value(item) -> object:
    try:
        return json.loads(item.value_json)
    except ValueError:
        return None


def _key(item, sep: str) -> list[str]:
    return list(item.nested_key) if item.nested_key else [item.key]


def _set_nested(target: dict, keys: list[str], value) -> None:
    for k in keys[:-1]:
        nxt = target.get(k)
        if not isinstance(nxt, dict):
            nxt = target[k] = {}
        target = nxt
    target[keys[-1]] = value


def _del_nested(target: dict, keys: list[str]) -> None:
    for k in keys[:-1]:
        target = target.get(k)
        if not isinstance(target, dict):
            return
    target.pop(keys[-1], None)


def _number(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def read_run(path: str):
    """One offline run folder → (run row, [(step, metric, value)], summary dict)."""
    from abcx.report.sources.wandb_log import iter_records

    files = sorted(glob.glob(os.path.join(glob.escape(path), "run-*.wandb")))
    if not files:
        raise UserError(f"{path}: no run-*.wandb file in this W&B run folder")
    config: dict = {}
    summary: dict = {}
    rows: list[tuple[int, str, float]] = []
    info = {"run_id": os.path.basename(files[0])[4:-6], "group": "", "tags": "", "name": ""}
    exit_code = None
    last_step = None
    for rec in iter_records(files[0]):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            info.update(run_id=r.run_id or info["run_id"], group=r.run_group, tags=",".join(r.tags),
                        name=r.display_name, project=r.project, sweep=r.sweep_id, job_type=r.job_type)
            for item in r.config.update:
                _set_nested(config, _key(item, "."), _value(item))
        elif kind == "config":
            for item in rec.config.update:
                _set_nested(config, _key(item, "."), _value(item))
            for item in rec.config.remove:
                _del_nested(config, _key(item, "."))
        elif kind == "history":
            h = rec.history
            values = {("/".join(_key(i, "/"))): _value(i) for i in h.item}
            # The trainer's step (TRL logs it as train/global_step), not W&B's own counter, which also
            # counts every eval and end-of-training log call (501 W&B steps for a 100-step run).
            step = values.get("train/global_step")
            if not isinstance(step, (int, float)) or isinstance(step, bool):
                step = h.step.num if h.HasField("step") else values.get("_step")
            if not isinstance(step, (int, float)):
                step = (last_step + 1) if last_step is not None else 0
            last_step = int(step)
            for key, v in values.items():
                name, num = canonical(key), _number(v)
                if name is not None and num is not None and not math.isnan(num):
                    rows.append((last_step, name, num))
        elif kind == "summary":
            for item in rec.summary.update:
                _set_nested(summary, _key(item, "."), _value(item))
            for item in rec.summary.remove:
                _del_nested(summary, _key(item, "."))
        elif kind == "exit":
            exit_code = rec.exit.exit_code
    config.pop("_wandb", None)
    if exit_code is None:
        state, detail = State.CRASHED.value, "no exit record (killed, crashed, or still running)"
    elif exit_code == 0:
        state, detail = State.FINISHED.value, ""
    else:
        state, detail = State.FAILED.value, f"exit code {exit_code}"
    method = config.get("method")
    if isinstance(method, dict):
        method = method.get("name")
    row = {
        "run_id": info["run_id"], "source": "wandb-offline", "state": state, "stale": False,
        "method": str(method or ""), "seed": config.get("seed"), "group": info["group"],
        "tags": info["tags"], "name": info["name"], "step": last_step, "detail": detail, "path": path,
    }
    row.update(flatten_config(config))
    return row, rows, summary


def read_runs(paths: list[str]) -> RunSet:
    runs, records, summaries = [], [], {}
    for p in paths:
        row, rows, summary = read_run(p)
        runs.append(row)
        records.extend((row["run_id"], s, m, v) for s, m, v in rows)
        summaries[row["run_id"]] = summary
    return RunSet(make_runs(runs), wide_from_records(records), summaries)
