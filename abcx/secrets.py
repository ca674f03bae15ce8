"""Credentials never enter a config: they live in the environment or in the tools' own login.

Everything abcx writes (config.yaml, meta.json, manifests, queue files, job pickles, the pickled
GRPOConfig in every checkpoint, the W&B run) is derived from the config, so the one place to stop a
credential is the config itself. Three shapes are refused, each with a line saying where the
credential belongs instead, and without echoing the value (the error line itself reaches logs):

- a field whose name is a credential (`hub_token`, `api_key`, ...), matched exactly, never by
  substring (`eval.max_new_tokens` is not a credential);
- `${oc.env:NAME}` where NAME is secret-named (WANDB_API_KEY, HF_TOKEN, *_TOKEN, *_KEY, *SECRET*,
  *PASSWORD*): the resolved config would carry the value;
- a value shaped like a well-known token (hf_..., sk-..., ghp_/gho_/github_pat_..., a 40-hex W&B
  key), or one holding the value of a secret-named environment variable.

`scrub` stays as a second line of defence for dictionaries that do not come from a config.
"""
from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from typing import Any, Iterator

from abcx.errors import UserError

# Exact (case-insensitive) names of fields that hold a credential, in abcx, TRL/transformers and the
# libraries a train.extra or task option could reach.
CREDENTIAL_FIELDS = frozenset({
    "token", "hub_token", "hf_token", "push_to_hub_token", "use_auth_token", "auth_token", "access_token",
    "api_key", "apikey", "wandb_api_key", "openai_api_key", "secret", "secret_key", "client_secret",
    "password", "passwd", "private_key", "credentials",
})

WHERE_HF = "Hugging Face credentials belong in the environment (HF_TOKEN) or `huggingface-cli login`"
WHERE_WANDB = "W&B credentials belong in the environment (WANDB_API_KEY) or `wandb login`"
WHERE_ANY = ("credentials belong in the environment (e.g. HF_TOKEN, WANDB_API_KEY) or the tools' own login "
             "(`huggingface-cli login`, `wandb login`)")

