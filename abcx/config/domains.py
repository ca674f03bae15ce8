"""The domain of every config field: type, range, choices. `check(cfg)` raises one UserError line
naming the field and what would be valid.

Types alone (the typed schema in abcx.config) let through values that TRL, transformers or torch
refuse only once a run folder exists (`seed=-1`, `train.temperature=0`), accept silently what makes
no sense (`train.top_p=2`, `train.max_grad_norm=nan`), or run until killed (`train.max_steps=10^23`).
Works on an OmegaConf node and on the sweep planner's plain-dict configs alike, and costs
microseconds: it runs for every point of a sweep.
"""
from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import Any

from abcx.errors import UserError, did_you_mean

MAX_COUNT = 10**8  # steps, batch sizes, lengths: beyond this a value is a typo, and would run until killed
MAX_SEED = 2**32 - 1  # numpy's seed range (transformers' set_seed seeds numpy too)
MAX_EPS = 1e6  # a finite bound beyond this is no bound (use inf); float32 overflows near 3.4e38
# Floating-point dtypes a model loads in: `auto`, and torch's names for them (torch.<name> is a dtype).
DTYPES = ("auto", "float32", "float16", "bfloat16", "float64", "float", "half", "double")
SCALE_REWARDS = ("group", "batch", "none")
VLLM_MODES = ("colocate", "server")
LOGGERS = ("wandb", "none")
LOGPROB_PATHS = ("auto", "fused", "chunked", "full")  # where log-probs come from (abcx.training.logprobs)
LOGGER_MODES = ("offline", "online", "disabled")
NAN_POLICIES = ("fail", "skip")


def check_logprob_path(path: str) -> None:
    """Config validation and direct API use (abcx.training.logprobs) share this one error."""
    if path not in LOGPROB_PATHS:
        raise UserError(f"train.logprob_path={path!r}; valid: {', '.join(LOGPROB_PATHS)}")


def number(field: str, value: Any, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False, integer: bool = False, allow: tuple = (), valid: str | None = None) -> None:
    """A finite number (an integer when `integer`) in [lo, hi] (open ends by flag), or one of `allow`."""
    kind = type(value)
    if (kind is int or (kind is float and not integer and math.isfinite(value))) and \
            (lo is None or value > lo or (value == lo and not lo_open)) and \
            (hi is None or value < hi or (value == hi and not hi_open)):
        return  # the common case, decided without building any text
    if any(value is a or (value == a and type(value) is type(a)) for a in allow):
        return
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or (integer and not isinstance(value, int)):
        domain = valid or _domain(lo, hi, lo_open, hi_open, integer, allow)
        raise UserError(f"{field}={value!r} is not {'an integer' if integer else 'a number'}; valid: {domain}")
    bad = not math.isfinite(value) or (lo is not None and (value < lo or (lo_open and value == lo))) or \
        (hi is not None and (value > hi or (hi_open and value == hi)))
    if bad:
        shown = f"{value:g}" if isinstance(value, float) else (str(value) if len(str(value)) < 20 else f"{value:.3g}")
        raise UserError(f"{field}={shown} is out of range; valid: {valid or _domain(lo, hi, lo_open, hi_open, integer, allow)}")


def _domain(lo, hi, lo_open: bool, hi_open: bool, integer: bool, allow: tuple) -> str:
    lo_text = "" if lo is None else f"{_fmt(lo)} {'<' if lo_open else '<='} "
    hi_text = "" if hi is None else f" {'<' if hi_open else '<='} {_fmt(hi)}"
    return f"{lo_text}{'an integer' if integer else 'a number'}{hi_text}" + "".join(f" or {a}" for a in allow)


