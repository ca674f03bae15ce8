"""abcx's config -> TRL's GRPOConfig, and the same GRPOConfig built at validation time.

`grpo_args` is what a run trains with. `check` builds it once per distinct set of trainer arguments
before anything is created or submitted (on CPU, whatever the machine), so that TRL's and
transformers' own checks (scheduler names, batch divisibility, ...) surface as one line naming
abcx's field instead of a traceback inside a run that already has a folder.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from abcx.errors import UserError

# GRPOConfig fields abcx sets from its own config -> the abcx field that owns each (first word), with a
# hint. train.extra may not
# set them: the extra value would silently replace abcx's (`+train.extra.epsilon=0.3` on an ABC run
# changes TRL's epsilon, not the method's bounds) and bypass abcx's checks.
_TRAIN_FIELDS = (
    "max_steps", "num_train_epochs", "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay",
    "max_grad_norm", "per_device_train_batch_size", "num_generations", "gradient_accumulation_steps",
    "steps_per_generation", "num_iterations", "max_completion_length", "temperature", "top_p", "top_k", "beta",
    "loss_type", "scale_rewards", "logging_steps", "save_steps", "save_total_limit", "bf16",
    "gradient_checkpointing", "use_vllm", "vllm_mode", "vllm_gpu_memory_utilization",
    "vllm_importance_sampling_correction",
)
CONTROLLED: dict[str, str] = {
    **{name: f"train.{name}" for name in _TRAIN_FIELDS},
    "activation_checkpointing": "train.gradient_checkpointing",
    "generation_batch_size": "train.steps_per_generation (generation batch = batch size x steps_per_generation)",
    "seed": "seed", "data_seed": "seed",
    "output_dir": "results_dir (runs live in <results_dir>/runs/<run id>)",
    "run_name": "name (the W&B display name; the W&B run id is abcx's run id)",
    "report_to": "logger (logger=wandb or logger=none)",
    "importance_sampling_level": "method.importance_sampling_level",
    "epsilon": "method.eps_low (method.eps4 for abc_grpo: the method's bounds; `abcx methods` lists each method's)",
    "epsilon_high": "method.eps_high (method.eps1 for abc_grpo: the method's bounds)",
    "delta": "method.delta (with method=two_sided)",
    # TRL's parameters of its other loss types: abcx's methods own them (`abcx methods`)
    "sapo_temperature_pos": "method.tau_pos (with method=sapo)", "sapo_temperature_neg": "method.tau_neg (with method=sapo)",
    "vespo_k_pos": "method.k_pos (with method=vespo)", "vespo_lambda_pos": "method.lambda_pos (with method=vespo)",
    "vespo_k_neg": "method.k_neg (with method=vespo)", "vespo_lambda_neg": "method.lambda_neg (with method=vespo)",
    "model_init_kwargs": "model.dtype / model.attn_implementation",
    "logging_nan_inf_filter": "train.nan_policy",
    "disable_tqdm": "logger (abcx prints its own progress lines)",
    "use_cpu": "launcher.gpus_per_job (abcx trains on a GPU when the machine has one)",
}
# Hardware-dependent settings the validation build leaves out: a config is checked on the machine
# that submits it (often without a GPU, DeepSpeed or vLLM), not the one that trains.
_HARDWARE = ("deepspeed", "fp16", "bf16", "tf32", "use_cpu", "fsdp", "fsdp_config", "torch_compile",
             "torch_compile_backend", "torch_compile_mode")


def _plain(value: Any) -> Any:
    if hasattr(value, "_metadata"):  # an OmegaConf node
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def trainer_kwargs(cfg: Any, output_dir: str, *, report_to: list[str], on_gpu: bool, run_name: str) -> dict:
    """GRPOConfig's keyword arguments for a run: abcx's train group, the method's ratio level, and train.extra."""
    from abcx.methods.runtime import MethodRun

    t, m = cfg.train, _plain(cfg.method)
    bounds = MethodRun(m["name"], m).bounds(0)  # None for a method without four bounds
    kwargs = {name: t[name] for name in _TRAIN_FIELDS}
    kwargs.update(
        output_dir=output_dir, seed=cfg.seed, data_seed=cfg.seed,
        importance_sampling_level=m.get("importance_sampling_level", "token"),
        # TRL's own clip parameters are unused by abcx's loss; set them to the method's for its logs.
        epsilon=bounds.eps4 if bounds is not None else None,
        epsilon_high=bounds.eps1 if bounds is not None else None,
        bf16=bool(t.bf16 and on_gpu), use_cpu=not on_gpu,
        report_to=report_to, run_name=run_name, disable_tqdm=True,
        logging_nan_inf_filter=False,  # a NaN loss must reach the record (and train.nan_policy), not be averaged away
        model_init_kwargs={"dtype": cfg.model.dtype, **({"attn_implementation": cfg.model.attn_implementation}
                                                        if cfg.model.attn_implementation else {})},
    )
    kwargs.update(_plain(t.extra))
    if t.use_vllm and t.vllm_mode == "server" and os.environ.get("ABCX_VLLM_SERVER_HOST"):
        # Set by a SLURM job whose layout reserves server nodes (abcx.launch.layout); volatile, not config.
        kwargs.update(vllm_server_host=os.environ["ABCX_VLLM_SERVER_HOST"],
                      vllm_server_port=int(os.environ["ABCX_VLLM_SERVER_PORT"]))
    if kwargs["epsilon"] is None or kwargs["epsilon"] == math.inf:
        kwargs["epsilon"] = 0.2
    if kwargs["epsilon_high"] is None or kwargs["epsilon_high"] == math.inf:
        kwargs["epsilon_high"] = kwargs["epsilon"]
    return kwargs


