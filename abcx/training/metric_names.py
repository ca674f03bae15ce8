"""The names a training run can log to metrics.jsonl, read from the code that logs them, so a sweep's
ranking metric is checked against them before anything starts (abcx.sweep.strategies.base.check_metric).

Three producers write a row: transformers' Trainer (`logs["loss"]`, `grad_norm`, `learning_rate`,
`epoch`), TRL's GRPOTrainer (`self._metrics[mode]["reward"]`, `rewards/<function>/mean`, ...) and
abcx's trainer (its `_metrics`, `eps/eps<i>`, and the clip and correction fractions of
abcx.methods). The first two and abcx's literal keys are read from their source files (ast, without
importing them); a key built from a variable there cannot be read, and an f-string key becomes a
pattern (`rewards/<…>/mean`). The fractions are the keys their producers return. Names logged only
under some settings (TRL's `tools/*`, `kl` with beta > 0) are listed too: the sweep then finds out at
the first rung (strategies.base.require_metric). The record's own keys (`step`, `time`) are no metric.
"""
from __future__ import annotations

import ast
import re
from functools import lru_cache
from importlib.util import find_spec

# TRL's names -> abcx's (docs/architecture.md); every other key is kept as TRL logs it. Here, not in
# abcx.training.callbacks (which applies it), so that checking a sweep's metric imports no transformers.
RENAME = {"completions/mean_length": "completion_length"}
# The modules whose code writes a training row, outermost first.
SOURCES = ("transformers.trainer", "trl.trainer.grpo_trainer", "abcx.training.trainer")
NOT_METRICS = {"step", "time"}


class _Every(dict):
    """A mapping that holds every key (value 1): a producer given it returns every key it can."""

    def __missing__(self, key):
        return 1.0

    def __contains__(self, key) -> bool:
        return True


def _key(node: ast.AST) -> str | re.Pattern | None:
    """A literal key, or an f-string key as a pattern of one path segment per placeholder."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = [re.escape(v.value) if isinstance(v, ast.Constant) else "[^/]+" for v in node.values]
        return re.compile("".join(parts))
    return None


def _logged_keys(tree: ast.AST) -> list[str | re.Pattern]:
    """Keys written into a row: `<x>._metrics[<mode>][KEY]`, `logs[KEY] = ...`, `logs.update({KEY: ...})`."""
    keys = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            inner = node.value
            metrics = isinstance(inner, ast.Subscript) and isinstance(inner.value, ast.Attribute) \
                and inner.value.attr == "_metrics"
            logs = isinstance(inner, ast.Name) and inner.id == "logs" and isinstance(node.ctx, ast.Store)
            if metrics or logs:
                keys.append(_key(node.slice))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "logs" and node.args:
            arg = node.args[0]
            keys += [_key(k) for k in arg.keys if k is not None] if isinstance(arg, ast.Dict) else \
                [_key(arg.key)] if isinstance(arg, ast.DictComp) else []
    return [k for k in keys if k is not None]


@lru_cache(maxsize=1)
def training_metrics() -> tuple[frozenset[str], tuple[re.Pattern, ...]]:
    """(names, patterns) a training row may hold, under the names metrics.jsonl gives them."""
    from abcx.methods.correction import fractions as correction_fractions
    from abcx.methods.stats import quadrant_fractions

    found: list[str | re.Pattern] = [*quadrant_fractions(_Every()), *correction_fractions(_Every())]
    for module in SOURCES:
        spec = find_spec(module)
        if spec is not None and spec.origin:
            with open(spec.origin, encoding="utf-8") as f:
                found += _logged_keys(ast.parse(f.read()))
    names = {RENAME.get(k, k) for k in found if isinstance(k, str)} - NOT_METRICS
    patterns = {k.pattern: k for k in found if isinstance(k, re.Pattern)}
    return frozenset(n for n in names if not n.startswith("eval_")), tuple(patterns.values())


def may_log(name: str) -> bool:
    """Whether a training run can log `name` (a name or an f-string key's pattern matches)."""
    names, patterns = training_metrics()
    return name in names or any(p.fullmatch(name) for p in patterns)


def described() -> list[str]:
    """The names, then each pattern as written (`rewards/<…>/mean`), for an error line."""
    names, patterns = training_metrics()
    shown = [re.sub(r"\[\^/\]\+", "<…>", p.pattern).replace("\\", "") for p in patterns]
    return sorted(names) + sorted(shown)
