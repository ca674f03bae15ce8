"""The experiment config's typed schema: dataclasses registered with Hydra's ConfigStore, one group
per axis under conf/ (method, model, task, train, eval, logger, launcher, experiment). The method
group's schema is generated from the method registry (abcx.methods), so a method is declared once.

Typed nodes make Hydra reject a wrong type or an unknown key (abcx.config.compose turns that into one line).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from abcx.methods.correction import CorrectionConf


CONF_DIR = Path(os.environ.get("ABCX_CONF_DIR", Path(__file__).resolve().parent.parent.parent / "conf"))

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
    logprob_path: str = "auto"  # auto | fused | chunked | full: where log-probs come from (abcx.training.logprobs)
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
    # No new optimizer step for this long (s; `off`): the run is killed, recorded failed and retried
    # (abcx.training.watchdog). At least 5 median steps of the run; 30 min allows a slow rollout or save.
    stall_timeout_s: Any = 1800
    stall_retries: int = 2  # stalled attempts retried (SLURM requeue, the sweep supervisor) before it stays failed


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


def _fields_of(cls):
    import dataclasses

    return dataclasses.fields(cls)


def _in_free_dict(path: list[str]) -> bool:
    """Whether a dotted key lies strictly inside one of the schema's free-form dicts (train.extra, task.options)."""
    free = _walk_schema(path)[1]
    return free is not None and free < len(path) - 1



def keys_at(path: list[str]) -> list[str]:
    """The keys the schema has under a dotted path (the top level: its fields and groups); [] where the
    path is not a typed node (a free-form dict, a method's own parameters)."""
    import typing

    node: Any = AbcxConf
    for part in path:
        node = typing.get_type_hints(node).get(part) if is_dataclass(node) else None
    if not is_dataclass(node):
        return []
    names = [f.name for f in _fields_of(node)]
    return names + [g for g in GROUPS if g not in names] if not path else names


def all_keys() -> list[str]:
    """Every dotted key of the typed schema (groups' fields included), for suggestions."""
    out: list[str] = []

    def walk(path: list[str]) -> None:
        for name in keys_at(path):
            out.append(".".join([*path, name]))
            walk([*path, name])

    walk([])
    return out
