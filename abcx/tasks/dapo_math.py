"""`dapo_math`: the paper's training set, DAPO-Math-17k as processed by open-r1, scored by math-verify.

Hub data: open-r1/DAPO-Math-17k-Processed, configs `all`, `en` (English, ≈14k rows), `cn`; one `train`
split; columns `prompt` (the problem text), `solution` (the gold answer, an integer), `data_source`,
`source_prompt`, `ability`, `reward_model` ({ground_truth, style}), `extra_info`. The unprocessed
original (BytedTsinghua-SIA/DAPO-Math-17k: chat `prompt`, answer in `reward_model.ground_truth`) and
local copies of either (.jsonl/.json/.parquet, a `save_to_disk` folder, a hub snapshot folder with
`en/train-*.parquet`) load too.

Each row becomes a conversational prompt [system, user] and an `answer`. DAPO's own instructions
("… of the form Answer: $Answer …", "Remember to put your answer on its own line after "Answer:"")
are removed where present: they contradict the \\boxed{} system prompt the reward relies on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from abcx.errors import UserError
from abcx.tasks import Task

HUB_ID = "open-r1/DAPO-Math-17k-Processed"
SUBSETS = ("all", "en", "cn")
# The paper's (and open-r1's) system prompt.
SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

_DAPO_HEAD = "Solve the following math problem step by step."
_DAPO_TAIL = '\n\nRemember to put your answer on its own line after "Answer:"'


def strip_dapo_instructions(text: str) -> str:
    """The bare problem from a DAPO-formatted prompt; other text is returned unchanged (stripped)."""
    text = text.strip()
    if text.startswith(_DAPO_HEAD):
        head, sep, body = text.partition("\n\n")
        if sep:
            text = body
    if _DAPO_TAIL in text:
        text = text.split(_DAPO_TAIL, 1)[0]
    return text.strip()


def _problem_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return strip_dapo_instructions(prompt)
    # chat form: the user turns hold the problem
    return strip_dapo_instructions("\n\n".join(m["content"] for m in prompt if m.get("role") == "user"))


def _answer(row: dict[str, Any]) -> str:
    from abcx.tasks.sources import answer_text

    for column in ("solution", "answer"):
        if row.get(column) is not None:
            return answer_text(row[column])
    reward_model = row.get("reward_model") or {}
    if reward_model.get("ground_truth") is not None:
        return answer_text(reward_model["ground_truth"])
    raise UserError(f"task dapo_math: a row has no answer (solution, answer or reward_model.ground_truth): {row!r:.200}")


def conversation(problem: str, system_prompt: str | None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": problem}]


def _load_train(path: str, subset: str | None, split: str) -> Any:
    from abcx.tasks.sources import load_local_dataset

    if Path(path).expanduser().exists():
        return load_local_dataset(path, split=split, subset=subset)
    if path == HUB_ID and subset not in SUBSETS:
        raise UserError(f"task.options.subset={subset!r} is not a config of {HUB_ID}; valid: {', '.join(SUBSETS)}")
    import datasets

    try:
        return datasets.load_dataset(path, subset, split=split)
    except Exception as e:  # offline, renamed, gated
        raise UserError(
            f"task.options.path={path!r} (subset {subset!r}, split {split!r}) could not be loaded from the hub: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; on an offline machine pass a local "
            f"file or folder as task.options.path (or set HF_HUB_OFFLINE=1 once it is in the datasets cache)"
        ) from e


def _rows_to_dataset(rows: list[dict[str, Any]]) -> Any:
    import datasets

    return datasets.Dataset.from_list(rows)


def build(
    path: str = HUB_ID,
    subset: str | None = "en",
    split: str = "train",
    eval_benchmark: str | None = "aime24",
    system_prompt: str | None = SYSTEM_PROMPT,
    max_train_samples: int | None = None,
    eval_split: str | None = None,
    **_: Any,
) -> Task:
    """Train on DAPO-Math (hub or local), evaluate on `eval_benchmark` (a name or path; None: no eval)."""
    from abcx.tasks.sources import load_benchmark
    from abcx.tasks.verify import is_equivalent, math_reward

    if max_train_samples is not None and int(max_train_samples) < 1:
        raise UserError(f"task.max_train_samples={max_train_samples}; need a positive count or null (all)")
    raw = _load_train(str(path), subset, split)
    if max_train_samples is not None:
        raw = raw.select(range(min(int(max_train_samples), len(raw))))
    if "prompt" not in raw.column_names:
        raise UserError(f"task.options.path={path!r}: no 'prompt' column; found {', '.join(raw.column_names)}")
    train = _rows_to_dataset(
        [{"prompt": conversation(_problem_text(r["prompt"]), system_prompt), "answer": _answer(r)} for r in raw]
    )

    evaluation = None
    if eval_benchmark:
        problems = load_benchmark(str(eval_benchmark), split=eval_split)
        evaluation = _rows_to_dataset(
            [{"prompt": conversation(p["problem"], system_prompt), "answer": p["answer"], "id": p["id"]} for p in problems]
        )

    return Task(
        name="dapo_math",
        train=train,
        eval=evaluation,
        reward=math_reward,
        is_correct=is_equivalent,
        check_many=_verify_batch,
        system_prompt=system_prompt,
        info={
            "path": str(path),
            "subset": subset,
            "split": split,
            "eval_benchmark": eval_benchmark,
            "n_train": len(train),
            "n_eval": 0 if evaluation is None else len(evaluation),
        },
    )


def _verify_batch(completions: list[str], answers: list[str]) -> list[bool]:
    from abcx.tasks.verify import verify_many

    return list(verify_many(list(zip(completions, answers))))


def benchmark_task(benchmark: str, split: str | None = None, system_prompt: str | None = SYSTEM_PROMPT) -> Task:
    """A math benchmark (a published name, a hub id or a local file) under this task's contract: the
    paper's system prompt and math-verify, exactly as training rewards it. No training data is loaded."""
    from abcx.tasks.sources import load_benchmark
    from abcx.tasks.verify import is_equivalent, math_reward

    problems = load_benchmark(str(benchmark), split=split)
    evaluation = _rows_to_dataset(
        [{"prompt": conversation(p["problem"], system_prompt), "answer": p["answer"], "id": p["id"]} for p in problems]
    )
    return Task(name="dapo_math", train=None, eval=evaluation, reward=math_reward, is_correct=is_equivalent,
                check_many=_verify_batch, system_prompt=system_prompt,
                info={"eval_benchmark": str(benchmark), "n_eval": len(evaluation)})
