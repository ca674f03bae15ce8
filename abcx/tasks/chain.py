"""`chain`: chain sums written as partial sums, the embedded testbed's reasoning task.

    prompt      5+95+7+6=
    completion  5+95=100,100+7=107,107+6=113<eos>
    reward      1 if the number after the last `=` is the value of the prompt

Why this shape: it is a miniature of the paper's regime. A completion is a chain of 3-4 steps and
~30 tokens, most of them copied operands and partial sums that right and wrong samples share; the
samples differ in a few digits of one step. One sequence-level advantage then pushes every token of
the chain, the shared correct steps of a failed sample included, which is the mechanism ABC-GRPO's
Q4 bound is about. The problem set is generated without limit: the default makes repeated passes over
a finite pool, as the paper makes 5 epochs over its own (6.25 over 256 problems; conf/task/chain.yaml
says why), a larger `n_train` gives fresh problems, and the eval pool is disjoint from every training
pool by construction.

Pools, by a hash of the prompt text alone (so no seed, size or option can make them overlap):
`eval` (1 in 8), `rl` (3 in 8: what `build` trains on) and `sft` (4 in 8: the warm start's
demonstrations), so RL starts on problems the warm start never saw.
"""
from __future__ import annotations

import hashlib
import random
import re
from typing import Any

from abcx.errors import UserError

VALID_OPS = "+-"
POOLS = ("eval", "rl", "sft")
# Characters after which the completion is over: <eos> (dropped by TRL's decode), a newline or a space.
_STOPS = ("<eos>", "\n", " ")
_STEP = re.compile(r"^(-?\d+)([+-])(\d+)=(-?\d+)$")

# The task's benchmarks for `abcx eval` and eval.benchmarks: the in-distribution split (the default
# operand counts) and a harder one with longer chains than training ever shows, for generalisation.
BENCHMARKS: dict[str, dict[str, Any]] = {
    "chain": {"n_train": 0},
    "chain_hard": {"n_train": 0, "min_operands": 6, "max_operands": 8},
}


