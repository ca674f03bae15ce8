"""The experiment config: a typed schema (dataclasses registered with Hydra's ConfigStore), composed
from the YAML groups under conf/ (method, model, task, train, launcher, logger, eval, experiment),
validated, and hashed into a stable run id.

Typed nodes make Hydra reject a wrong type or an unknown key; on top of that `compose` refuses
`+key=value` for keys outside the schema (Hydra would accept and silently keep them in a typed node's
parent, where nothing reads them) and turns Hydra's exceptions into one-line UserErrors.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from abcx.errors import UserError
from abcx.methods.correction import CorrectionConf

CONF_DIR = Path(os.environ.get("ABCX_CONF_DIR", Path(__file__).resolve().parent.parent / "conf"))

# Fields that say where or how a run is recorded, not what is trained: left out of the run id.
VOLATILE = ("results_dir", "logger", "launcher", "group", "tags", "name")
# How, not what: the log-prob paths give the same gradients (to fp rounding), so a run keeps its id.
VOLATILE_TRAIN = ("logprob_path",)


@dataclass
class MethodConf:
    """The base of every method's group; each method's own typed group (its parameters, with the
    registry's defaults) is generated from abcx.methods by `method_schemas`."""

    name: str = "abc_grpo"


def _schema_class_name(method: str) -> str:
    return "".join(part.title() for part in method.split("_")) + "MethodConf"


def method_schemas() -> dict[str, type]:
    """name -> a dataclass (subclass of MethodConf) per registered method: the `method=<name>` group."""
    from dataclasses import make_dataclass

    from abcx import methods

    schemas = {}
    for name, method in methods.registry().items():
        fields: list[Any] = [("name", str, field(default=name))]
        for p in method.params:
            kind = p.type if p.default is not None else Optional[p.type]
            fields.append((p.name, kind, field(default=p.default)))
        schemas[name] = make_dataclass(_schema_class_name(name), fields, bases=(MethodConf,))
    return schemas


@dataclass
class ModelConf:
    name: str = "tiny"
    path: Optional[str] = None  # hub id or local folder; null for `tiny` (built locally)
    size: str = "tiny"  # key into a cluster profile's resources_by_model
    dtype: str = "float32"
    attn_implementation: Optional[str] = None


@dataclass
class TaskConf:
    name: str = "arith"
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConf:
    max_steps: int = 30
    num_train_epochs: float = 1.0
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "constant"
    warmup_steps: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    per_device_train_batch_size: int = 32
    num_generations: int = 8
    gradient_accumulation_steps: int = 1
    steps_per_generation: int = 4
    num_iterations: int = 1
    max_completion_length: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    beta: float = 0.0
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    logging_steps: int = 1
    save_steps: int = 10
    save_total_limit: Optional[int] = 2
    bf16: bool = False
    gradient_checkpointing: bool = False
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    vllm_gpu_memory_utilization: float = 0.4
    vllm_importance_sampling_correction: bool = True
    nan_policy: str = "fail"  # fail | skip
    logprob_path: str = "auto"  # auto | fused | chunked | full: where log-probs come from (abcx.logprobs)
    extra: Dict[str, Any] = field(default_factory=dict)  # any other GRPOConfig field, passed through


@dataclass
class EvalConf:
    every_steps: int = 0  # 0 = only at the end of training when `at_end`
    at_end: bool = True
    benchmarks: List[str] = field(default_factory=lambda: ["arith"])
    n: int = 16
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20
    max_new_tokens: int = 8
    max_problems: Optional[int] = 100
    batch_size: int = 64
    seed: int = 1234


@dataclass
class LoggerConf:
    name: str = "wandb"
    mode: str = "offline"  # offline | online | disabled
    project: str = "abcx"
    entity: Optional[str] = None


@dataclass
class LauncherConf:
    name: str = "local"
    max_parallel: Optional[int] = None  # local: default = GPUs if any, else CPU cores
    profile: Optional[str] = None  # slurm: slurm/profiles/<profile>.yaml
    timeout_min: int = 60
    gpus_per_job: int = 0
    array_parallelism: Optional[int] = None
    num_processes: int = 1  # >1: launch the trainer with accelerate
    accelerate_config: Optional[str] = None  # conf/accelerate/<name>.yaml


@dataclass
class AbcxConf:
    method: MethodConf = field(default_factory=MethodConf)
    correction: CorrectionConf = field(default_factory=CorrectionConf)
    model: ModelConf = field(default_factory=ModelConf)
    task: TaskConf = field(default_factory=TaskConf)
    train: TrainConf = field(default_factory=TrainConf)
    eval: EvalConf = field(default_factory=EvalConf)
    logger: LoggerConf = field(default_factory=LoggerConf)
    launcher: LauncherConf = field(default_factory=LauncherConf)
    seed: int = 0
    results_dir: str = "results"
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    name: Optional[str] = None


GROUPS = ("method", "correction", "model", "task", "train", "eval", "logger", "launcher", "experiment")
_registered = False


def _register() -> None:
    global _registered
    if _registered:
        return
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="abcx_schema", node=AbcxConf)
    for name, schema in method_schemas().items():  # `method=<name>` comes from the registry
        store.store(group="method", name=name, node=schema)
    _registered = True


