"""What `abcx train` checks about this machine before it starts anything (within a few seconds): enough
GPUs for launcher.num_processes, DeepSpeed for the zero3 config, vLLM for train.use_vllm, and a model that
can be loaded (a local folder holding a whole model; a hub id cached, or the hub reachable:
abcx.evaluation.models). Each failure is one line naming the setting and what to do; without
these, accelerate prints an ImportError traceback and transformers retries the hub for a minute.

Only the machine that trains runs these: a SLURM submission is checked by its job, on its node."""
from __future__ import annotations

from typing import Any

from abcx.errors import UserError
from abcx.evaluation.models import check_model, check_model_source, hub_id  # noqa: F401 - check_model_source: API


def check_machine(cfg: Any) -> None:
    check_gpus(cfg.launcher.num_processes, cfg.launcher.accelerate_config)
    if cfg.model.path:  # a hub id cached or reachable, a local folder holding a whole model
        check_model(str(cfg.model.path))
    if cfg.train.use_vllm and not _installed("vllm"):
        raise UserError("train.use_vllm=true needs vLLM, which is not installed here: `pip install vllm` on a CUDA "
                        "machine, or train.use_vllm=false (generation with transformers)")


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
    return hub_id(str(cfg.model.path)) if cfg.model.path else None


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
