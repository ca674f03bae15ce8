"""Whether a model can be loaded here, checked before anything is created: a local folder must hold a
whole saved model (config.json, weights that match their headers), a hub id must be in the Hugging Face
cache or the hub reachable. Each failure is one line naming the input and what would be valid; without
these, transformers prints a traceback (a path is no repo id, a torn config.json, garbage weights) or
retries the hub for a minute. `abcx train` (abcx.training.preflight) and `abcx eval` ask here."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from abcx.errors import UserError

TRUTHY = ("1", "true", "yes", "on")
VALID = "a folder holding a saved model (config.json, weights, tokenizer) or a hub id ORG/NAME"


def hub_id(path: str) -> str | None:
    """`path` as a hub id (ORG/NAME), None when it names a local path (it exists, or looks like one)."""
    text = str(path)
    if not text or Path(text).expanduser().exists():
        return None
    return text if text.count("/") == 1 and not text.startswith((".", "/", "~")) else None


def check_model(path: str, said: str | None = None, local: str = "set model.path=/a/local/folder") -> None:
    """A hub id that can be fetched, or a local folder that holds a whole model; else one line that
    begins with `said` (default: model.path='PATH') and, for a hub id, offers `local` instead."""
    from abcx.record import model_folder_problem

    said = said or f"model.path={str(path)!r}"
    repo = hub_id(path)
    if repo is not None:
        check_model_source(repo, said, local)
        return
    folder = Path(str(path)).expanduser()
    if not folder.exists():
        raise UserError(f"{said}: no such folder; valid: {VALID}")
    if not folder.is_dir():
        raise UserError(f"{said} is a file, not a model folder; valid: {VALID}")
    problem = model_folder_problem(folder)
    if problem:
        raise UserError(f"{said} cannot be loaded: {problem}; valid: {VALID}")


def check_model_source(repo_id: str | None, said: str | None = None, local: str = "set model.path=/a/local/folder") \
        -> None:
    """A hub model is usable if it is in the HF cache, or the hub answers; else say how to get it."""
    if repo_id is None or _cached(repo_id):
        return
    said = said or f"model.path={repo_id!r}"
    local = f"or {local} holding the model (config.json, weights, tokenizer)"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in TRUTHY:
        raise UserError(f"{said} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: "
                        f"`huggingface-cli download {repo_id}` on a connected machine (same HF_HOME), {local}")
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    if not _reachable(endpoint.hostname or "huggingface.co", endpoint.port or 443):
        raise UserError(f"{said} is not in the Hugging Face cache and {endpoint.hostname} cannot be "
                        f"reached from here: `huggingface-cli download {repo_id}` where there is network, then "
                        f"HF_HUB_OFFLINE=1, {local}")


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - an odd id is the loader's to explain
        return True


def _reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False