def group_options(group: str) -> list[str]:
    folder = CONF_DIR / group
    found = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
    if group == "method":  # every registered method, then any preset file in conf/method/
        from abcx import methods

        return methods.names() + [name for name in found if name not in methods.registry()]
    return found


def _walk_schema(path: list[str]) -> tuple[bool, int | None]:
    """(whether a dotted key exists in the schema or lies inside one of its free-form dicts, the index in
    `path` of that free-form dict or None)."""
    import typing

    node: Any = AbcxConf
    for i, part in enumerate(path):
        if not is_dataclass(node):
            return False, None
        hint = typing.get_type_hints(node).get(part)
        if hint is None:
            return False, None
        if typing.get_origin(hint) is dict:
            return True, i
        node = hint
    return True, None


def _schema_allows(path: list[str]) -> bool:
    """Whether a dotted key exists in the schema, or lies inside one of its free-form dicts."""
    return _walk_schema(path)[0]


def check_overrides(overrides: list[str]) -> None:
    """Reject, before Hydra sees them, overrides that Hydra would accept but that mean nothing."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    for text in overrides:
        _check_raw(text)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides=list(overrides))
    except HydraException as err:
        raise UserError(f"cannot parse override: {_one_line(err)}") from None
    for o in parsed:
        key = o.key_or_group
        _refuse_foreign_key(o.input_line, key)
        if o.is_delete() and key not in GROUPS and not _in_free_dict(key.split(".")):
            raise UserError(f"{o.input_line!r} removes {key}, which every run needs; set a value instead "
                            f"({key}=..., or {key}=null where the field allows none)")
        if o.is_sweep_override():
            raise UserError(f"{o.input_line!r} is a sweep; use `abcx sweep` for several values")
        if key in GROUPS:
            value = o.value()
            if o.is_delete():
                raise UserError(f"{o.input_line!r} removes the {key} group; choose one of: {', '.join(group_options(key))}")
            if not isinstance(value, str) or value not in group_options(key):
                raise UserError(f"{key}={value} is not a config; valid {key} choices: {', '.join(group_options(key))}")
            continue
        if (o.is_add() or o.is_force_add()) and not _schema_allows(key.split(".")):
            raise UserError(
                f"{o.input_line!r} adds {key!r}, which the config does not have; extra trainer options go "
                f"under train.extra (e.g. +train.extra.{key.split('.')[-1]}=...)"
            )


# TRL GRPOConfig names a user may type under train. where abcx names the field otherwise.
TRL_NAMES = {"warmup_ratio": "train.warmup_steps (a value below 1 is a fraction of train.max_steps)",
             "max_prompt_length": "task.options (the task builds its prompts)"}


def _refuse_foreign_key(text: str, key: str) -> None:
    """Keys that would be accepted and mean nothing, or mean something else than they say: refused
    with the field that does what was meant."""
    if key.startswith("hydra.") or key == "hydra":
        raise UserError(f"{text!r}: abcx composes its config with Hydra but is not a Hydra app, so hydra.* "
                        f"settings have no effect; runs are written to <results_dir>/runs/<run id> (set results_dir=...)")
    top, _, leaf = key.partition(".")
    if top != "train" or not leaf or "." in leaf or leaf in {f.name for f in _fields_of(TrainConf)}:
        return
    from abcx.trl_args import CONTROLLED

    owner = TRL_NAMES.get(leaf) or CONTROLLED.get(leaf)
    if owner:
        raise UserError(f"{text!r}: {leaf} is TRL's GRPOConfig name; in abcx it is {owner}")


def _fields_of(cls):
    import dataclasses

    return dataclasses.fields(cls)


MAX_KEY = 200  # no config key is longer; a longer one is not a key (and would reach the file system)


def _check_raw(text: str) -> None:
    """Before Hydra parses an override (its errors quote the text): refuse an absurd key, and a
    credential in the key or the value, without echoing it."""
    from abcx import secrets

    if not isinstance(text, str):
        raise UserError(f"override {text!r} is not text")
    key, _, value = text.partition("=")
    key = key.lstrip("+~").split("@")[0].strip()
    if len(key) > MAX_KEY:
        raise UserError(f"an override's key is {len(key)} characters long; config keys are dotted field names "
                        f"(at most {MAX_KEY} characters), e.g. train.max_steps=20")
    if secrets.is_credential_field(key.rsplit(".", 1)[-1]):
        raise secrets.refuse_field(key)
    secrets.check_text(key or "override", value)
    secrets.check_text(f"{key} (key)", key)


def _in_free_dict(path: list[str]) -> bool:
    """Whether a dotted key lies strictly inside one of the schema's free-form dicts (train.extra, task.options)."""
    free = _walk_schema(path)[1]
    return free is not None and free < len(path) - 1


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) < 300 else text[:297] + "..."