def grpo_args(cfg: Any, output_dir: Path, *, report_to: list[str]):
    """The GRPOConfig a run trains with (validated by `check` when the config was composed)."""
    import torch

    from abcx.config.identity import run_id

    check_extra(cfg.train.extra)
    kwargs = trainer_kwargs(cfg, str(output_dir), report_to=report_to, on_gpu=torch.cuda.is_available(),
                            run_name=cfg.name or run_id(cfg))  # the W&B display name; its id stays the run id
    return grpo_config(kwargs)


def grpo_config(kwargs: dict):
    """GRPOConfig(**kwargs), each renamed argument passed under the name the installed transformers takes."""
    from trl import GRPOConfig

    return GRPOConfig(**current_names(kwargs, _fields()))


# transformers 5.2x renamed these TrainingArguments (the old names warn, and go in v6); abcx keeps
# train.gradient_checkpointing, the name users know, and passes whichever name the installed version takes.
_RENAMED = {"gradient_checkpointing": "activation_checkpointing",
            "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs"}


def current_names(kwargs: dict, fields: Any) -> dict:
    """`kwargs` with each renamed argument under its new name where GRPOConfig has the new field (and
    the new name is not given too: then transformers uses the new one, as it would have)."""
    def name(k: str) -> str:
        return _RENAMED[k] if k in _RENAMED and _RENAMED[k] in fields and _RENAMED[k] not in kwargs else k

    return {name(k): v for k, v in kwargs.items()}


