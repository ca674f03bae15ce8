"""The method registry: every policy loss abcx can train with, each declared once.

A method is a pure function `name(inputs: LossInputs, *, <keyword-only params with defaults>) ->
PolicyTerms` (abcx.methods.terms) in one of MODULES, plus an entry in its module's `METADATA`:

    METADATA = {"name": {"reference": "paper; repository path/to/file.py",
                         "params": {"param": {"doc": "one line", "domain": ">= 0"}},
                         # optional: "bounds": f(**params) -> Bounds   (four-bound methods)
                         #           "aggregation": "luspo"            (a method that fixes TRL's loss_type)
                         #           "uses_is_ratio": True             (the method applies vLLM's IS ratio itself)
                         #           "controller": f(eps, fractions, **params) -> eps   (abc_adaptive)
                         #           "check": f(**params) -> None      (a rule across parameters)
                         }}

From this one place come the config schema (a typed group per method, abcx.config), validation, the
`method=<name>` config group, the README's method table and `abcx methods`. Adding a method is one
function, one METADATA entry and its tests.

Importing this package is cheap (no torch): the registry loads its modules on first use.
"""
from __future__ import annotations

import importlib
import inspect
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from abcx.errors import UserError

MODULES = ("abcx.methods.four_bound", "abcx.methods.trl_losses", "abcx.methods.adaptive", "abcx.methods.papers",
           "abcx.methods.trust_region")

# The five presets that existed before the registry: their config hash is computed over the flat
# method dict they were recorded with (every key below, None where a preset has no such parameter),
# so their run ids stay what they were. New parameters enter their hash only when set off default.
LEGACY_METHODS = ("grpo", "dapo", "dual_clip", "two_sided", "abc_grpo")
LEGACY_KEYS = ("eps1", "eps2", "eps3", "eps4", "eps_low", "eps_high", "clip_ratio_c", "delta",
               "importance_sampling_level")
SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class Param:
    name: str
    type: type
    default: Any
    domain: str  # e.g. ">= 0", "(0, 1)", "[0, 1) or inf", "token|sequence"
    doc: str

    def check(self, field_name: str, value: Any) -> None:
        """One line naming the field and the valid domain when `value` lies outside it."""
        if not in_domain(self.domain, value, self.type):
            raise UserError(f"{field_name}={value!r} is not valid; valid: {self.domain}")


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable[..., Any]
    params: tuple[Param, ...]
    reference: str
    doc: str
    bounds: Callable[..., Any] | None = None
    aggregation: str | None = None
    uses_is_ratio: bool = False
    controller: Callable[..., Any] | None = None
    check: Callable[..., None] | None = None
    extra: dict = field(default_factory=dict)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def own(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The function's own keyword arguments out of a config group (schedule fields left out)."""
        return {p.name: params[p.name] for p in self.params if not self.is_schedule_param(p.name)}

    def is_schedule_param(self, name: str) -> bool:
        return self.bounds is not None and (name == SCHEDULE.name or name.endswith(END))

    def schedule_ends(self, params: Mapping[str, Any]) -> dict[str, float]:
        """param -> end value for every scheduled parameter of a config group."""
        if self.bounds is None:
            return {}
        return {p.name[:-len(END)]: params[p.name] for p in self.params
                if p.name.endswith(END) and params.get(p.name) is not None}

    def level(self, params: Mapping[str, Any]) -> str:
        return params.get("importance_sampling_level", "token") if "importance_sampling_level" in \
            {p.name for p in self.params} else "token"


SCHEDULE = Param("schedule", str, "constant", "|".join(SCHEDULES),
                 "how bound parameters with an <param>_end move over training (from <param> to <param>_end)")
END = "_end"


def _schedule_params(params: list[Param]) -> list[Param]:
    """A four-bound method's schedule: `schedule` plus an optional end value per float parameter."""
    ends = [Param(p.name + END, float, None, p.domain, f"{p.name}'s value at the last step (null: constant)")
            for p in params if p.type is float]
    return [SCHEDULE, *ends]

_NUMBER = r"[-+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|\.\d+(?:e[-+]?\d+)?|inf)"


def in_domain(domain: str, value: Any, kind: type = float) -> bool:
    """Whether `value` lies in a domain string: alternatives joined by ' or ', each a comparison
    (`>= 0`), an interval (`(0, 1]`), a literal number (`inf`), choices (`token|sequence`) or `any`."""
    if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return False
    if kind is int and (not isinstance(value, int)):
        return False
    domain = domain[4:] if domain.startswith("int ") else domain  # "int >= 0": the type is checked above
    if isinstance(value, float) and math.isnan(value):
        return False
    return any(_in_one(part.strip(), value) for part in domain.split(" or "))


def _in_one(part: str, value: Any) -> bool:
    if part == "any" or part.startswith("{"):
        return True
    if "|" in part:
        return value in part.split("|")
    m = re.fullmatch(rf"(>=|>|<=|<)\s*({_NUMBER})", part)
    if m:
        bound = float(m.group(2))
        return {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound}[m.group(1)]
    m = re.fullmatch(rf"([\[(])\s*({_NUMBER})\s*,\s*({_NUMBER})\s*([\])])", part)
    if m:
        lo, hi = float(m.group(2)), float(m.group(3))
        above = value >= lo if m.group(1) == "[" else value > lo
        below = value <= hi if m.group(4) == "]" else value < hi
        return above and below
    if re.fullmatch(_NUMBER, part):
        return value == float(part)
    raise ValueError(f"unparsable domain {part!r}")


def _method_from(module: Any, name: str, meta: Mapping[str, Any]) -> Method:
    fn = getattr(module, name)
    docs = meta.get("params", {})
    params = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        if p.default is inspect.Parameter.empty:
            raise TypeError(f"{module.__name__}.{name}: parameter {p.name} needs a default")
        info = docs.get(p.name, {})
        kind = info.get("type") or (float if isinstance(p.default, int) and not isinstance(p.default, bool)
                                    and p.name.startswith(("eps", "clip", "delta")) else type(p.default))
        params.append(Param(p.name, kind, p.default, info.get("domain", "any"), info.get("doc", "")))
    if meta.get("bounds") is not None:
        params += _schedule_params(params)
    doc = meta.get("doc") or (inspect.getdoc(fn) or "").split("\n")[0]
    known = ("reference", "doc", "params", "bounds", "aggregation", "uses_is_ratio", "controller", "check")
    return Method(name=name, fn=fn, params=tuple(params), reference=meta.get("reference", ""), doc=doc,
                  bounds=meta.get("bounds"), aggregation=meta.get("aggregation"),
                  uses_is_ratio=bool(meta.get("uses_is_ratio")), controller=meta.get("controller"),
                  check=meta.get("check"), extra={k: v for k, v in meta.items() if k not in known})


_REGISTRY: dict[str, Method] | None = None


def registry() -> dict[str, Method]:
    """name -> Method, in declaration order (modules in MODULES order). A module not yet present is skipped."""
    global _REGISTRY
    if _REGISTRY is None:
        found: dict[str, Method] = {}
        for module_name in MODULES:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as err:
                if err.name != module_name:
                    raise
                continue
            for name, meta in getattr(module, "METADATA", {}).items():
                if name in found:
                    raise TypeError(f"method {name!r} is registered twice")
                found[name] = _method_from(module, name, meta)
        _REGISTRY = found
    return _REGISTRY


def names() -> list[str]:
    return list(registry())


def get(name: str) -> Method:
    methods = registry()
    if name not in methods:
        raise UserError(f"method.name={name!r} is unknown; valid: {', '.join(methods)}")
    return methods[name]


def validate(params: Mapping[str, Any]) -> Method:
    """Check a `method` config group (name + parameters) against its registry entry; return the entry."""
    method = get(params["name"])
    known = {p.name for p in method.params}
    for key in params:
        if key != "name" and key not in known:
            raise UserError(f"method.{key} does not apply to method {method.name!r}; its parameters: "
                            f"{', '.join(sorted(known)) or 'none'}")
    for p in method.params:
        if p.name in params and not (p.default is None and params[p.name] is None):
            p.check(f"method.{p.name}", params[p.name])
    own = method.own({**method.defaults(), **params})
    if method.check is not None:
        method.check(**own)
    if method.bounds is not None:
        method.bounds(**own)
        _check_schedule(method, params, own)
    return method


def _check_schedule(method: Method, params: Mapping[str, Any], own: dict[str, Any]) -> None:
    ends = method.schedule_ends(params)
    kind = params.get("schedule", "constant")
    if kind == "constant" and ends:
        raise UserError(f"method.{next(iter(ends))}{END} is set but method.schedule=constant; valid: "
                        "method.schedule=linear or cosine")
    if kind != "constant" and not ends:
        raise UserError(f"method.schedule={kind} needs an end value, e.g. method.{next(iter(own))}{END}=0.4")
    for key, end in ends.items():
        if not (math.isfinite(float(own[key])) and math.isfinite(float(end))):
            raise UserError(f"method.{key}={own[key]} -> {key}{END}={end}: a schedule needs finite ends")
    method.bounds(**{**own, **ends})


def hash_view(group: Mapping[str, Any]) -> dict[str, Any]:
    """The method group as it enters the config hash (see LEGACY_METHODS)."""
    group = dict(group)
    name = group.get("name")
    if name not in LEGACY_METHODS or name not in registry():
        return group
    defaults = get(name).defaults()
    view = {"name": name, **{key: group.get(key) for key in LEGACY_KEYS}}
    for key, value in group.items():
        if key not in view and value != defaults.get(key):
            view[key] = value
    return view
