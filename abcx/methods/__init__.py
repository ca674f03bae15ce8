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
function, one METADATA entry and its tests. A module declared the same way outside abcx is a plugin
(an installed package's `abcx.methods` entry point, or ABCX_PLUGINS=module,...): abcx.methods.plugins.

Importing this package is cheap (no torch): the registry loads its modules on first use.
"""
from __future__ import annotations

import importlib
import math
from typing import Any, Mapping

from abcx.errors import UserError
from abcx.methods.declaration import (  # noqa: F401 - the declaration's names are the registry's API
    END, SCHEDULE, SCHEDULES, Method, Param, _method_from, _schedule_params, in_domain,
)

MODULES = ("abcx.methods.four_bound", "abcx.methods.trl_losses", "abcx.methods.adaptive", "abcx.methods.papers",
           "abcx.methods.trust_region")

# The five presets that existed before the registry: their config hash is computed over the flat
# method dict they were recorded with (every key below, None where a preset has no such parameter),
# so their run ids stay what they were. New parameters enter their hash only when set off default.
LEGACY_METHODS = ("grpo", "dapo", "dual_clip", "two_sided", "abc_grpo")
LEGACY_KEYS = ("eps1", "eps2", "eps3", "eps4", "eps_low", "eps_high", "clip_ratio_c", "delta",
               "importance_sampling_level")
_REGISTRY: dict[str, Method] | None = None


def registry() -> dict[str, Method]:
    """name -> Method, in declaration order (modules in MODULES order, then plugins). A module not yet
    present is skipped."""
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
        _REGISTRY = found  # set first: a plugin may look up a built-in method while it is imported
        from abcx.methods import plugins

        found.update(plugins.load(found))
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
    """The method group as it enters the config hash (see LEGACY_METHODS); a plugin method's with its origin."""
    group = dict(group)
    name = group.get("name")
    origin = registry()[name].origin if name in registry() else None
    if origin is not None:  # a plugin's code is part of what is trained: an edited rule gets new run ids
        return {**group, "plugin": origin.record()}
    if name not in LEGACY_METHODS or name not in registry():
        return group
    defaults = get(name).defaults()
    view = {"name": name, **{key: group.get(key) for key in LEGACY_KEYS}}
    for key, value in group.items():
        if key not in view and value != defaults.get(key):
            view[key] = value
    return view


def provenance(name: str) -> dict[str, Any]:
    """What meta.json records about a run's method: {"plugin": origin} for a plugin method, else nothing."""
    method = registry().get(name)
    return {"plugin": method.origin.record()} if method is not None and method.origin is not None else {}
