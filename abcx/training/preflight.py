"""What `abcx train` checks about this machine before it starts anything (within a few seconds): enough
GPUs for launcher.num_processes, DeepSpeed for the zero3 config, and a hub model that can be loaded
(cached, or the hub reachable). Each failure is one line naming the setting and what to do; without
these, accelerate prints an ImportError traceback and transformers retries the hub for a minute.

Only the machine that trains runs these: a SLURM submission is checked by its job, on its node."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from abcx.errors import UserError

TRUTHY = ("1", "true", "yes", "on")


def check_machine(cfg: Any) -> None:
    check_gpus(cfg.launcher.num_processes, cfg.launcher.accelerate_config)
    check_model_source(model_source(cfg))


def check_gpus(num_processes: int, accelerate_config: str | None, found: int | None = None) -> None:
    """More processes than GPUs fails inside accelerate; the CPU config (gloo) needs none."""
    if num_processes <= 1:
        return
    if accelerate_config != "cpu":
        found = _gpu_count() if found is None else found
        if found < num_processes:
            raise UserError(f"launcher.num_processes={num_processes} needs {num_processes} GPUs; found {found} on this "
                            f"machine: set launcher.num_processes={max(found, 1)}, or launcher.accelerate_config=cpu "
                            f"for data parallel on CPU, or submit with launcher=slurm")
    if accelerate_config == "zero3" and not _installed("deepspeed"):
        raise UserError("launcher.accelerate_config=zero3 needs DeepSpeed, which is not installed here: "
                        "`pip install deepspeed` on a CUDA machine, or launcher.accelerate_config=ddp")


def model_source(cfg: Any) -> str | None:
    """The hub id a run will load, or None for a local folder / the built testbed."""
    path = cfg.model.path
    if not path or Path(str(path)).expanduser().exists():
        return None
    text = str(path)
    return text if text.count("/") == 1 and not text.startswith((".", "/", "~")) else None


def check_model_source(repo_id: str | None) -> None:
    """A hub model is usable if it is in the HF cache, or the hub answers; else say how to get it."""
    if repo_id is None or _cached(repo_id):
        return
    local = f"or set model.path=/a/local/folder holding the model (config.json, weights, tokenizer)"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in TRUTHY:
        raise UserError(f"model.path={repo_id!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: "
                        f"`huggingface-cli download {repo_id}` on a connected machine (same HF_HOME), {local}")
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    if not _reachable(endpoint.hostname or "huggingface.co", endpoint.port or 443):
        raise UserError(f"model.path={repo_id!r} is not in the Hugging Face cache and {endpoint.hostname} cannot be "
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


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
