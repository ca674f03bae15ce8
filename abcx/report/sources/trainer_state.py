"""HF Trainer / TRL `trainer_state.json` (`log_history`) → RunSet, with TRL names mapped to abcx's."""
from __future__ import annotations

import glob
import json
import math
import os

from abcx.errors import UserError
from abcx.record import checkpoint_step, many
from abcx.report.names import canonical
from abcx.report.runset import RunSet, wide_from_records, make_runs
from abcx.record.states import State


def find_state_file(path: str) -> str | None:
    """trainer_state.json of an output dir: its own, else the latest checkpoint-<step>'s."""
    if os.path.isfile(path):
        return path
    own = os.path.join(path, "trainer_state.json")
    if os.path.isfile(own):
        return own
    ckpts = glob.glob(os.path.join(glob.escape(path), "checkpoint-*", "trainer_state.json"))
    numbered = [(step, c) for c in ckpts if (step := checkpoint_step(os.path.dirname(c))) is not None]
    return max(numbered)[1] if numbered else None


def read_state(path: str, run_id: str | None = None):
    try:
        with open(path, "rb") as fh:
            state = json.load(fh)
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:  # json's decoder recurses per level: 200,000 nested lists are no trainer state
        raise UserError(f"{path}: nested too deeply to be a trainer_state.json (an object with a "
                        f"'log_history' list of log rows)") from None
    if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
        raise UserError(f"{path}: not a trainer_state.json (no 'log_history' list)")
    folder = os.path.dirname(os.path.abspath(path))
    if checkpoint_step(folder) is not None:
        folder = many.run_folder_of_checkpoint(folder)
    rid = run_id or os.path.basename(folder)
    rows = []
    for entry in state["log_history"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
            continue
        for key, value in entry.items():
            name = canonical(key)
            if name is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isnan(float(value)):
                rows.append((entry["step"], name, float(value)))
    step, max_steps = state.get("global_step"), state.get("max_steps")
    done = isinstance(step, int) and isinstance(max_steps, int) and max_steps > 0 and step >= max_steps
    row = {"run_id": rid, "source": "trainer_state", "state": (State.FINISHED if done else State.UNKNOWN).value,
           "stale": False, "name": rid, "step": step, "max_steps": max_steps, "path": path,
           "detail": "" if done else f"checkpoint at step {step} of {max_steps}"}
    return row, rows


def read_states(paths: list[str]) -> RunSet:
    runs, records, seen = [], [], {}
    for p in paths:
        row, rows = read_state(p)
        if row["run_id"] in seen:
            raise UserError(f"two trainer_state.json files name run {row['run_id']!r}: {seen[row['run_id']]} and {p}; "
                            "give one checkpoint per run")
        seen[row["run_id"]] = p
        runs.append(row)
        records.extend((row["run_id"], s, m, v) for s, m, v in rows)
    return RunSet(make_runs(runs), wide_from_records(records))
