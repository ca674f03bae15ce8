"""Tasks: a verifiable problem set with train/eval splits and a reward function.

Each task module exposes `build(**options) -> Task`, and the generated ones (arith, chain) also
`BENCHMARKS` (the evaluation splits they offer, as `{benchmark name: build options}`) and
`demonstrations(n, **options)` (prompt, completion pairs for the testbed's warm start). The registry
maps names to modules lazily so importing abcx.tasks costs nothing (task modules are pure Python; they
import `datasets` only inside `build`). Tasks never import abcx.evaluation: evaluation reads a task's
contract (its eval split, `is_correct`, `check_many`, `system_prompt`), not the other way round.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from abcx.errors import UserError

REGISTRY: dict[str, str] = {
    "arith": "abcx.tasks.arith",
    "chain": "abcx.tasks.chain",
    "dapo_math": "abcx.tasks.dapo_math",
}


@dataclass
class Task:
    """What the trainer and the evaluator need from a task.

    `train` and `eval` are `datasets.Dataset`s with a `prompt` column (a string, or a list of chat
    messages) and an `answer` column (the gold answer as a string). `reward` follows TRL's reward
    function signature: `reward(prompts, completions, answer, **kwargs) -> list[float]`, 1.0 for a
    correct answer. `is_correct(completion_text, answer) -> bool` is the same check, for evaluation;
    `check_many(completions, answers) -> list[bool]`, when set, does a whole batch at once (math-verify
    in a process pool). A `system_prompt` is already part of the prompts of `train` and `eval`.
    """

    name: str
    train: Any
    eval: Any
    reward: Callable[..., list[float]]
    is_correct: Callable[[str, str], bool]
    system_prompt: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    check_many: Callable[[list[str], list[str]], list[bool]] | None = None

    def check(self, completions: list[str], answers: list[str]) -> list[bool]:
        if self.check_many is not None:
            return list(self.check_many(completions, answers))
        return [bool(self.is_correct(c, a)) for c, a in zip(completions, answers)]


# Characters after which a generated task's answer is over: <eos> (dropped by TRL's decode), a newline or a space.
ANSWER_STOPS = ("<eos>", "\n", " ")


def completion_text(completion: Any, stops: tuple[str, ...] = ANSWER_STOPS) -> str:
    """A completion up to the first stop, leading whitespace dropped; TRL's conversational
    completions (a list of messages) give their last message."""
    if isinstance(completion, list):
        completion = completion[-1]["content"] if completion else ""
    text = str(completion).lstrip()
    for stop in stops:
        cut = text.find(stop)
        if cut >= 0:
            text = text[:cut]
    return text


def task_module(name: str):
    if name not in REGISTRY:
        raise UserError(f"task.name={name!r} is unknown; valid: {', '.join(sorted(REGISTRY))}")
    return importlib.import_module(REGISTRY[name])


def build_task(name: str, **options: Any) -> Task:
    return task_module(name).build(**options)


def task_benchmarks() -> dict[str, tuple[str, dict[str, Any]]]:
    """Every benchmark a task declares: {benchmark name: (task name, build options)}."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for task in REGISTRY:
        for bench, options in getattr(task_module(task), "BENCHMARKS", {}).items():
            out[bench] = (task, dict(options))
    return out


def benchmark_names() -> list[str]:
    return sorted(task_benchmarks())
