"""Composing a run's config: conf/config.yaml plus command-line overrides, through Hydra, then validated.

On top of the schema's types, `compose` refuses `+key=value` for keys outside the schema (Hydra would
accept and silently keep them in a typed node's parent, where nothing reads them), TRL's names where
abcx names the field otherwise, and credentials in overrides; Hydra's exceptions become one-line UserErrors.
"""
from __future__ import annotations

from typing import Any

from abcx.config.schema import CONF_DIR, GROUPS, TrainConf, _fields_of, _in_free_dict, _register, \
    _schema_allows, _schema_class_name, group_options, keys_at
from abcx.config.validate import validate
from abcx.errors import UserError, did_you_mean


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
        if not key:  # `=null` reaches Hydra's defaults list as a group named '' (a ValueError there)
            raise UserError(f"{o.input_line!r} names no field; an override is KEY=VALUE, e.g. train.max_steps=20")
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
                hint = did_you_mean(value, group_options(key), f"{key}=") if isinstance(value, str) else ""
                raise UserError(f"{key}={value} is not a config; {hint + ' ' if hint else ''}"
                                f"valid {key} choices: {', '.join(group_options(key))}")
            continue
        if (o.is_add() or o.is_force_add()) and not _schema_allows(key.split(".")):
            hint = _suggest_key(key.split("."))
            raise UserError(
                f"{o.input_line!r} adds {key!r}, which the config does not have; {hint + ' ' if hint else ''}"
                f"extra trainer options go under train.extra (e.g. +train.extra.{key.split('.')[-1]}=...)"
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
    from abcx.config.trl_args import CONTROLLED

    owner = TRL_NAMES.get(leaf) or CONTROLLED.get(leaf)
    if owner:
        raise UserError(f"{text!r}: {leaf} is TRL's GRPOConfig name; in abcx it is {owner}")


ROOT_CONFIG = "config"  # conf/config.yaml: the defaults list every group starts from
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
            cfg = hydra_compose(config_name=ROOT_CONFIG, overrides=overrides)
        from omegaconf import OmegaConf

        from abcx.secrets import check_config

        check_config(OmegaConf.to_container(cfg, resolve=False))  # `${oc.env:HF_TOKEN}` in a config file
        try:
            OmegaConf.resolve(cfg)  # interpolations fail here, as a config error, not later inside a job
        except OmegaConfBaseException as err:
            raise UserError(_explain_interpolation(cfg, err)) from None
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(_explain_hydra_error(err, overrides)) from None
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


def _explain_hydra_error(err: BaseException, overrides: list[str] = ()) -> str:
    cause = err.__cause__ or err.__context__
    text = _one_line(cause if cause is not None and "full_key" in str(cause) else err)
    if "full_key:" in text:  # a type error inside a typed node: name the field first
        key = text.split("full_key:")[1].split()[0].rstrip(",")
        if key.startswith("method.") and "MethodConf'" in text and "not in" in text:
            return _method_key_error(key, text)
        if "not in" in text and "Key '" in text:
            return _unknown_key(key, overrides)
        return f"{key}: {text.split('full_key:')[0].strip().rstrip('.')}"
    if "Could not override" in text:
        key = text.split("'")[1]
        hint = _suggest_key(key.split("."))
        return (f"{key} is not a config field; {hint + ' ' if hint else ''}extra trainer options go under "
                f"+train.extra.<name>=<value>")
    return text


def _suggest_key(path: list[str]) -> str:
    """`did you mean train.max_steps?` for a key the schema does not have: the closest at its level,
    else the closest field of the same name anywhere (`max_step` -> `train.max_steps`)."""
    from abcx.config.schema import all_keys

    parent = path[:-1]
    hint = did_you_mean(path[-1], keys_at(parent), ".".join(parent) + "." if parent else "")
    if hint:
        return hint
    leaves: dict[str, list[str]] = {}
    for dotted in all_keys():
        leaves.setdefault(dotted.rsplit(".", 1)[-1], []).append(dotted)
    from abcx.errors import closest

    near = [full for leaf in closest(path[-1], leaves) for full in leaves[leaf]]
    return did_you_mean(path[-1], near) if near else ""


def _unknown_key(key: str, overrides: list[str]) -> str:
    """A key the typed config does not have: the closest valid keys at its level (a task's options
    from the chosen task's `build`), else where the valid keys are listed."""
    path = key.split(".")
    if path[:2] == ["task", "options"] and len(path) == 3:
        from abcx.config.domains import task_parameters

        task = _chosen(overrides, "task")
        options = list(task_parameters(task)) if task else []
        hint = did_you_mean(path[2], options, "task.options.")
        return (f"{key} is not an option of task {task!r}; " + (hint if hint else f"its options: {', '.join(options)}")
                if task else f"{key} is not an option of the chosen task")
    where = ".".join(path[:-1]) or "the config"
    hint = _suggest_key(path)
    valid = keys_at(path[:-1])
    listed = f"valid: {', '.join(valid)}" if valid and len(valid) <= 12 else "`abcx config show` lists every field"
    return f"{key} is not a field of {where}; {hint + ' (' + listed + ')' if hint else listed}"


def _chosen(overrides: list[str], group: str) -> str | None:
    """The group's choice: the last `group=...` override, else conf/config.yaml's default."""
    for text in reversed(list(overrides)):
        key, sep, value = text.partition("=")
        if sep and key.lstrip("+~") == group:
            return value
    from abcx.yaml_io import load_yaml

    try:
        defaults = (load_yaml(CONF_DIR / f"{ROOT_CONFIG}.yaml") or {}).get("defaults") or []
    except Exception:  # noqa: BLE001 - only a hint; the error line stands without it
        return None
    return next((d[group] for d in defaults if isinstance(d, dict) and group in d), None)


def _method_key_error(key: str, text: str) -> str:
    """`method.<key>` that the chosen method does not have: the closest of its parameters (from the registry)."""
    from abcx import methods

    schema = text.split("object_type=")[-1].split()[0] if "object_type=" in text else ""
    for name, method in methods.registry().items():
        if _schema_class_name(name) == schema:
            names = [p.name for p in method.params]
            hint = did_you_mean(key.split(".")[-1], names, "method.")
            return (f"{key} does not apply to method {name!r}; {hint + ' ' if hint else ''}its parameters: "
                    f"{', '.join(names) or 'none'}")
    return f"{key} is not a parameter of the chosen method; `abcx methods` lists each method's parameters"
