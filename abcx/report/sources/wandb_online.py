"""W&B online projects → RunSet, through a narrow seam.

The seam: `WandbApi` (a Protocol with `runs(path, filters)`) returning `WandbRun`-shaped objects
(`.id .name .config .summary .group .tags .state` and `.scan_history(keys=[k])`). `PublicApi` wraps
`wandb.Api` (imported lazily) to satisfy it; the W&B cloud cannot be reached from the machines this is
tested on, so tests pass a fake that satisfies the same Protocol — the one place abcx tests use a fake.

History is scanned one key at a time because `scan_history(keys=[a, b])` returns only the rows that
hold *all* requested keys, which silently drops metrics logged at different steps (eval vs train).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

from abcx.errors import UserError
from abcx.report.names import canonical
from abcx.report.runset import RunSet, flatten_config, wide_from_records, make_runs
from abcx.record.states import State

TRAINER_STEP = "train/global_step"
# W&B's run states (its own vocabulary, the keys) -> abcx's (abcx.record.states).
STATE_MAP = {"finished": State.FINISHED.value, "running": State.RUNNING.value, "crashed": State.CRASHED.value,
             "failed": State.FAILED.value, "killed": State.FAILED.value, "preempted": State.CRASHED.value,
             "pending": State.RUNNING.value}


@runtime_checkable
class WandbRun(Protocol):
    id: str
    name: str
    config: dict
    summary: Any
    group: str | None
    tags: list[str]
    state: str

    def scan_history(self, keys: list[str] | None = None) -> Iterable[dict]: ...


@runtime_checkable
class WandbApi(Protocol):
    def runs(self, path: str, filters: dict | None = None) -> Iterable[WandbRun]: ...


class PublicApi:
    """`WandbApi` backed by `wandb.Api` (needs network and a W&B login)."""

    def __init__(self, timeout: int = 60):
        import wandb

        self._api = wandb.Api(timeout=timeout)

    def runs(self, path: str, filters: dict | None = None) -> Iterator[WandbRun]:
        return iter(self._api.runs(path, filters=filters or {}))


def build_filters(sweep: str | None, group: str | None, tags: list[str]) -> dict:
    """W&B (MongoDB-style) run filters: all given conditions must hold; every tag must be present."""
    conds: list[dict] = []
    if sweep:
        conds.append({"sweep": sweep})
    if group:
        conds.append({"group": group})
    conds.extend({"tags": {"$in": [t]}} for t in tags)
    if not conds:
        return {}
    return conds[0] if len(conds) == 1 else {"$and": conds}


def _plain_config(config: Any) -> dict:
    cfg = dict(config or {})
    cfg.pop("_wandb", None)
    # Older API versions return {"key": {"value": v, "desc": ...}}.
    if cfg and all(isinstance(v, dict) and "value" in v for v in cfg.values()):
        cfg = {k: v["value"] for k, v in cfg.items()}
    return cfg


def _metric_keys(summary: Any) -> list[str]:
    items = dict(summary.items()) if hasattr(summary, "items") else {}
    return sorted(k for k, v in items.items()
                  if canonical(k) not in (None, "global_step") and isinstance(v, (int, float)) and not isinstance(v, bool))


def read_project(api: WandbApi, path: str, sweep: str | None = None, group: str | None = None,
                 tags: list[str] = (), metrics: list[str] | None = None) -> RunSet:
    """Runs of `entity/project` matching the filters; `metrics` limits the history keys scanned."""
    if path.count("/") != 1 or not all(path.split("/")):
        raise UserError(f"--wandb-project {path!r}: expected 'entity/project'")
    runs, records, summaries = [], [], {}
    for run in api.runs(path, filters=build_filters(sweep, group, list(tags))):
        config = _plain_config(run.config)
        summary = dict(run.summary.items()) if hasattr(run.summary, "items") else {}
        keys = _metric_keys(run.summary)
        if metrics is not None:
            keys = [k for k in keys if canonical(k) in metrics]
        last_step = None
        # HF's W&B callback logs the trainer's step as train/global_step; W&B's _step counts log calls.
        trainer_step = TRAINER_STEP if TRAINER_STEP in summary else "_step"
        for key in keys:
            name = canonical(key)
            scan = [key] if trainer_step == "_step" else [key, trainer_step]
            for row in run.scan_history(keys=scan):
                value, step = row.get(key), row.get(trainer_step)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and step is not None \
                        and not math.isnan(float(value)):
                    records.append((run.id, int(step), name, float(value)))
                    last_step = max(last_step or 0, int(step))
        method = config.get("method")
        if isinstance(method, dict):
            method = method.get("name")
        state = STATE_MAP.get(str(run.state), State.UNKNOWN.value)
        row = {"run_id": run.id, "source": "wandb", "state": state, "stale": False,
               "method": str(method or ""), "seed": config.get("seed"), "group": run.group or "",
               "tags": ",".join(run.tags or []), "name": run.name or "", "step": last_step,
               "detail": "" if state == run.state else str(run.state), "path": f"{path}/{run.id}"}
        row.update(flatten_config(config))
        runs.append(row)
        summaries[run.id] = summary
    if not runs:
        raise UserError(f"--wandb-project {path}: no runs match (sweep={sweep}, group={group}, tags={list(tags)})")
    return RunSet(make_runs(runs), wide_from_records(records), summaries)
