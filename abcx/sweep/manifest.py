"""The sweep manifest: `<results_dir>/sweeps/<name>/manifest.json`, written atomically.

It lists the sweep's points, run ids, backend, job ids and submission times. It is a convenience, not
the truth: each run's own record carries the sweep name (meta.json `sweep`, `sweep_point`) and its
job (status.json `job_id`, `backend`, `submitted`), so a lost manifest is rebuilt from the run folders.
Writers (the CLI, the local supervisor, cancel) take an exclusive lock on `manifest.lock` around each
read-modify-write.
"""
from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from abcx.errors import UserError
from abcx.record import atomic_write_json, now_iso, read_json


def sweep_dir(results_dir: str | Path, name: str) -> Path:
    """`<results_dir>/sweeps/<name>`: the name is one plain folder name, so the folder lies inside
    results_dir (checked again by abcx.paths.inside)."""
    from abcx.paths import check_name, inside

    check_name(name)
    return inside(results_dir, Path(results_dir).expanduser() / "sweeps" / name).resolve()


def manifest_path(results_dir: str | Path, name: str) -> Path:
    return sweep_dir(results_dir, name) / "manifest.json"


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "manifest.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load(results_dir: str | Path, name: str) -> dict | None:
    """The manifest, or None when there is none, it is not a JSON object or a field has the wrong type
    (a warning says which; the sweep is then rebuilt from the run records and the bad file kept beside
    it as manifest.json.bad)."""
    return _read(manifest_path(results_dir, name))


def _is(kind, optional: bool = True):
    return lambda v: (optional and v is None) or (isinstance(v, kind) and not isinstance(v, bool))


# What readers index into, by field: a hand-edited `results_dir: [1]` or `index: "x"` is an unreadable
# manifest (rebuilt from the records), never a traceback.
FIELDS = {"name": _is(str), "results_dir": _is(str), "backend": _is(str), "runs": _is(list),
          "submissions": _is(list), "supervisor": _is(dict), "stop": _is(dict)}
ENTRY = {"run_id": _is(str, optional=False), "index": _is(int), "overrides": _is(list), "job_id": _is((str, int))}


def _problem(data: dict) -> str | None:
    for field, ok in FIELDS.items():
        if not ok(data.get(field)):
            return f"{field} is {type(data[field]).__name__}"
    for i, entry in enumerate(data.get("runs") or []):
        if not isinstance(entry, dict):
            return f"runs[{i}] is not an object"
        for field, ok in ENTRY.items():
            if not ok(entry.get(field)):
                return f"runs[{i}].{field} is {type(entry.get(field)).__name__}"
        if not _strings(entry.get("overrides")):
            return f"runs[{i}].overrides holds a non-string"
    return None


def _strings(values) -> bool:
    return all(isinstance(v, str) for v in values or ())


def _read(path: Path) -> dict | None:
    from abcx.record import warn

    data = read_json(path)
    problem = _problem(data) if data is not None else None
    if problem:
        warn(path, f"{problem}; ignored (rebuilt from the run records)")
        return None
    return data


def _keep_bad(path: Path) -> None:
    """Move an unreadable manifest aside instead of overwriting it: nothing written is lost."""
    if path.is_file() and _read(path) is None:
        path.replace(path.with_name(path.name + ".bad"))


def update(results_dir: str | Path, name: str, change: Callable[[dict], Any]) -> dict:
    """Read (or start) the manifest, let `change` edit it in place, write it back atomically."""
    path = manifest_path(results_dir, name)
    with _locked(path.parent):
        data = _read(path)
        if data is None:
            _keep_bad(path)
            data = new(name, results_dir)
        change(data)
        data["updated"] = now_iso()
        atomic_write_json(path, data)
        return data


def new(name: str, results_dir: str | Path) -> dict:
    return {"name": name, "results_dir": str(Path(results_dir).expanduser().resolve()), "created": now_iso(),
            "runs": [], "submissions": []}


def run_entry(data: dict, run_id: str) -> dict | None:
    return next((r for r in data.get("runs", []) if r["run_id"] == run_id), None)


def upsert_run(data: dict, run_id: str, **fields: Any) -> dict:
    entry = run_entry(data, run_id)
    if entry is None:
        entry = {"run_id": run_id}
        data.setdefault("runs", []).append(entry)
    entry.update(fields)
    return entry


def rebuild(results_dir: str | Path, name: str) -> dict | None:
    """A manifest recovered from the run records that name this sweep (None if there are none)."""
    from abcx.record import runs_dir

    from abcx.record.many import sweep_members

    runs = []
    for folder, meta, status in sweep_members(runs_dir(Path(results_dir).expanduser()), name):
        point, index = meta.get("sweep_point"), meta.get("sweep_index")
        runs.append({  # a record's own fields of the wrong type are left out, as a broken manifest is
            "run_id": folder.name, "overrides": point if ENTRY["overrides"](point) and _strings(point) else [],
            "index": index if ENTRY["index"](index) and index is not None else len(runs),
            "backend": status.get("backend") if isinstance(status.get("backend"), str) else None,
            "job_id": status.get("job_id") if ENTRY["job_id"](status.get("job_id")) else None,
            "submitted": status.get("submitted"),
        })
    if not runs:
        return None
    runs.sort(key=lambda r: (r["index"], r["run_id"]))
    data = new(name, results_dir)
    data.update(runs=runs, rebuilt=now_iso(), backend=next((r["backend"] for r in runs if r["backend"]), None))
    path = manifest_path(results_dir, name)
    try:
        with _locked(path.parent):
            _keep_bad(path)
            atomic_write_json(path, data)
    except OSError as err:  # a read-only results dir can still be looked at
        import sys

        print(f"warning: {path}: rebuilt manifest not saved ({err.strerror or err})", file=sys.stderr, flush=True)
    return data


def load_or_rebuild(results_dir: str | Path, name: str) -> dict:
    data = load(results_dir, name)
    if data is None:
        data = rebuild(results_dir, name)
    if data is None:
        path = manifest_path(results_dir, name)
        manifest = f"{path} is unreadable" if path.exists() else f"no {path}"
        raise UserError(
            f"no sweep named {name!r} under {Path(results_dir)}: {manifest} and no run record names it "
            f"(submit it with `abcx sweep run {name}`, or pass --results-dir)"
        )
    return data
