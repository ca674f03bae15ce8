"""Which reader handles which path: results dirs, run folders, globs, wandb dirs, trainer_state.json."""
from __future__ import annotations

import glob
import os

from abcx.errors import UserError
from abcx.record import many
from abcx.report.runset import RunSet, concat
from abcx.report.sources import abcx_records, trainer_state, wandb_offline

KINDS = ("abcx", "wandb-offline", "trainer_state", "base-eval")
# Folders that never hold runs (inside a record, inside a W&B run); skipping them keeps the walk cheap.
SKIP_DIRS = {*many.inner_folders(), "files", "logs", "tmp", "__pycache__", "node_modules"}


def classify(path: str) -> str | None:
    if os.path.isfile(path):
        if path.endswith(".wandb"):
            return "wandb-offline"
        if os.path.basename(path) == "trainer_state.json":
            return "trainer_state"
        return None
    if many.is_record(path):
        return "abcx"
    if many.is_eval_only(path):
        return "base-eval"  # `abcx eval <model>` of a model that is no run (results/evals/<name>/): a base
    if wandb_offline.is_run_dir(path):
        return "wandb-offline"
    if trainer_state.find_state_file(path):
        return "trainer_state"
    return None


def _walk(root: str, found: dict[str, list[str]]) -> None:
    # os.walk does not follow directory symlinks, so wandb's `latest-run` is not read twice.
    for dirpath, dirnames, _ in os.walk(root):
        kind = classify(dirpath)
        if kind:
            found[kind].append(dirpath)
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))


def discover(sources: list[str]) -> dict[str, list[str]]:
    """{kind: [run paths]} for every run under the given paths (deduplicated by real path)."""
    found: dict[str, list[str]] = {k: [] for k in KINDS}
    for src in sources:
        matches = sorted(glob.glob(src, recursive=True)) if glob.has_magic(src) else [src]
        if not matches:
            raise UserError(f"source {src!r}: no path matches this pattern")
        for path in matches:
            if not os.path.exists(path):
                raise UserError(f"source {path!r}: no such file or directory")
            before = sum(map(len, found.values()))
            kind = classify(path)
            if kind == "wandb-offline" and os.path.isfile(path):
                found[kind].append(os.path.dirname(path))
            elif kind:
                found[kind].append(path)
            elif os.path.isdir(path):
                _walk(path, found)
            if sum(map(len, found.values())) == before:
                raise UserError(f"source {path!r}: no runs found (expected abcx run records with meta.json/"
                                f"status.json, W&B offline-run-* folders, or trainer_state.json)")
    for kind, paths in found.items():
        seen, unique = set(), []
        for p in paths:
            real = os.path.realpath(p)
            if real not in seen:
                seen.add(real)
                unique.append(p)
        found[kind] = unique
    return found


def read_sources(sources: list[str], stale_after_s: float = abcx_records.DEFAULT_STALE_AFTER_S,
                 metric_map=None) -> RunSet:
    """Every run under `sources`; the history of runs abcx did not train is put into abcx's metric
    names by `metric_map` (abcx/report/metric_map.py; the package's map when None)."""
    from abcx.report import metric_map as M

    found = discover(sources)
    mmap = metric_map or M.load()
    sets = []
    if found["abcx"]:
        sets.append(abcx_records.read_records(found["abcx"], stale_after_s=stale_after_s,
                                              base_paths=found["base-eval"]))
    if found["wandb-offline"]:
        sets.append(M.apply(wandb_offline.read_runs(found["wandb-offline"]), mmap))
    if found["trainer_state"]:
        files = [trainer_state.find_state_file(p) for p in found["trainer_state"]]
        sets.append(M.apply(trainer_state.read_states(files), mmap))
    return concat(sets)
