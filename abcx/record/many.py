"""Many run records read at once: what the report (thousands of runs) and the sweep's manifest rebuild
need, read strictly enough that a broken record is named with its reason and never averaged.

RunRecord's own readers are tolerant (a trainer must go on); these are strict: a record whose
meta.json, status.json or config.yaml cannot be read raises `RecordUnreadable` naming the file, and
the report lists it as broken. Metrics of many records are parsed in one batched call
(abcx.record.columns), from a record's columnar copy where it is fresh.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from abcx.errors import UserError
import abcx.record.layout as F
from abcx.record.states import RECORDED, State

STATUS_STATES = tuple(s.value for s in RECORDED)


class RecordUnreadable(UserError):
    """A record (or one of its files) that cannot be read: the report lists it with this reason."""


class UnreadableConfig(RecordUnreadable):
    """config.yaml refused by abcx.yaml_io (aliases, deep nesting, oversize, not UTF-8)."""


@dataclass
class RecordView:
    """What one record's small files hold (read strictly)."""

    path: str
    meta: dict
    status: dict
    config: dict          # {} for a run that never started (no config.yaml)
    summary: dict | None
    unstarted: bool       # no config.yaml: pending, or cancelled/failed before its job started

    @property
    def state(self) -> str:
        return self.status["state"]


def is_record(path: str | Path) -> bool:
    return os.path.isfile(os.path.join(path, F.META)) or os.path.isfile(os.path.join(path, F.STATUS))


def is_eval_only(path: str | Path) -> bool:
    """`abcx eval <model>` of a model that is no run keeps its rows in a folder with only eval.jsonl."""
    return not is_record(path) and os.path.isfile(os.path.join(path, F.EVAL))


def inner_folders() -> tuple[str, ...]:
    """Folders inside a record that never hold another record (a scan need not descend into them)."""
    return F.INNER_FOLDERS


def _object(path: str, name: str, required: bool) -> dict | None:
    file = os.path.join(path, name)
    if not os.path.exists(file):
        if required:
            raise RecordUnreadable(f"{path}: {name} missing "
                                   f"(an abcx run record needs {F.CONFIG}, {F.META} and {F.STATUS})")
        return None
    if not os.path.isfile(file):
        raise RecordUnreadable(f"{file}: not a file")
    try:
        with open(file, "rb") as fh:
            value = json.load(fh)
    except (OSError, ValueError) as exc:
        raise RecordUnreadable(f"{file}: not valid JSON ({exc})") from None
    except RecursionError:
        raise RecordUnreadable(f"{file}: nested too deeply to be a record file") from None
    if not isinstance(value, dict):
        raise RecordUnreadable(f"{file}: expected a JSON object, got {type(value).__name__}")
    _check_types(file, value, FIELD_TYPES[name])
    return value


