"""Trainer checkpoints in a run folder: the one parser of `checkpoint-<step>` names, and whether a
checkpoint is complete enough to resume (a write cut short, or garbage, is never resumed)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

from abcx.record.io import read_json


_CHECKPOINT_STATE = "trainer_state.json"
_WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "adapter_model.bin")
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_TORCH_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth")


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a trainer checkpoint folder `checkpoint-<step>` (None for any other name): the one
    place that parses the name."""
    prefix, _, step = Path(path).name.rpartition("-")
    return int(step) if prefix == "checkpoint" and step.isdigit() else None


def checkpoints_of(folder: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the `checkpoint-<step>` folders directly in `folder`, oldest first."""
    folder = Path(folder)
    found = [(checkpoint_step(p), p) for p in folder.glob("checkpoint-*")] if folder.is_dir() else []
    return sorted((s, p) for s, p in found if s is not None and p.is_dir())


def checkpoint_problem(path: Path) -> str | None:
    """Why a trainer checkpoint folder cannot be resumed (None: it can). Cheap checks that catch a
    write cut short and garbage files: trainer_state.json (written last by the trainer) parses and
    names this step; the weights' headers and sizes agree; torch files are whole zip archives."""
    step = str(checkpoint_step(path))
    try:
        state = json.loads((path / _CHECKPOINT_STATE).read_bytes())
    except FileNotFoundError:
        return f"{_CHECKPOINT_STATE} missing (the write was cut short)"
    except (OSError, ValueError, RecursionError):
        return f"{_CHECKPOINT_STATE} is not valid JSON"
    if not isinstance(state, dict) or str(state.get("global_step")) != step:
        return f"{_CHECKPOINT_STATE} does not hold global_step {step}"
    return _files_problem(path, [path / n for n in _TORCH_FILES if (path / n).exists()])


def _files_problem(path: Path, extra: list[Path]) -> str | None:
    """Why the weights of a model folder (and `extra` torch files) are not whole, None if they are."""
    weights = [path / n for n in _WEIGHTS if (path / n).exists()]
    for index in (path / n for n in _INDEXES if (path / n).exists()):
        shards = (read_json(index, {}) or {}).get("weight_map")
        if not isinstance(shards, dict) or not shards:
            return f"{index.name} lists no weight files"
        weights += [path / str(s) for s in sorted(set(shards.values()))]
    try:
        if not weights and not any(p.is_dir() for p in path.iterdir()):  # FSDP/DeepSpeed ones are folders
            return "no model weights"
    except FileNotFoundError:  # renamed or rotated away meanwhile
        return "vanished"
    for file in weights + extra:
        problem = _weights_problem(file)
        if problem:
            return f"{file.name}: {problem}"
    return None


def model_folder_problem(path: str | Path) -> str | None:
    """Why a saved model folder (a run's final/, a checkpoint, any `save_pretrained` output) cannot be
    loaded, None where the cheap checks pass: config.json is a JSON object, the weights are whole."""
    path = Path(path)
    try:
        config = json.loads((path / "config.json").read_bytes())
    except FileNotFoundError:
        return "no config.json (not a model folder)"
    except (OSError, ValueError, RecursionError):
        return "config.json is not valid JSON (torn or garbage)"
    if not isinstance(config, dict):
        return "config.json is not a JSON object"
    return _files_problem(path, [])


def _weights_problem(file: Path) -> str | None:
    import zipfile

    try:
        size = file.stat().st_size
        if file.suffix == ".safetensors":
            with open(file, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                if n > size - 8:
                    return "header larger than the file (garbage or cut short)"
                header = json.loads(f.read(n))
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
            return None if 8 + n + max(ends, default=0) == size else "size does not match its header (cut short?)"
        with zipfile.ZipFile(file) as z:  # torch.save's format; reads only the central directory
            z.infolist()
        return None
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError, struct.error,
            zipfile.BadZipFile) as exc:
        return f"unreadable ({type(exc).__name__})"


def checkpoint_progress(checkpoint: Path) -> tuple[int, int]:
    """(global_step, max_steps) of a complete checkpoint, from its trainer_state.json."""
    state = json.loads((checkpoint / _CHECKPOINT_STATE).read_text())
    return int(state["global_step"]), int(state.get("max_steps") or 0)
