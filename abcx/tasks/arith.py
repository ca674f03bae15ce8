"""`arith`: integer arithmetic the embedded tiny model can partly learn ("47+385=" → "432").

Splits are disjoint by construction, whatever the sizes or seed: every problem belongs to the eval
pool or the train pool by a hash of its text alone, so the warm start (trained on a large train split)
never saw any problem that any eval split can contain. The seed only picks which problems are drawn.

Operand lengths are drawn uniformly from 1..`digits` per operand, so the set mixes easy and hard
problems: the tiny model solves some always, some never and many sometimes — the spread that gives
GRPO non-zero-variance groups and keeps Pass@k below 1.
"""
from __future__ import annotations

import hashlib
import random
from typing import Any

from abcx.errors import UserError

# 1 problem in EVAL_POOL_MOD belongs to the eval pool.
EVAL_POOL_MOD = 8
VALID_OPS = "+-*"
# Characters after which an answer is over: the model ends with <eos> (dropped by TRL's decode), a
# newline or a space.
_STOPS = ("<eos>", "\n", " ")
# The task's benchmark for `abcx eval`: its held-out split at the default shape.
BENCHMARKS: dict[str, dict[str, Any]] = {"arith": {"n_train": 0}}


def in_eval_pool(prompt: str) -> bool:
    digest = hashlib.sha256(prompt.encode()).digest()
    return int.from_bytes(digest[:4], "big") % EVAL_POOL_MOD == 0


def _operand(rng: random.Random, max_digits: int) -> int:
    n = rng.randint(1, max_digits)
    low = 0 if n == 1 else 10 ** (n - 1)
    return rng.randint(low, 10**n - 1)


def _problem(rng: random.Random, ops: str, digits: int, mul_digits: int, negatives: bool) -> tuple[str, str]:
    op = rng.choice(ops)
    width = mul_digits if op == "*" else digits
    a, b = _operand(rng, width), _operand(rng, width)
    if op == "-" and not negatives and a < b:
        # A sign decision on top of borrowing is out of reach for the tiny model within the warm start.
        a, b = b, a
    value = a + b if op == "+" else a - b if op == "-" else a * b
    return f"{a}{op}{b}=", str(value)


def _draw(rng: random.Random, n: int, want_eval: bool, exclude: set[str], **shape: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    seen = set(exclude)
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 10_000:
            raise UserError(
                f"task: cannot draw {n} distinct {'eval' if want_eval else 'train'} problems with "
                f"digits={shape['digits']}, ops={shape['ops']!r}; lower n_train/n_eval or raise digits"
            )
        prompt, answer = _problem(rng, **shape)
        if prompt in seen or in_eval_pool(prompt) != want_eval:
            continue
        seen.add(prompt)
        out.append((prompt, answer))
    return out


def problems(n_train: int = 2000, n_eval: int = 200, digits: int = 2, ops: str = "+-", mul_digits: int = 1,
             seed: int = 0, negatives: bool = False) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, eval) as lists of (prompt, answer); pure Python, no datasets import."""
    if not isinstance(digits, int) or not 1 <= digits <= 6:
        raise UserError(f"task.digits={digits!r} is invalid; valid: an integer from 1 to 6")
    if not isinstance(mul_digits, int) or not 1 <= mul_digits <= 6:
        raise UserError(f"task.mul_digits={mul_digits!r} is invalid; valid: an integer from 1 to 6")
    if not ops or any(c not in VALID_OPS for c in ops):
        raise UserError(f"task.ops={ops!r} is invalid; valid: a non-empty string of {VALID_OPS!r}")
    for name, n in (("n_train", n_train), ("n_eval", n_eval)):
        if not isinstance(n, int) or n < 0:
            raise UserError(f"task.{name}={n!r} is invalid; valid: an integer >= 0")
    shape = dict(ops=ops, digits=digits, mul_digits=mul_digits, negatives=bool(negatives))
    # Separate streams so n_train does not change which eval problems are drawn, and vice versa.
    eval_rows = _draw(random.Random(f"arith-eval-{seed}"), n_eval, True, set(), **shape)
    train_rows = _draw(random.Random(f"arith-train-{seed}"), n_train, False, set(), **shape)
    return train_rows, eval_rows


def answer_of(completion: Any) -> str:
    """The model's answer: the completion up to the first eos/newline/space, leading whitespace dropped.

    Accepts TRL's conversational completions (a list of messages) as well as plain strings.
    """
    from abcx.tasks import completion_text

    return completion_text(completion, _STOPS)


def is_correct(completion: Any, answer: str) -> bool:
    return answer_of(completion) == str(answer).strip()


def arith_correct(prompts: list[Any], completions: list[Any], answer: list[str], **kwargs: Any) -> list[float]:
    """TRL reward function: 1.0 for an exactly right answer, else 0.0."""
    return [1.0 if is_correct(c, a) else 0.0 for c, a in zip(completions, answer)]


def demonstrations(n: int, *, seed: int = 0, **shape: Any) -> list[tuple[str, str]]:
    """(prompt, answer) pairs from the train pool, for a warm start on arith."""
    return problems(n_train=n, n_eval=0, seed=seed, **shape)[0]


def build(n_train: int = 2000, n_eval: int = 200, digits: int = 2, ops: str = "+-", mul_digits: int = 1,
          seed: int = 0, negatives: bool = False):
    from datasets import Dataset

    from abcx.tasks import Task

    train_rows, eval_rows = problems(n_train, n_eval, digits, ops, mul_digits, seed, negatives)

    def to_dataset(rows: list[tuple[str, str]]):
        return Dataset.from_dict({"prompt": [p for p, _ in rows], "answer": [a for _, a in rows]})

    return Task(
        name="arith",
        train=to_dataset(train_rows),
        eval=to_dataset(eval_rows),
        reward=arith_correct,
        is_correct=is_correct,
        system_prompt=None,
        info={"digits": digits, "ops": ops, "mul_digits": mul_digits, "negatives": bool(negatives), "seed": seed,
              "n_train": n_train, "n_eval": n_eval},
    )