def compose(overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Compose conf/config.yaml with the overrides, validate, and return a typed OmegaConf node."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides)
    check_overrides(overrides)
    _register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=overrides)
        from omegaconf import OmegaConf

        from abcx.secrets import check_config

        check_config(OmegaConf.to_container(cfg, resolve=False))  # `${oc.env:HF_TOKEN}` in a config file
        try:
            OmegaConf.resolve(cfg)  # interpolations fail here, as a config error, not later inside a job
        except OmegaConfBaseException as err:
            raise UserError(_explain_interpolation(cfg, err)) from None
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(_explain_hydra_error(err)) from None
    except OSError as err:  # e.g. a key Hydra took for a config file name
        raise UserError(f"cannot compose the config: {_one_line(err)}") from None
    finally:
        GlobalHydra.instance().clear()
    validate(cfg)
    return cfg


def _explain_interpolation(cfg: Any, err: BaseException) -> str:
    """OmegaConf.resolve does not say which field failed: find it by resolving each interpolation."""
    from omegaconf import OmegaConf

    def first_line(e: BaseException) -> str:
        return _one_line(ValueError((str(e).strip().splitlines() or [type(e).__name__])[0]))

    def walk(node: Any, prefix: str) -> str | None:
        items = node.items_ex(resolve=False) if OmegaConf.is_dict(node) else enumerate(node._iter_ex(resolve=False))
        for key, _ in items:
            path = f"{prefix}.{key}" if prefix and OmegaConf.is_dict(node) else f"{prefix}[{key}]" if prefix else str(key)
            if OmegaConf.is_interpolation(node, key):
                try:
                    node[key]
                except Exception as inner:  # noqa: BLE001 - the failing field, named
                    return f"{path}: cannot resolve its interpolation: {first_line(inner)}"
            else:
                child = node._get_node(key)
                if OmegaConf.is_config(child):
                    found = walk(child, path)
                    if found:
                        return found
        return None

    try:
        return walk(cfg, "") or f"cannot resolve an interpolation: {first_line(err)}"
    except Exception:  # noqa: BLE001 - never worse than OmegaConf's own line
        return f"cannot resolve an interpolation: {first_line(err)}"


