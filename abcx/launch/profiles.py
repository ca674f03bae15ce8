"""SLURM cluster profiles (slurm/profiles/<name>.yaml): what a site's jobs ask for, and one point's
resource request (profile < resources_by_model[model.size] < explicit launcher fields). Read by the
SLURM backend to submit and by abcx.launch.layout to lay a job's nodes out."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from abcx.errors import UserError

PROFILE_DIR = Path(os.environ.get("ABCX_SLURM_PROFILES", Path(__file__).resolve().parent.parent.parent / "slurm" / "profiles"))
RESOURCE_KEYS = ("partition", "account", "qos", "time_min", "gpus_per_node", "cpus_per_task", "mem_gb", "constraint",
                 "nodes", "array_parallelism", "additional_parameters", "setup", "vllm_server",  # abcx.launch.layout
                 "signal_delay_s")  # the least warning before the time limit (abcx.training.deadline sizes it up)
PROFILE_KEYS = set(RESOURCE_KEYS) | {"resources_by_model", "description"}

def load_profile(name: str | None) -> dict:
    from abcx.yaml_io import load_yaml

    if not name:
        raise UserError("launcher.profile is required for launcher=slurm (a file in slurm/profiles/ or a path)")
    path = Path(name) if str(name).endswith((".yaml", ".yml")) else PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        have = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")) if PROFILE_DIR.is_dir() else []
        raise UserError(f"launcher.profile={name}: no file {path}; available: {', '.join(have) or 'none'}")
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a profile is a mapping of {', '.join(sorted(PROFILE_KEYS))}")
    from abcx.secrets import check_free_text

    check_free_text(str(path), data, into="job scripts and logs")  # e.g. a setup line exporting a token
    unknown = sorted(set(data) - PROFILE_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r}; valid: {', '.join(sorted(PROFILE_KEYS))}")
    for size, extra in (data.get("resources_by_model") or {}).items():
        bad = sorted(set(extra or {}) - set(RESOURCE_KEYS))
        if bad:
            raise UserError(f"{path}: resources_by_model.{size}.{bad[0]} is not a resource key; valid: "
                            f"{', '.join(RESOURCE_KEYS)}")
    return data


def resources(profile: dict, cfg: Any) -> dict:
    """The resource request of one point: profile < resources_by_model[model.size] < explicit launcher."""
    res = {k: profile.get(k) for k in RESOURCE_KEYS}
    res.update((profile.get("resources_by_model") or {}).get(str(cfg.model.size)) or {})
    launcher = cfg.launcher
    if launcher.gpus_per_job:
        res["gpus_per_node"] = launcher.gpus_per_job
    if launcher.array_parallelism:
        res["array_parallelism"] = launcher.array_parallelism
    if not res.get("time_min"):
        res["time_min"] = launcher.timeout_min
    return res
