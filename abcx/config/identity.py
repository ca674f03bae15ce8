"""A run's identity: the stable hash of what it trains (volatile fields left out) and its run id
`<method>-s<seed>-<hash[:10]>`, so resubmitting the same point finds the same run folder."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from abcx.config.schema import VOLATILE, VOLATILE_TRAIN


def to_dict(cfg: Any) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def config_hash(cfg: Any) -> str:
    """sha256 of the config that determines what is trained, in canonical JSON."""
    data = to_dict(cfg) if not isinstance(cfg, dict) else dict(cfg)
    # The launcher is volatile, but its process count multiplies the global batch: part of what is trained.
    # Only counts above 1 enter the hash, so single-process run ids stay what they always were.
    processes = (data.get("launcher") or {}).get("num_processes") or 1
    for key in VOLATILE:
        data.pop(key, None)
    if isinstance(data.get("method"), dict):  # the five original presets hash as they were recorded
        from abcx.methods import hash_view

        data["method"] = hash_view(data["method"])
    from abcx.methods.correction import hash_view as correction_view

    if correction_view(data.get("correction")) is None:  # no correction: run ids stay what they were
        data.pop("correction", None)
    if isinstance(data.get("train"), dict):
        data["train"] = {k: v for k, v in data["train"].items() if k not in VOLATILE_TRAIN}
    if processes > 1:
        data["world_size"] = processes
    canon = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


def enters_hash(dotted: str) -> bool:
    """Whether a config field ("train.max_steps", "logger.project") enters `config_hash`, i.e. changes
    what is trained; the report groups runs by these fields only."""
    top, _, rest = dotted.partition(".")
    if top == "launcher":
        return rest == "num_processes"  # as `world_size`, when above 1
    return top not in VOLATILE and not (top == "train" and rest in VOLATILE_TRAIN)


def run_id(cfg: Any) -> str:
    return f"{cfg.method.name}-s{cfg.seed}-{config_hash(cfg)[:10]}"


def model_build(cfg: Any) -> str | None:
    """The build of the embedded model `tiny` (its recipe's cache folder), None for any other model.
    The recipe lives in code, not in the config, so it is not part of the run id (recorded ids stay
    stable across versions); RunRecord.check_model_build keeps a run of another build from being
    resumed or counted as this config's run."""
    if cfg.model.name != "tiny" or cfg.model.path:
        return None
    from abcx.testbed import DEFAULT_RECIPE

    return DEFAULT_RECIPE.folder_name()