def _fmt(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def choice(field: str, value: Any, options: tuple | list) -> None:
    if value not in options:
        raise UserError(f"{field}={value!r} is not valid; valid: {', '.join(map(str, options))}")


def count(field: str, value: Any, lo: int = 1, allow: tuple = ()) -> None:
    number(field, value, lo=lo, hi=MAX_COUNT, integer=True, allow=allow)


def check(cfg: Any) -> None:
    number("seed", cfg.seed, lo=0, hi=MAX_SEED, integer=True)
    _text("results_dir", cfg.results_dir)
    for key in ("group", "name"):
        if cfg[key] is not None:
            _text(key, cfg[key])
    for i, tag in enumerate(cfg.tags):
        _text(f"tags[{i}]", tag)
    check_method_magnitudes(cfg.method)
    _model(cfg.model)
    _train(cfg.train)
    _eval(cfg.eval)
    task_options(cfg.task.name, cfg.task.options)
    choice("logger.name", cfg.logger.name, LOGGERS)
    _launcher(cfg.launcher)


def _text(field: str, value: Any, *, max_len: int = 4096) -> None:
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{field}={value!r} must be a non-empty string")
    if len(value) > max_len or "\x00" in value:
        raise UserError(f"{field} is {len(value)} characters long or holds a NUL byte; valid: text up to {max_len}")


def check_method_magnitudes(m: Any) -> None:
    """Bounds are used in float32 tensors: a finite bound past MAX_EPS is refused (inf means no bound)."""
    for key in m:  # every numeric parameter of the method's own group (abcx.methods)
        value = m[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and \
                abs(value) > MAX_EPS:
            raise UserError(f"method.{key}={value:g} is too large to be a bound; valid: up to {MAX_EPS:g}, or inf for "
                            f"no bound")


def _model(m: Any) -> None:
    _text("model.name", m.name)
    if m.path is not None:
        _text("model.path", m.path)
    choice("model.dtype", m.dtype, DTYPES)
    if m.attn_implementation is not None:
        _text("model.attn_implementation", m.attn_implementation)


def _train(t: Any) -> None:
    count("train.max_steps", t.max_steps, allow=(-1,))
    number("train.num_train_epochs", t.num_train_epochs, lo=0, hi=MAX_COUNT, lo_open=True)
    number("train.learning_rate", t.learning_rate, lo=0)
    number("train.warmup_steps", t.warmup_steps, lo=0, hi=MAX_COUNT,
           valid="a number >= 0 (below 1: a fraction of the steps; from 1: a whole number of steps)")
    if t.warmup_steps >= 1 and t.warmup_steps != int(t.warmup_steps):
        raise UserError(f"train.warmup_steps={t.warmup_steps} is neither a fraction below 1 nor a whole number of steps")
    number("train.weight_decay", t.weight_decay, lo=0)
    number("train.max_grad_norm", t.max_grad_norm, lo=0, valid="a finite number >= 0 (0: no clipping)")
    for key in ("per_device_train_batch_size", "num_generations", "gradient_accumulation_steps",
                "steps_per_generation", "num_iterations", "max_completion_length", "logging_steps", "save_steps"):
        count(f"train.{key}", t[key])
    if t.save_total_limit is not None:
        count("train.save_total_limit", t.save_total_limit)
    number("train.temperature", t.temperature, lo=0, lo_open=True, valid="a number > 0 (training samples)")
    number("train.top_p", t.top_p, lo=0, hi=1, lo_open=True)
    count("train.top_k", t.top_k, lo=0)  # 0: no top-k filter
    number("train.beta", t.beta, lo=0)
    choice("train.scale_rewards", t.scale_rewards, SCALE_REWARDS)
    choice("train.vllm_mode", t.vllm_mode, VLLM_MODES)
    number("train.vllm_gpu_memory_utilization", t.vllm_gpu_memory_utilization, lo=0, hi=1, lo_open=True)


def _eval(e: Any) -> None:
    count("eval.every_steps", e.every_steps, lo=0)
    for key in ("n", "max_new_tokens", "batch_size"):
        count(f"eval.{key}", e[key])
    number("eval.temperature", e.temperature, lo=0, valid="a number >= 0 (0: greedy)")
    number("eval.top_p", e.top_p, lo=0, hi=1, lo_open=True)
    count("eval.top_k", e.top_k, lo=0)
    if e.max_problems is not None:
        count("eval.max_problems", e.max_problems, lo=1)
    number("eval.seed", e.seed, lo=0, hi=MAX_SEED, integer=True)
    if not e.benchmarks and e.at_end:
        raise UserError("eval.benchmarks is empty; name at least one, or set eval.at_end=false")
    for i, bench in enumerate(e.benchmarks):
        benchmark(f"eval.benchmarks[{i}]", bench)


def benchmark(field: str, value: Any) -> None:
    """A benchmark name, an existing local file or folder, or a hub dataset id `owner/name`."""
    from abcx.tasks.benchmarks import valid_names

    if not isinstance(value, str) or not value:
        raise UserError(f"{field}={value!r} is not a benchmark name")
    names = _names(valid_names)
    if value in names or os.path.exists(os.path.expanduser(value)):
        return
    parts = value.split("/")
    if len(parts) == 2 and all(parts) and not value.startswith((".", "~")) and "\\" not in value:
        return  # a hub dataset id, loaded on a connected machine
    hint = did_you_mean(value, names)
    raise UserError(f"{field}={value!r} is not a benchmark; {hint + ' ' if hint else ''}valid: {', '.join(names)}, "
                    f"a local file or folder, or a hub dataset id owner/name")


_NAMES: list[str] | None = None


def _names(valid_names) -> list[str]:
    global _NAMES
    if _NAMES is None:
        _NAMES = list(valid_names())
    return _NAMES


@lru_cache(maxsize=None)
def task_parameters(name: str) -> dict[str, Any]:
    """{option: default} of a task's `build`, read from its signature (a **kwargs catch-all is not an
    option: it would accept any misspelling)."""
    import importlib
    import inspect

    from abcx.tasks import REGISTRY

    if name not in REGISTRY:
        raise UserError(f"task.name={name!r} is unknown; valid: {', '.join(sorted(REGISTRY))}")
    params = inspect.signature(importlib.import_module(REGISTRY[name]).build).parameters.values()
    return {p.name: p.default for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def task_options(name: str, options: Any) -> None:
    """Options named in the task's `build` signature, of its defaults' types; then the task's own
    `check_options` (when it has one), so that values it refuses are refused before any work too."""
    params = task_parameters(name)
    options = dict(options or {})
    for key, value in options.items():
        if key not in params:
            hint = did_you_mean(key, params, "task.options.")
            raise UserError(f"task.options.{key} is not an option of task {name!r}; {hint + ' ' if hint else ''}"
                            f"its options: {', '.join(params) or 'none'}")
        default = params[key]
        if default is not None and not _same_kind(value, default):
            raise UserError(f"task.options.{key}={value!r} is a {type(value).__name__}; task {name!r} takes a "
                            f"{type(default).__name__} (default {default!r})")
    checker = _task_checker(name)
    if checker is not None:
        import inspect

        function, wanted = checker
        values = {k: v for k, v in params.items() if v is not inspect.Parameter.empty}
        values.update(options)
        function(**{k: v for k, v in values.items() if k in wanted})


@lru_cache(maxsize=None)
def _task_checker(name: str):
    """(the task module's `check_options`, its parameter names), or None when it has none."""
    import importlib
    import inspect

    from abcx.tasks import REGISTRY

    function = getattr(importlib.import_module(REGISTRY[name]), "check_options", None)
    return (function, frozenset(inspect.signature(function).parameters)) if function else None


def _same_kind(value: Any, default: Any) -> bool:
    import inspect

    if default is inspect.Parameter.empty:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def _launcher(la: Any) -> None:
    if la.max_parallel is not None:
        count("launcher.max_parallel", la.max_parallel)
    if la.array_parallelism is not None:
        count("launcher.array_parallelism", la.array_parallelism)
    count("launcher.timeout_min", la.timeout_min)
    count("launcher.gpus_per_job", la.gpus_per_job, lo=0)
    count("launcher.num_processes", la.num_processes)
    if la.profile is not None:
        _text("launcher.profile", la.profile, max_len=200)
    stall_timeout(la.stall_timeout_s)
    count("launcher.stall_retries", la.stall_retries, lo=0)


STALL_OFF = "off"
MAX_STALL_S = 7 * 86400  # a week without a step is no timeout at all: a typo


def stall_timeout(value: Any) -> float | None:
    """launcher.stall_timeout_s in seconds, None for `off` (YAML 1.1 reads a bare off as false: the same)."""
    if value is False or (isinstance(value, str) and value.strip().lower() == STALL_OFF):
        return None
    number("launcher.stall_timeout_s", value, lo=0, lo_open=True, hi=MAX_STALL_S,
           valid=f"a positive number of seconds (at most {MAX_STALL_S}) or {STALL_OFF}")
    return float(value)