def _explain_hydra_error(err: BaseException) -> str:
    cause = err.__cause__ or err.__context__
    text = _one_line(cause if cause is not None and "full_key" in str(cause) else err)
    if "full_key:" in text:  # a type error inside a typed node: name the field first
        key = text.split("full_key:")[1].split()[0].rstrip(",")
        if key.startswith("method.") and "MethodConf'" in text and "not in" in text:
            return _method_key_error(key, text)
        return f"{key}: {text.split('full_key:')[0].strip().rstrip('.')}"
    if "Could not override" in text:
        key = text.split("'")[1]
        return f"{key} is not a config field; extra trainer options go under +train.extra.<name>=<value>"
    return text


def _method_key_error(key: str, text: str) -> str:
    """`method.<key>` that the chosen method does not have: name its parameters (from the registry)."""
    from abcx import methods

    schema = text.split("object_type=")[-1].split()[0] if "object_type=" in text else ""
    for name, method in methods.registry().items():
        if _schema_class_name(name) == schema:
            return (f"{key} does not apply to method {name!r}; its parameters: "
                    f"{', '.join(p.name for p in method.params)}")
    return f"{key} is not a parameter of the chosen method; `abcx methods` lists each method's parameters"


def validate(cfg: Any) -> None:
    """Domain checks the types cannot express. Raises UserError naming the field."""
    from abcx.methods import stats as L
    from abcx.tasks import REGISTRY

    from abcx import methods

    methods.validate(_plain(cfg.method))
    from abcx.methods import correction

    correction.check(_plain(cfg.get("correction") or {}))

    from abcx import domains

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
    if t.nan_policy not in ("fail", "skip"):
        raise UserError(f"train.nan_policy={t.nan_policy!r}; valid: fail, skip")
    from abcx.logprobs import check_path

    check_path(t.logprob_path)
    if cfg.task.name not in REGISTRY:
        raise UserError(f"task.name={cfg.task.name!r} is unknown; valid: {', '.join(sorted(REGISTRY))}")
    if cfg.logger.mode not in ("offline", "online", "disabled"):
        raise UserError(f"logger.mode={cfg.logger.mode!r}; valid: offline, online, disabled")
    if cfg.launcher.name not in ("local", "slurm"):
        raise UserError(f"launcher.name={cfg.launcher.name!r}; valid: local, slurm")
    accelerate = cfg.launcher.accelerate_config
    if accelerate is not None and not (CONF_DIR / "accelerate" / f"{accelerate}.yaml").is_file():
        valid = ", ".join(sorted(p.stem for p in (CONF_DIR / "accelerate").glob("*.yaml")))
        raise UserError(f"launcher.accelerate_config={accelerate!r} is not in conf/accelerate/; valid: {valid}")
    from abcx import secrets, trl_args

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


def is_off_policy(train: Any) -> bool:
    """Whether TRL will compute old log-probs, i.e. whether r can differ from 1 and clipping can act
    (TRL 1.16: GA not a multiple of steps_per_generation * num_iterations, or vLLM IS correction)."""
    generate_every = train.steps_per_generation * train.num_iterations
    vllm_mismatch = bool(train.use_vllm and train.vllm_importance_sampling_correction)
    return train.gradient_accumulation_steps % generate_every != 0 or vllm_mismatch


def generation_cycle(train: Any) -> int:
    """Optimizer steps per rollout: TRL generates once every steps_per_generation x num_iterations
    micro-batches and keeps that rollout only in memory (not in a checkpoint), so a run resumes onto
    the uninterrupted run's path only from a step that is a multiple of this (abcx.callbacks.SweepControl)."""
    import math

    generate_every = int(train.steps_per_generation or train.gradient_accumulation_steps) * int(train.num_iterations)
    return generate_every // math.gcd(generate_every, int(train.gradient_accumulation_steps))


ON_POLICY_WARNING = (
    "this run is fully on-policy (every generated batch is used for one optimizer step, so r == 1 and "
    "no ratio is ever clipped): GRPO, ABC-GRPO and every other clipping variant are the same algorithm "
    "here. Set train.steps_per_generation > train.gradient_accumulation_steps or train.num_iterations > 1 "
    "to compare clipping rules."
)
