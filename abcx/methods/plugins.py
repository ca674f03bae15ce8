"""Methods declared outside abcx (plugins), loaded into the registry after the built-in modules.

A plugin is a module declared exactly as abcx's own method modules are: a function per method and a
`METADATA` dict (see abcx.methods). abcx finds plugins two ways, as pytest finds its plugins:

    an installed package's entry point     [project.entry-points."abcx.methods"]
    (the value names the module)           my_rule = "my_pkg.rules"
    ABCX_PLUGINS=module[,module...]        modules on the Python path, no packaging (like PYTEST_PLUGINS)

They load with the registry, so only when a command needs a method: `abcx --help` imports none. A
plugin that cannot be imported, declares a method name already taken, or whose METADATA is malformed
is skipped whole, with one line on stderr naming it and the problem; every other method keeps working.

Reproducibility: each plugin method carries its Origin (module, package, version, sha256 of its
source). The origin enters the method's part of the config hash (abcx.methods.hash_view), hence the
run id, and meta.json, so an edited rule never reuses an old run folder. Built-in methods have no
origin: their run ids do not change.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

from abcx.methods.declaration import METADATA_KEYS, Method, _method_from, in_domain

GROUP = "abcx.methods"
ENV = "ABCX_PLUGINS"
# A method's name is a Hydra group option, a schema class name and the run id's prefix (`name-s0-hash`).
NAME = re.compile(r"[a-z][a-z0-9_]*")
KEYS = METADATA_KEYS  # a plugin declares what a built-in method may (abcx.methods.declaration)
PARAM_KEYS = ("doc", "domain", "type")


class PluginError(Exception):
    """What is wrong with a plugin, in one line (the caller names the plugin)."""


@dataclass(frozen=True)
class Origin:
    """Where a plugin method came from: recorded in its run id and meta.json."""

    module: str
    via: str  # "entry point <name>" or ABCX_PLUGINS
    package: str | None  # the installed distribution, None for a module that is only on the path
    version: str | None
    source: str  # sha256 of the plugin's source files (source_hash)

    def record(self) -> dict[str, Any]:
        """What identifies the rule's code; how it was found (`via`) changes nothing that is trained."""
        return {"module": self.module, "package": self.package, "version": self.version, "source_sha256": self.source}

    def describe(self) -> str:
        package = f"{self.package} {self.version}" if self.package else "no installed package"
        return f"plugin {self.module} ({package}; via {self.via}), source sha256 {self.source[:12]}"


def load(taken: Mapping[str, Method]) -> dict[str, Method]:
    """The methods of every plugin that loads cleanly and whose names are free (not in `taken`, nor
    declared by an earlier plugin). Each skipped plugin: one line on stderr."""
    found: dict[str, Method] = {}
    seen: set[str] = set()
    for module_name, via, dist in _candidates():
        if module_name in seen:  # both installed and named in ABCX_PLUGINS: one module, loaded once
            continue
        seen.add(module_name)
        try:
            methods = _load_one(module_name, via, dist, {**taken, **found})
        except PluginError as err:
            print(f"warning: plugin {module_name} ({via}) is not loaded: {err}", file=sys.stderr)
            continue
        found.update((m.name, m) for m in methods)
    return found


def _candidates() -> list[tuple[str, str, Any]]:
    """(module, how it was found, its distribution or None): entry points by name, then ABCX_PLUGINS in order."""
    from importlib.metadata import entry_points

    out = []
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        # A value with an attribute (`pkg.mod:obj`) is refused in _load_one by the module it names.
        out.append((ep.value if ep.attr else ep.module, f"entry point {ep.name}", getattr(ep, "dist", None)))
    for name in os.environ.get(ENV, "").split(","):
        if name.strip():
            out.append((name.strip(), ENV, None))
    return out


def _load_one(module_name: str, via: str, dist: Any, taken: Mapping[str, Method]) -> list[Method]:
    if ":" in module_name:
        raise PluginError("its entry point must name a module (my_pkg.rules), not an object in one")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - whatever a plugin's import raises, it is that plugin's fault
        raise PluginError(f"cannot import it: {type(err).__name__}: {_one_line(err)}") from None
    dist = dist or _distribution_of(module)
    origin = Origin(module=module_name, via=via, package=dist.metadata["Name"] if dist else None,
                    version=dist.version if dist else None, source=source_hash(module))
    methods = declared(module, origin)
    for method in methods:
        if method.name in taken:
            owner = taken[method.name].origin
            where = owner.module if owner else f"abcx ({inspect.getmodule(taken[method.name].fn).__name__})"
            raise PluginError(f"it declares method {method.name!r}, which {where} declares already; rename it")
    return methods


