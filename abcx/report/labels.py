"""Method, model and seed for runs abcx did not train, and where each label came from.

Three origins, in rising precedence:
1. the source's own config: an abcx config (abcx records; a W&B run whose config holds abcx's `method`);
2. inference from what the source says: TRL's GRPOConfig in a W&B config or beside a
   trainer_state.json (`epsilon`, `epsilon_high`, `delta`, `loss_type`, `importance_sampling_level`),
   verl's `policy_loss.loss_mode`, the model's `_name_or_path` / `config.json`;
3. the user's rules: `--label 'GLOB=method:abc_grpo,model:4b,seed:0'` (repeatable) or `--labels FILE`,
   GLOB matched against the run's path and id; a later rule wins over an earlier one.

`training_args.bin` is a pickle (unpickling runs code), so it is read only with `--trust-pickles`;
otherwise the run's note says it was left alone. A run whose method cannot be told says so.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import os
from typing import Any

from abcx.errors import UserError

LABEL_KEYS = ("method", "model", "seed")
MODEL_COLUMN = "cfg.model.name"  # the column the report's model grouping reads (report/table.py MODEL_FIELDS)
TRL_LOSS_METHODS = ("cispo", "sapo", "vespo", "luspo")  # TRL loss types that are policy losses, not aggregations
# verl `policy_loss.loss_mode` -> abcx method. verl's vanilla loss always applies dual-clip (clip_ratio_c,
# default 3), which bounds Q4: abcx's dual_clip, not grpo.
VERL_LOSS_MODES = {"vanilla": "dual_clip", "gspo": "gspo", "geo_mean": "gmpo", "clip_cov": "clip_cov",
                   "kl_cov": "kl_cov", "cispo": "cispo", "sapo": "sapo", "gpg": "gpg", "dppo_tv": "dppo_tv"}
VERL_LOSS_MODE_KEYS = ("actor_rollout_ref.actor.policy_loss.loss_mode", "actor_rollout_ref.actor.loss_mode")
MODEL_KEYS = ("_name_or_path", "model_name_or_path", "name_or_path", "actor_rollout_ref.model.path", "model_name")


@dataclasses.dataclass(frozen=True)
class LabelRule:
    pattern: str
    values: dict
    origin: str

    def matches(self, run_id: str, path: str) -> bool:
        return any(fnmatch.fnmatchcase(s, self.pattern) for s in (run_id, path, os.path.basename(path)) if s)


def _coerce(key: str, value: Any, origin: str) -> Any:
    if key not in LABEL_KEYS:
        raise UserError(f"{origin}: unknown label {key!r}; valid: {', '.join(LABEL_KEYS)}")
    if key == "seed":
        try:
            return int(value)
        except (TypeError, ValueError):
            raise UserError(f"{origin}: seed={value!r} is not an integer") from None
    if not isinstance(value, (str, int, float)) or str(value).strip() == "":
        raise UserError(f"{origin}: {key}={value!r}; valid: a non-empty name")
    return str(value).strip()


def parse_rule(text: str, origin: str = "--label") -> LabelRule:
    """'GLOB=method:abc_grpo,model:4b,seed:0' -> LabelRule."""
    where = f"{origin} {text!r}"
    pattern, sep, body = text.partition("=")
    if not sep or not pattern.strip() or not body.strip():
        raise UserError(f"{where}: expected GLOB=key:value[,key:value...] with keys {', '.join(LABEL_KEYS)}")
    values = {}
    for part in body.split(","):
        key, colon, value = part.partition(":")
        if not colon:
            raise UserError(f"{where}: {part!r} is not key:value (keys {', '.join(LABEL_KEYS)})")
        values[key.strip()] = _coerce(key.strip(), value.strip(), where)
    return LabelRule(pattern.strip(), values, f"user rule {pattern.strip()!r}")


def load_rules(path: str) -> list[LabelRule]:
    """A --labels YAML file: {GLOB: {method: ..., model: ..., seed: ...}, ...}, applied in file order."""
    from abcx.yaml_io import load_yaml

    if not os.path.lexists(path):
        raise UserError(f"--labels {path}: no such file")
    try:
        data = load_yaml(path)  # a folder or a device (/dev/zero) is one line too
    except UserError as err:
        raise UserError(f"--labels {err}; valid: a YAML file of {{GLOB: {{method: ..., model: ..., seed: ...}}}}") \
            from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UserError(f"--labels {path}: expected a mapping GLOB -> {{method: ..., model: ..., seed: ...}}")
    from abcx.secrets import check_free_text

    check_free_text(f"--labels {path}", data, into="the report")  # labels are printed and written as given
    return [LabelRule(str(glob), {k: _coerce(k, v, f"--labels {path} [{glob}]") for k, v in values.items()},
                      f"user rule {glob!r} ({os.path.basename(path)})") for glob, values in data.items()]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def infer_method(cfg: dict) -> tuple[str | None, str]:
    """(method, the evidence) from a trainer config flattened to dotted keys; (None, why) if it cannot tell."""
    for key in VERL_LOSS_MODE_KEYS:
        mode = cfg.get(key)
        if isinstance(mode, str) and mode:
            method = VERL_LOSS_MODES.get(mode, mode)
            return method, f"verl {key.rsplit('.', 1)[-1]}={mode}"
    loss_type = cfg.get("loss_type")
    if loss_type in TRL_LOSS_METHODS:
        return str(loss_type), f"TRL loss_type={loss_type}"
    if cfg.get("importance_sampling_level") == "sequence":
        return "gspo", "TRL importance_sampling_level=sequence"
    if _num(cfg.get("delta")) is not None:
        return "two_sided", f"TRL delta={cfg['delta']}"
    eps, eps_high = _num(cfg.get("epsilon")), _num(cfg.get("epsilon_high"))
    if eps is None:
        return None, "cannot tell: no TRL GRPOConfig clip fields (epsilon, loss_type, ...) or verl loss_mode"
    if eps_high is not None and eps_high > eps + 1e-12:
        return "dapo", f"TRL epsilon_high={eps_high:g} > epsilon={eps:g} (clip-higher)"
    return "grpo", f"TRL epsilon={eps:g}" + (f", epsilon_high={eps_high:g}" if eps_high is not None else "")


def infer_model(cfg: dict) -> tuple[str | None, str]:
    """(model, evidence): the basename of the model's name or path, `tiny` for abcx's testbed folder."""
    for key in MODEL_KEYS:
        value = cfg.get(key)
        if isinstance(value, str) and value.strip():
            name = value.rstrip("/")
            if os.path.isfile(os.path.join(name, "testbed.json")):
                return "tiny", f"{key} is abcx's testbed model"
            return os.path.basename(name) or name, key
    if isinstance(cfg.get("model_type"), str):
        return cfg["model_type"], "model_type"
    return None, "cannot tell"


def _row_config(row) -> dict:
    return {k[4:]: v for k, v in row.items() if isinstance(k, str) and k.startswith("cfg.") and _present(v)}


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _beside_trainer_state(path: str, trust_pickles: bool) -> tuple[dict, list[str]]:
    """What an HF output folder holds next to trainer_state.json: config.json (the model's, JSON) and
    training_args.bin (a pickle: read only when trusted)."""
    cfg, notes = {}, []
    folder = os.path.dirname(os.path.abspath(path))
    for where in (folder, os.path.dirname(folder)):
        model_cfg = os.path.join(where, "config.json")
        if not cfg.get("model_type") and os.path.isfile(model_cfg):
            try:
                with open(model_cfg, encoding="utf-8") as fh:
                    data = json.load(fh)
                cfg.update({k: v for k, v in data.items() if k in (*MODEL_KEYS, "model_type")})
            except (OSError, ValueError, RecursionError):
                notes.append(f"{model_cfg}: not readable JSON, left out")
        args = os.path.join(where, "training_args.bin")
        if os.path.isfile(args) and "epsilon" not in cfg:
            if not trust_pickles:
                notes.append(f"{args} not read: it is a pickle, and unpickling can run code (--trust-pickles reads it)")
                continue
            cfg.update(_unpickle_args(args))
    return cfg, notes


def _unpickle_args(path: str) -> dict:
    import torch

    try:
        args = torch.load(path, weights_only=False)  # the user asked for it with --trust-pickles
    except Exception as err:  # noqa: BLE001 - a pickle of another library version: say so, keep going
        raise UserError(f"{path}: could not be unpickled ({type(err).__name__}: {err})".splitlines()[0]) from None
    return args.to_dict() if hasattr(args, "to_dict") else dict(getattr(args, "__dict__", {}))


def _foreign_labels(row, trust_pickles: bool) -> tuple[dict, dict, list[str]]:
    """(labels, origin per label, notes) of one run abcx did not train, from its own config."""
    cfg, notes = _row_config(row), []
    if row["source"] == "trainer_state":
        beside, notes = _beside_trainer_state(str(row["path"]), trust_pickles)
        cfg = {**beside, **cfg}
    where = "W&B config" if str(row["source"]).startswith("wandb") else "trainer folder"
    labels, origin = {}, {}
    if str(row.get("method") or ""):  # a W&B run logged with abcx's config
        labels["method"], origin["method"] = str(row["method"]), f"{where} (abcx's method)"
    else:
        method, why = infer_method(cfg)
        if method:
            labels["method"], origin["method"] = method, f"inferred ({why})"
        else:
            notes.append(f"{row['run_id']}: method {why}; give it with --label")
    model, _ = infer_model(cfg)
    if model:
        labels["model"], origin["model"] = model, where
    seed = row.get("seed") if _present(row.get("seed")) else cfg.get("seed")
    if _present(seed):
        labels["seed"], origin["seed"] = seed, where
    return labels, origin, notes


def _describe(origin: dict) -> str:
    """'method: inferred: ...; model: W&B config: _name_or_path' -> one cell, same origin said once."""
    by = {}
    for key in LABEL_KEYS:
        if key in origin:
            by.setdefault(origin[key], []).append(key)
    return "; ".join(f"{'+'.join(keys)}: {src}" for src, keys in by.items())


def apply_labels(rs, rules: list[LabelRule] = (), *, trust_pickles: bool = False):
    """RunSet with `method`, `seed` and the model column set for every run, and `label_source` saying
    where each came from. abcx records keep their config's labels unless a user rule overrides them."""
    runs = rs.runs.copy()
    if MODEL_COLUMN not in runs.columns:
        runs[MODEL_COLUMN] = None
    runs[MODEL_COLUMN] = runs[MODEL_COLUMN].astype(object)
    runs["seed"] = runs["seed"].astype(object)
    sources, notes = [], list(rs.notes)
    for rid, row in runs.iterrows():
        if row["source"] == "abcx":
            labels = {}
            origin = {k: "abcx config" for k in LABEL_KEYS}
        else:
            labels, origin, run_notes = _foreign_labels(row, trust_pickles)
            notes.extend(run_notes)
        for rule in rules:
            if rule.matches(str(rid), str(row.get("path") or "")):
                labels.update(rule.values)
                origin.update({k: rule.origin for k in rule.values})
        for key, value in labels.items():
            runs.at[rid, {"model": MODEL_COLUMN}.get(key, key)] = value
        sources.append(_describe(origin))
    runs["label_source"] = sources
    runs[MODEL_COLUMN] = runs[MODEL_COLUMN].where(runs[MODEL_COLUMN].map(_present), "")  # unknown: no model
    unmatched = [r.pattern for r in rules if not any(r.matches(str(i), str(p or "")) for i, p in
                                                       zip(runs.index, runs["path"]))]
    if unmatched:
        notes.append(f"label rule(s) matched no run: {', '.join(unmatched)}")
    return dataclasses.replace(rs, runs=runs, notes=list(dict.fromkeys(notes)))


def is_mixed(runs) -> bool:
    """Runs from abcx and from elsewhere, or only foreign runs: grouped by (model, method)."""
    return bool((runs["source"] != "abcx").any())