def check_extra(extra: Any) -> None:
    """train.extra holds other GRPOConfig fields: known, not one abcx controls, of the field's type."""
    from abcx.secrets import is_credential_field, refuse_field

    if not extra:
        return
    fields = _fields()
    for key, value in extra.items():
        name = f"train.extra.{key}"
        if is_credential_field(key):
            raise refuse_field(name)
        if key in CONTROLLED:
            raise UserError(f"{name} is set by abcx from {CONTROLLED[key]}; set that instead (train.extra is for "
                            f"the GRPOConfig fields abcx does not set)")
        if key not in fields:
            import difflib

            close = difflib.get_close_matches(str(key), list(fields), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UserError(f"{name} is not a field of TRL's GRPOConfig{hint}")
        if not _matches(_plain(value), fields[key]):
            raise UserError(f"{name}={_short(value)} has the wrong type; GRPOConfig's {key} is {_type_name(fields[key])}")


_FIELDS: dict[str, Any] | None = None


def _fields() -> dict[str, Any]:
    global _FIELDS
    if _FIELDS is None:
        import typing

        from trl import GRPOConfig

        _FIELDS = typing.get_type_hints(GRPOConfig)
    return _FIELDS


def _matches(value: Any, hint: Any) -> bool:
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True  # enums, classes, Any: TRL's own build decides


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# Trainer arguments already built in this process, by their canonical JSON: None when valid, else the
# error line.
_CHECKED: dict[str, str | None] = {}


def check(cfg: Any) -> None:
    """Build the GRPOConfig of `cfg` on CPU, once per distinct set of arguments; raise a one-line
    UserError naming abcx's field when TRL or transformers refuses it."""
    check_extra(cfg.train.extra)
    kwargs = trainer_kwargs(cfg, "abcx-validation", report_to=[], on_gpu=False, run_name="abcx-validation")
    for key in _HARDWARE:
        kwargs.pop(key, None)
    key = json.dumps(kwargs, sort_keys=True, default=repr)
    if key not in _CHECKED:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        if digest in _accepted_on_disk():
            _CHECKED[key] = None
        else:
            with _said("trl" not in sys.modules):
                _CHECKED[key] = _build(kwargs, set(_plain(cfg.train.extra) or {}))
            if _CHECKED[key] is None:
                _remember(digest)
    if _CHECKED[key] is not None:
        raise UserError(_CHECKED[key])


def _said(importing: bool):
    """A progress line while TRL is imported for a check (seconds; 10+ on a busy machine)."""
    from contextlib import nullcontext

    if not importing:
        return nullcontext()
    from abcx import progress

    return progress.task("checking the settings with TRL's GRPOConfig (new settings: TRL is imported once)",
                         name="config", info="importing TRL")


# Importing TRL and transformers and building the first GRPOConfig costs ~3 s, more than planning a
# 1,000-point sweep: argument sets TRL accepted are remembered across processes (keyed by the library
# versions and the environment variables accelerate reads), so a repeated dry-run imports nothing.
# Only acceptances are kept; a refusal is always rebuilt, so its message is always current.
_CACHE_FORMAT = 1
_CACHE_LIMIT = 50_000
_DISK: set[str] | None = None
_NEW: set[str] = set()


def _cache_file() -> Path:
    import os
    import sys
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    env = sorted((k, v) for k, v in os.environ.items() if k.startswith("ACCELERATE_") or k in ("WORLD_SIZE", "RANK"))
    tag = json.dumps([_CACHE_FORMAT, sys.version, env, *(installed(p) for p in ("trl", "transformers", "torch",
                                                                                "accelerate"))])
    base = Path(os.environ.get("ABCX_CACHE") or Path.home() / ".cache" / "abcx")
    return base / f"trainer-args-accepted-{hashlib.sha256(tag.encode()).hexdigest()[:16]}.json"


def _accepted_on_disk() -> set[str]:
    global _DISK
    if _DISK is None:
        try:
            data = json.loads(_cache_file().read_text())
            _DISK = {d for d in data if isinstance(d, str)} if isinstance(data, list) else set()
        except (OSError, ValueError):
            _DISK = set()
    return _DISK


def _remember(digest: str) -> None:
    if not _NEW:
        import atexit

        atexit.register(_save)
    _NEW.add(digest)


def _save() -> None:
    """Merge this process's acceptances into the cache file (atomically; a cache: errors are ignored)."""
    import os
    import tempfile

    path = _cache_file()
    try:
        try:
            known = json.loads(path.read_text())
            known = [d for d in known if isinstance(d, str)] if isinstance(known, list) else []
        except (OSError, ValueError):
            known = []
        merged = list(dict.fromkeys([*known, *sorted(_NEW)]))[-_CACHE_LIMIT:]
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(merged, f)
        os.replace(tmp, path)
    except OSError:
        pass


def _build(kwargs: dict, from_extra: set[str]) -> str | None:
    import warnings

    from transformers.trainer_utils import SchedulerType

    valid = [s.value for s in SchedulerType]
    if kwargs["lr_scheduler_type"] not in valid:
        return f"train.lr_scheduler_type={kwargs['lr_scheduler_type']!r} is not a scheduler; valid: {', '.join(valid)}"
    try:
        with warnings.catch_warnings():  # deprecation notices: the run's own build shows them once
            warnings.simplefilter("ignore")
            grpo_config({**kwargs, "use_cpu": True, "bf16": False})
    except Exception as err:  # noqa: BLE001 - any refusal of TRL/transformers becomes one line
        return _explain(err, kwargs, from_extra)
    return None


def _explain(err: Exception, kwargs: dict, from_extra: set[str]) -> str:
    """One line naming abcx's field(s) for an error of TRL/transformers about its own argument names."""
    import re

    text = " ".join(str(err).split()) or type(err).__name__
    if len(text) > 240:
        text = text[:237] + "..."
    named = [k for k in kwargs if re.search(rf"(?<![A-Za-z_]){re.escape(k)}(?![A-Za-z_])", str(err))]
    enum = re.match(r"'?(.+?)'? is not a valid \w+", str(err))
    if not named and enum:  # "bogus is not a valid OptimizerNames": the field is the one holding that value
        named = [k for k, v in kwargs.items() if isinstance(v, str) and v == enum.group(1)]
    named.sort(key=lambda k: k not in from_extra)  # what the user added is the likelier cause
    fields = []
    for k in named:
        owner = f"train.extra.{k}" if k in from_extra else CONTROLLED.get(k, f"train.extra.{k}").split(" ")[0]
        if owner not in fields:
            fields.append(owner)
    where = ", ".join(fields) if fields else "train"
    return f"{where}: TRL's GRPOConfig refuses these settings: {text}"
