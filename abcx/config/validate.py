"""Validation of a composed config: the domain checks types cannot express, each a one-line UserError
naming the field, and a validation build of TRL's GRPOConfig so that TRL's own checks run before work."""
from __future__ import annotations

import os
from typing import Any

from abcx.config.schema import CONF_DIR, group_options
from abcx.errors import UserError


def validate(cfg: Any) -> None:
    """Domain checks the types cannot express. Raises UserError naming the field."""
    from abcx.methods import stats as L
    from abcx.tasks import REGISTRY

    from abcx import methods

    methods.validate(_plain(cfg.method))
    from abcx.methods import correction

    correction.check(_plain(cfg.get("correction") or {}))

    from abcx.config import domains

    domains.check(cfg)  # every field's type, range and choices
    t = cfg.train
    if t.num_generations < 2:
        raise UserError(f"train.num_generations={t.num_generations} must be >= 2 (group-relative advantages)")
    generation_batch = t.per_device_train_batch_size * t.steps_per_generation
    if generation_batch % t.num_generations:
        raise UserError(
            f"train.per_device_train_batch_size*steps_per_generation={generation_batch} must be divisible by "
            f"train.num_generations={t.num_generations}"
        )
    if t.loss_type not in L.LOSS_TYPES:
        raise UserError(f"train.loss_type={t.loss_type!r} is not supported; valid: {', '.join(L.LOSS_TYPES)}")
    if t.nan_policy not in domains.NAN_POLICIES:
        raise UserError(f"train.nan_policy={t.nan_policy!r}; valid: {', '.join(domains.NAN_POLICIES)}")
    domains.check_logprob_path(t.logprob_path)
    if cfg.task.name not in REGISTRY:
        raise UserError(f"task.name={cfg.task.name!r} is unknown; valid: {', '.join(sorted(REGISTRY))}")
    if cfg.logger.mode not in domains.LOGGER_MODES:
        raise UserError(f"logger.mode={cfg.logger.mode!r}; valid: {', '.join(domains.LOGGER_MODES)}")
    # A backend is a launcher group of conf/launcher/ (one per entry of abcx.launch.backend.BACKENDS,
    # tests/test_layers.py keeps the two equal): the config layer never names a backend itself.
    if cfg.launcher.name not in group_options("launcher"):
        from abcx.errors import did_you_mean

        hint = did_you_mean(cfg.launcher.name, group_options("launcher"))
        raise UserError(f"launcher.name={cfg.launcher.name!r}; {hint + ' ' if hint else ''}valid: "
                        f"{', '.join(group_options('launcher'))}")
    accelerate = cfg.launcher.accelerate_config
    if accelerate is not None and not (CONF_DIR / "accelerate" / f"{accelerate}.yaml").is_file():
        valid = ", ".join(sorted(p.stem for p in (CONF_DIR / "accelerate").glob("*.yaml")))
        raise UserError(f"launcher.accelerate_config={accelerate!r} is not in conf/accelerate/; valid: {valid}")
    from abcx import secrets
    from abcx.config import trl_args

    secrets.check_config(_plain(cfg))
    if not _inside_distributed_rank():  # ranks train what their launcher validated (and built) already
        trl_args.check(cfg)


def _plain(cfg: Any) -> Any:
    if isinstance(cfg, dict):  # the sweep planner's plain-dict configs
        return cfg
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def _inside_distributed_rank() -> bool:
    """Under `accelerate launch` a validation build of the GRPOConfig would set up the process group
    before the trainer does (with CPU settings); the launching process checked the config already."""
    return "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1") or 1) > 1