def _is_str(v) -> bool:
    return isinstance(v, str)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_names(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _optional(check):
    return lambda v: v is None or check(v)


# What the fields a report reads must hold, where present (records of older versions may lack some):
# a record with `seed: {a: 1}` or `step: "five"` is listed as unreadable, never averaged or written
# into a CSV column of integers.
FIELD_TYPES = {
    F.META: {
        "run_id": (_is_str, "a string"), "method": (_is_str, "a string"), "seed": (_is_int, "an integer"),
        "group": (_optional(_is_str), "a string or null"), "sweep": (_optional(_is_str), "a string"),
        "sweeps": (_is_names, "a list of names"), "tags": (_is_names, "a list of strings"),
        "config_hash": (_is_str, "a string"),
    },
    F.STATUS: {
        "step": (_optional(_is_int), "an integer"), "max_steps": (_optional(_is_int), "an integer or null"),
        "error": (_optional(_is_str), "a string or null"), "updated": (_optional(_is_str), "an ISO time"),
        "gpu_hours": (_optional(_is_number), "a number"), "device_hours": (_optional(_is_number), "a number"),
        "elapsed_s": (_optional(_is_number), "a number"),
        "stop": (_optional(lambda v: isinstance(v, dict)), "an object or null"),
    },
    F.SUMMARY: {},
}


def _check_types(file: str, data: dict, types: dict) -> None:
    for field, (ok, what) in types.items():
        if field in data and not ok(data[field]):
            shown = repr(data[field])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise RecordUnreadable(f"{file}: {field} is {shown}; valid: {what}")


def _config(path: str) -> dict:
    from abcx.yaml_io import load_yaml

    file = os.path.join(path, F.CONFIG)
    try:
        cfg = load_yaml(file)  # aliases, deep nesting and oversized files refused (a bomb is 472 bytes)
    except UserError as err:
        raise UnreadableConfig(str(err)) from None
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise RecordUnreadable(f"{file}: expected a mapping at top level, got {type(cfg).__name__}")
    return cfg


def read_view(path: str) -> RecordView:
    """One record's meta, status, config and summary, or RecordUnreadable naming what is wrong."""
    meta = _object(path, F.META, required=True)
    status = _object(path, F.STATUS, required=True)
    if status.get("state") not in STATUS_STATES:
        raise RecordUnreadable(f"{path}/{F.STATUS}: state {status.get('state')!r} is not one of "
                               f"{', '.join(STATUS_STATES)}")
    # A run that never started (pending, or cancelled while queued) has no config.yaml: listed with
    # its state, never dropped and never a reason to stop the report.
    unstarted = status["state"] in (State.PENDING, State.CANCELLED, State.FAILED) and \
        not os.path.exists(os.path.join(path, F.CONFIG))
    cfg = {} if unstarted else _config(path)
    for name in (F.METRICS, F.METRICS_ARROW, F.EVAL):  # a folder (or a device) where a file belongs
        file = os.path.join(path, name)
        if os.path.exists(file) and not os.path.isfile(file):
            raise RecordUnreadable(f"{file}: not a file")
    return RecordView(path, meta, status, cfg, _object(path, F.SUMMARY, required=False), unstarted)


def recorded_state(path: str) -> str | None:
    """The state status.json gives, where it can be read at all (a broken record's row keeps it)."""
    try:
        with open(os.path.join(path, F.STATUS), "rb") as fh:
            status = json.load(fh)
    except (OSError, ValueError, RecursionError):
        return None
    raw = status.get("state") if isinstance(status, dict) else None
    return raw if isinstance(raw, str) and raw in STATUS_STATES else None


def eval_rows(path: str) -> list[dict]:
    """A folder's evaluation rows (eval.jsonl), torn or unreadable lines skipped with a warning."""
    from abcx.record.columns import parse_lines_python, read_bytes_tolerant

    file = os.path.join(path, F.EVAL)
    if not os.path.exists(file):
        return []
    if not os.path.isfile(file):
        raise RecordUnreadable(f"{file}: not a file")
    return parse_lines_python(file, read_bytes_tolerant(file))


def eval_file(path: str) -> str:
    """Where a folder's evaluation rows are, for messages that point a reader at them."""
    return os.path.join(path, F.EVAL)


def metrics_file(path: str) -> str:
    return os.path.join(path, F.METRICS)


def has_metrics(path: str) -> bool:
    return os.path.isfile(metrics_file(path))


def metric_columns(paths: list[str]) -> tuple[list[int], dict]:
    """The metric rows of many records in one batched parse: (rows per record, {column: values}),
    rows in file order; a record's fresh columnar copy (metrics.arrow) is read instead of its lines."""
    from abcx.record.columns import read_many_compacted

    return read_many_compacted([metrics_file(p) for p in paths])


def run_folder_of_checkpoint(folder: str) -> str:
    """The run a `checkpoint-<step>` folder belongs to: <run>/checkpoints/checkpoint-N -> <run> (abcx's
    layout), any other checkpoint's parent folder otherwise (a TRL output_dir)."""
    parent = os.path.dirname(os.path.abspath(folder))
    return os.path.dirname(parent) if os.path.basename(parent) == F.CHECKPOINTS else parent


def records_under(runs: str | Path) -> Iterator[Path]:
    """Record folders directly under a runs/ folder (the superseded ones aside)."""
    root = Path(runs)
    if not root.is_dir():
        return iter(())
    return (p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".") and is_record(p))


def sweep_members(runs: str | Path, sweep: str) -> list[tuple[Path, dict, dict]]:
    """(folder, meta, status) of every record whose meta says it was submitted by `sweep`: what a lost
    sweep manifest is rebuilt from."""
    from abcx.record.run import RunRecord

    found = []
    for path in records_under(runs):
        record = RunRecord(path)
        meta = record.meta()
        if meta.get("sweep") == sweep:
            found.append((path, meta, record.status()))
    return found