def pool_of(prompt: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big") % 8
    return "eval" if bucket == 0 else "rl" if bucket <= 3 else "sft"


def _operand(rng: random.Random, max_digits: int) -> int:
    n = rng.randint(1, max_digits)
    return rng.randint(0 if n == 1 else 10 ** (n - 1), 10**n - 1)


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


def solve(operands: list[int], ops: list[str]) -> tuple[str, list[str], int]:
    """(prompt, steps, value): the prompt text, the partial-sum steps `a+b=c` left to right, the result."""
    prompt = str(operands[0]) + "".join(f"{op}{x}" for op, x in zip(ops, operands[1:])) + "="
    steps, acc = [], operands[0]
    for op, x in zip(ops, operands[1:]):
        new = _apply(acc, op, x)
        steps.append(f"{acc}{op}{x}={new}")
        acc = new
    return prompt, steps, acc


def _problem(rng: random.Random, min_operands: int, max_operands: int, digits: int, ops: str) -> tuple[str, list[str], int]:
    count = rng.randint(min_operands, max_operands)
    return solve([_operand(rng, digits) for _ in range(count)], [rng.choice(ops) for _ in range(count - 1)])


def check_options(min_operands: int, max_operands: int, digits: int, ops: str, n_train: int, n_eval: int) -> None:
    for name, value, low, high in (("min_operands", min_operands, 2, 12), ("max_operands", max_operands, 2, 12),
                                   ("digits", digits, 1, 4)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise UserError(f"task.options.{name}={value!r} is invalid; valid: an integer from {low} to {high}")
    if min_operands > max_operands:
        raise UserError(f"task.options.min_operands={min_operands} exceeds task.options.max_operands={max_operands}")
    if not isinstance(ops, str) or not ops or any(c not in VALID_OPS for c in ops):
        raise UserError(f"task.options.ops={ops!r} is invalid; valid: a non-empty string of {VALID_OPS!r}")
    for name, n in (("n_train", n_train), ("n_eval", n_eval)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise UserError(f"task.options.{name}={n!r} is invalid; valid: an integer >= 0")


def draw(n: int, pool: str, *, min_operands: int = 4, max_operands: int = 5, digits: int = 2, ops: str = "+",
         seed: int = 0) -> list[tuple[str, list[str], int]]:
    """n distinct problems of one pool, deterministic in (pool, seed, shape); each (prompt, steps, value)."""
    rng = random.Random(f"chain-{pool}-{seed}-{min_operands}-{max_operands}-{digits}-{ops}")
    out, seen, tries = [], set(), 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 10_000:
            raise UserError(f"task: cannot draw {n} distinct {pool} problems of {min_operands}-{max_operands} "
                            f"operands with {digits} digits; lower task.options.n_train/n_eval")
        problem = _problem(rng, min_operands, max_operands, digits, ops)
        if problem[0] in seen or pool_of(problem[0]) != pool:
            continue
        seen.add(problem[0])
        out.append(problem)
    return out


def target(steps: list[str], value: int, write_steps: bool = True) -> str:
    """The demonstration completion: the chain of partial sums, or the bare result."""
    return ",".join(steps) if write_steps else str(value)


def completion_text(completion: Any) -> str:
    """The completion up to the first eos/newline/space (TRL's conversational form accepted too)."""
    from abcx.tasks import completion_text as up_to_stop

    return up_to_stop(completion, _STOPS)


def final_answer(completion: Any) -> str:
    """The number after the last `=` (the whole text when there is none)."""
    return completion_text(completion).rsplit("=", 1)[-1].strip()


def well_formed(completion: Any, prompt: str) -> bool:
    """Format check: one `a op b = c` step per operator of the prompt, in order, chained (each step
    starts from the previous step's result). The arithmetic inside a step is not checked."""
    steps = completion_text(completion).split(",")
    operands = re.findall(r"\d+", prompt)
    ops = re.findall(r"(?<=\d)[+-]", prompt)
    if len(steps) != len(ops):
        return False
    previous = operands[0] if operands else None
    for step, op, x in zip(steps, ops, operands[1:]):
        m = _STEP.match(step)
        if not m or m.group(1) != previous or m.group(2) != op or m.group(3) != x:
            return False
        previous = m.group(4)
    return True


def is_correct(completion: Any, answer: str) -> bool:
    return final_answer(completion) == str(answer).strip()


def make_reward(format_check: bool):
    def chain_correct(prompts: list[Any], completions: list[Any], answer: list[str], **kwargs: Any) -> list[float]:
        """TRL reward function: 1.0 for the right final number (and, with the format check, a well-formed chain)."""
        out = []
        for p, c, a in zip(prompts, completions, answer):
            ok = is_correct(c, a) and (not format_check or well_formed(c, p if isinstance(p, str) else p[-1]["content"]))
            out.append(1.0 if ok else 0.0)
        return out

    return chain_correct


def demonstrations(n: int, *, seed: int = 0, write_steps: bool = True, **shape: Any) -> list[tuple[str, str]]:
    """(prompt, completion) pairs from the `sft` pool, for the warm start."""
    return [(p, target(steps, value, write_steps)) for p, steps, value in draw(n, "sft", seed=seed, **shape)]


def build(n_train: int = 256, n_eval: int = 200, min_operands: int = 4, max_operands: int = 5, digits: int = 2,
          ops: str = "+", steps: bool = True, format_check: bool = False, seed: int = 0):
    """The task: `n_train` fresh problems of the `rl` pool to train on, `n_eval` held-out ones.

    `steps` only changes what a demonstration looks like (the warm start's recipe reads it); the reward
    reads the final number either way, so a policy may also answer directly.
    """
    from datasets import Dataset

    from abcx.tasks import Task

    check_options(min_operands, max_operands, digits, ops, n_train, n_eval)
    shape = dict(min_operands=min_operands, max_operands=max_operands, digits=digits, ops=ops, seed=seed)
    # Separate pools and streams: n_train does not change which eval problems are drawn, and vice versa.
    train, evals = draw(n_train, "rl", **shape), draw(n_eval, "eval", **shape)

    def to_dataset(rows):
        return Dataset.from_dict({"prompt": [p for p, _, _ in rows], "answer": [str(v) for _, _, v in rows]})

    return Task(
        name="chain",
        train=to_dataset(train),
        eval=to_dataset(evals),
        reward=make_reward(bool(format_check)),
        is_correct=is_correct,
        system_prompt=None,
        info={**shape, "steps": bool(steps), "format_check": bool(format_check), "n_train": n_train, "n_eval": n_eval},
    )
