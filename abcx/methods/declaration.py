"""How a method is declared (built in or a plugin): its parameters with defaults and domains (`Param`),
the declaration read from a module's `METADATA` (`Method`, `_method_from`), the domain grammar
(`in_domain`) and the schedule parameters every four-bound method gets. The registry
(abcx.methods) and the plugin loader (abcx.methods.plugins) both build on this."""
from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from abcx.errors import UserError

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
    origin: Any = None  # a plugin's abcx.methods.plugins.Origin (package, version, source hash); None: built in

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
# The keys of a METADATA entry: those that become Method fields, and those kept in Method.extra.
FIELDS = ("reference", "doc", "params", "bounds", "aggregation", "uses_is_ratio", "controller", "check")
EXTRA = ("formula",)  # the loss per token in one line, shown by `abcx methods` and the README table
METADATA_KEYS = FIELDS + EXTRA


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
    known = FIELDS
    return Method(name=name, fn=fn, params=tuple(params), reference=meta.get("reference", ""), doc=doc,
                  bounds=meta.get("bounds"), aggregation=meta.get("aggregation"),
                  uses_is_ratio=bool(meta.get("uses_is_ratio")), controller=meta.get("controller"),
                  check=meta.get("check"), extra={k: v for k, v in meta.items() if k not in known})