# (what it looks like, pattern searched inside any string value, where it belongs)
TOKEN_SHAPES = (
    ("a Hugging Face token", re.compile(r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{20,}"), WHERE_HF),
    ("an API key (sk-...)", re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{20,}"), WHERE_ANY),
    ("a GitHub token", re.compile(r"(?<![A-Za-z0-9])(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"),
     "GitHub tokens belong in the environment or git's credential helper"),
)
# A W&B key is 40 (or more) hex digits, optionally after an on-prem prefix (`local-...`). Only a whole
# value counts: hex runs inside paths are commit hashes (a hub snapshot folder), not keys.
WANDB_KEY = re.compile(r"(?:[a-z]+-)?[0-9a-f]{40,}")
# Fields that legitimately hold a 40-hex git commit (a hub revision).
COMMIT_FIELDS = ("revision", "commit", "sha")

SECRET_ENV = re.compile(r"(^|_)(TOKEN|KEY|APIKEY)$|TOKEN_|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
_ENV_REF = re.compile(r"\$\{\s*(?:oc\.env|env)\s*:\s*([^,}\s]+)")
# Environment values worth looking for in a config: token-like (16+ characters, no path separators or
# spaces). Shorter or path-like values of a *_KEY variable (SSL_KEY=/etc/ssl/x.pem) would refuse
# innocent configs that mention the same path.
_SECRET_VALUE = re.compile(r"[A-Za-z0-9_\-.:+=]{16,}")


# A quick, conservative pre-check over a config as JSON (substring tests run at C speed, regexes with
# look-behinds do not): False means no walk is needed. Each test is implied by a refusal below.
_QUOTED_FIELDS = tuple(f'"{name}": ' for name in sorted(CREDENTIAL_FIELDS))  # a key, as json.dumps writes it
_PREFIXES = ("hf_", "sk-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "${")
_WHOLE_HEX = re.compile(r'"(?:[a-z]+-)?[0-9a-f]{40,}"')


def _suspicious(blob: str, secrets: dict[str, str]) -> bool:
    low = blob.lower()
    return any(p in blob for p in _PREFIXES) or any(q in low for q in _QUOTED_FIELDS) or \
        bool(_WHOLE_HEX.search(blob)) or any(v in blob for v in secrets)


def is_credential_field(name: Any) -> bool:
    return str(name).lower() in CREDENTIAL_FIELDS


@lru_cache(maxsize=4096)
def is_secret_env(name: str) -> bool:
    return name in ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN") or bool(SECRET_ENV.search(name))


def scrub(data: Any) -> Any:
    """Drop every key that is exactly a credential field name, at any depth."""
    if isinstance(data, dict):
        return {k: scrub(v) for k, v in data.items() if not is_credential_field(k) or v in (None, "", False)}
    if isinstance(data, list):
        return [scrub(v) for v in data]
    return data


def _where_for_field(name: str) -> str:
    low = name.lower()
    if "wandb" in low:
        return WHERE_WANDB
    if "hub" in low or "hf" in low or low in ("token", "use_auth_token", "auth_token", "access_token"):
        return WHERE_HF
    return WHERE_ANY


def refuse_field(path: str) -> UserError:
    leaf = path.rsplit(".", 1)[-1]
    return UserError(f"{path} holds a credential, and credentials never go into a config (it is saved with every "
                     f"run); {_where_for_field(leaf)}")


def shape_of(value: str, *, field: str = "") -> tuple[str, str] | None:
    """(what the value looks like, where it belongs) when it is shaped like a credential, else None."""
    for what, pattern, where in TOKEN_SHAPES:
        if pattern.search(value):
            return what, where
    leaf = field.rsplit(".", 1)[-1].lower()
    if WANDB_KEY.fullmatch(value.strip()) and not any(c in leaf for c in COMMIT_FIELDS):
        return "a W&B API key", WHERE_WANDB
    return None


def redact(text: str) -> str:
    """`text` with every token-shaped part, and every secret-named variable's value, replaced: for
    messages that quote user input."""
    for value in env_secrets():
        text = text.replace(value, "<redacted>")
    for _what, pattern, _where in TOKEN_SHAPES:
        text = pattern.sub("<redacted>", text)
    return re.sub(r"(?<![0-9a-f])[0-9a-f]{40,}(?![0-9a-f])", "<redacted>", text)


def env_secrets(environ: Any = None) -> dict[str, str]:
    """{value: variable} of the secret-named environment variables worth looking for."""
    global _ENV_CACHE
    if environ is not None:
        return {v: k for k, v in environ.items() if is_secret_env(k) and _SECRET_VALUE.fullmatch(v)}
    # Asked for every sweep point: reuse the last answer while the environment has as many variables and
    # the secret-named ones are unchanged (reading 40 variables costs more than validating a point).
    size, named, found = _ENV_CACHE
    if size != len(os.environ) or any(os.environ.get(k) != v for k, v in named.items()):
        named = {k: v for k, v in os.environ.items() if is_secret_env(k)}
        found = {v: k for k, v in named.items() if _SECRET_VALUE.fullmatch(v)}
        _ENV_CACHE = (len(os.environ), named, found)
    return dict(found)


_ENV_CACHE: tuple[int, dict[str, str], dict[str, str]] = (-1, {}, {})


CONFIG = "a config"


def check_text(field: str, text: str, secrets: dict[str, str] | None = None, *, into: str = CONFIG) -> None:
    """Refuse a config string (or an override's value) that carries a credential or interpolates one.
    `into` says where the text would be written, for free text that is no config value (a sweep's
    description, a stop reason, a label): `check_free_text`. The field's name is shown redacted (a
    key may hold the token)."""
    for name in _ENV_REF.findall(text):
        if is_secret_env(name):
            saved = "the resolved config is saved with every run" if into == CONFIG else f"it is written to {into}"
            raise UserError(f"{redact(field)} interpolates the environment variable {name}, which holds a "
                            f"credential; {saved}, so it is refused: {_where_for_env(name)}")
    found = shape_of(text, field=field)
    if found:
        raise UserError(f"{redact(field)} looks like {found[0]} (value not shown); credentials never go into "
                        f"{into}: {found[1]}")
    for value, name in (secrets if secrets is not None else env_secrets()).items():
        if value in text:
            raise UserError(f"{redact(field)} contains the value of the environment variable {name} (a "
                            f"credential); leave it in the environment, where the tools read it")


def check_free_text(field: str, value: Any, *, into: str) -> None:
    """Free text that abcx writes outside a config (a sweep's name and description, a stop reason, a
    report's labels and filters, a name that becomes a folder): the same refusals as a config value,
    strings at any depth of a list or mapping included, before anything is written. `into` names what
    it would be written to ("the sweep's manifest")."""
    if isinstance(value, str):
        check_text(field, value, into=into)
    elif isinstance(value, (dict, list, tuple)):
        check_config(value, prefix=field, into=into)


def _where_for_env(name: str) -> str:
    if name.startswith("WANDB"):
        return WHERE_WANDB
    if name.startswith(("HF_", "HUGGING")):
        return WHERE_HF
    return f"leave {name} in the environment and let the tool read it there"


def check_config(data: Any, *, prefix: str = "", into: str = CONFIG) -> None:
    """Walk a resolved config (dicts, lists, scalars) and refuse the first credential in it. It runs
    for every point of a sweep: one search over the config as JSON decides whether a walk is needed.
    `prefix` names where the data came from (a file), `into` where it would be written."""
    secrets = env_secrets()
    try:
        blob = json.dumps(data, default=str)
    except (TypeError, ValueError, RecursionError):
        blob = None
    if blob is not None and not _suspicious(blob, secrets):
        return
    for path, key, value in _leaves(data, ""):
        path = f"{prefix}: {path}" if prefix else path
        if key is not None and is_credential_field(key) and value not in (None, "", False, {}):
            raise refuse_field(redact(path)) if into == CONFIG else UserError(
                f"{redact(path)} holds a credential, and credentials never go into {into}; "
                f"{_where_for_field(str(key))}")
        if key is not None:
            check_text(f"{path} (key)", str(key), secrets, into=into)
        if isinstance(value, str):
            check_text(path, value, secrets, into=into)


def _leaves(data: Any, prefix: str) -> Iterator[tuple[str, Any, Any]]:
    if isinstance(data, dict):
        for k, v in data.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            yield path, k, v
            if isinstance(v, (dict, list)):
                yield from _leaves(v, path)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            path = f"{prefix}[{i}]"
            yield path, None, v
            if isinstance(v, (dict, list)):
                yield from _leaves(v, path)


# W&B records the command line (sys.argv) and the program in its run metadata, and can save the code
# and the git state (a remote URL may embed a token). `x_disable_meta` (env WANDB__DISABLE_META) is
# what stops the argv record: checked on a real offline run of wandb 0.31, whose `environment` record
# (`wandb leet inspect --json`) holds "args" without it and is absent with it.
WANDB_PRIVACY_ENV = {
    "WANDB__DISABLE_META": "true",
    "WANDB_DISABLE_CODE": "true",
    "WANDB_SAVE_CODE": "false",
    "WANDB_DISABLE_GIT": "true",
    "WANDB_DISABLE_JOB_CREATION": "true",
}
