"""Tasks: a verifiable problem set with train/eval splits and a reward function.

Each task module exposes `build(**options) -> Task`. The registry maps names to modules lazily so
importing abcx.tasks costs nothing.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from abcx.errors import UserError

REGISTRY: dict[str, str] = {
    "arith": "abcx.tasks.arith",
    "dapo_math": "abcx.tasks.dapo_math",
}


@dataclass
class Task:
    """What the trainer and the evaluator need from a task.

    `train` and `eval` are `datasets.Dataset`s with a `prompt` column (a string, or a list of chat
    messages) and an `answer` column (the gold answer as a string). `reward` follows TRL's reward
    function signature: `reward(prompts, completions, answer, **kwargs) -> list[float]`, 1.0 for a
    correct answer. `is_correct(completion_text, answer) -> bool` is the same check, for evaluation.
    """

    name: str
    train: Any
    eval: Any
    reward: Callable[..., list[float]]
    is_correct: Callable[[str, str], bool]
    system_prompt: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


def build_task(name: str, **options: Any) -> Task:
    if name not in REGISTRY:
        raise UserError(f"task.name={name!r} is unknown; valid: {', '.join(sorted(REGISTRY))}")
    module = importlib.import_module(REGISTRY[name])
    return module.build(**options)