def declared(module: ModuleType, origin: Origin | None = None) -> list[Method]:
    """The methods a module's METADATA declares, checked as a plugin's are (PluginError: what is wrong).
    A plugin's own test calls this to check its declaration without installing it."""
    metadata = getattr(module, "METADATA", None)
    if not isinstance(metadata, Mapping) or not metadata:
        raise PluginError("it has no METADATA dict (method name -> {'reference': ..., 'params': {...}}); "
                          "see abcx/methods/__init__.py")
    methods = []
    for name, meta in metadata.items():
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise PluginError(f"method name {name!r} is not valid; valid: lower-case letters, digits and _, "
                              "starting with a letter")
        if not isinstance(meta, Mapping):
            raise PluginError(f"METADATA[{name!r}] is a {type(meta).__name__}, not a dict")
        if not callable(getattr(module, name, None)):
            raise PluginError(f"METADATA declares {name!r} but the module defines no function {name}()")
        _check_keys(name, meta)
        try:
            method = _method_from(module, name, meta)
        except (TypeError, ValueError) as err:
            raise PluginError(_one_line(err)) from None
        _check_method(method, meta)
        methods.append(replace(method, origin=origin))
    return methods


def _check_keys(name: str, meta: Mapping[str, Any]) -> None:
    unknown = sorted(set(meta) - set(KEYS))
    if unknown:
        raise PluginError(f"METADATA[{name!r}] has unknown key {unknown[0]!r}; valid: {', '.join(KEYS)}")
    if not isinstance(meta.get("reference"), str) or not meta["reference"].strip():
        raise PluginError(f"METADATA[{name!r}] needs a 'reference' (the paper or repository the rule comes from)")
    params = meta.get("params", {})
    if not isinstance(params, Mapping) or not all(isinstance(v, Mapping) for v in params.values()):
        raise PluginError(f"METADATA[{name!r}]['params'] must map parameter -> {{'doc': ..., 'domain': ...}}")
    for param, info in params.items():
        bad = sorted(set(info) - set(PARAM_KEYS))
        if bad:
            raise PluginError(f"METADATA[{name!r}]['params'][{param!r}] has unknown key {bad[0]!r}; valid: "
                              f"{', '.join(PARAM_KEYS)}")
    for key in ("bounds", "controller", "check"):
        if meta.get(key) is not None and not callable(meta[key]):
            raise PluginError(f"METADATA[{name!r}][{key!r}] must be a function")


def _check_method(method: Method, meta: Mapping[str, Any]) -> None:
    from abcx.methods.stats import AGGREGATIONS

    signature = inspect.signature(method.fn).parameters.values()
    positional = [p for p in signature if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) != 1:
        raise PluginError(f"{method.name}() must take (inputs, *, <parameters with defaults>), not "
                          f"{len(positional)} positional arguments")
    own = {p.name for p in method.params}
    for param in meta.get("params", {}):
        if param not in own:
            raise PluginError(f"METADATA[{method.name!r}]['params'] names {param!r}, which {method.name}() does "
                              f"not take as a keyword-only parameter")
    for p in method.params:
        if p.name == "name":
            raise PluginError(f"{method.name}() has a parameter 'name', which is the method's own config key")
        try:
            inside = p.default is None or in_domain(p.domain, p.default, p.type)
        except ValueError as err:  # an unparsable domain string
            raise PluginError(f"parameter {p.name} of {method.name}: {err}") from None
        if not inside:
            raise PluginError(f"parameter {p.name} of {method.name}: default {p.default!r} is outside its "
                              f"domain {p.domain}")
    if method.aggregation is not None and method.aggregation not in AGGREGATIONS:
        raise PluginError(f"METADATA[{method.name!r}]['aggregation']={method.aggregation!r}; valid: "
                          f"{', '.join(AGGREGATIONS)}")


def source_hash(module: ModuleType) -> str:
    """sha256 over the plugin's source: every .py file of its top-level package (helpers it imports from
    sibling modules included), or its own file when it is a single module."""
    top = sys.modules.get(module.__name__.partition(".")[0], module)
    roots = [Path(p) for p in getattr(top, "__path__", [])]
    if roots:
        files = [(f.relative_to(root).as_posix(), f) for root in roots for f in root.rglob("*.py")
                 if "__pycache__" not in f.parts]
    elif getattr(module, "__file__", None):
        files = [(Path(module.__file__).name, Path(module.__file__))]
    else:
        raise PluginError("its source files cannot be found, so runs of an edited rule could not be told apart")
    digest = hashlib.sha256()
    for rel, path in sorted(files):
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _distribution_of(module: ModuleType) -> Any:
    """The installed distribution whose files hold this module (named in ABCX_PLUGINS), if any. Only the
    folder the module was imported from is searched: a module imported from a source checkout has no
    version even where another copy of it is installed."""
    from importlib.metadata import distributions

    top = sys.modules.get(module.__name__.partition(".")[0], module)
    if getattr(top, "__path__", None):  # a package: the folder holding its folder(s)
        folders = {Path(p).parent for p in top.__path__}
    elif getattr(top, "__file__", None):
        folders = {Path(top.__file__).parent}
    else:
        return None
    for folder in folders:
        for dist in distributions(path=[str(folder)]):
            if any(f.parts and f.parts[0] in (top.__name__, f"{top.__name__}.py") for f in dist.files or ()):
                return dist
    return None


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."
