"""The paper's model and task configs load through the same code as on a connected machine (hub ids),
exercised here on local folders and files shaped like the hub's: a model folder (the testbed's, saved
like a hub snapshot) and a DAPO-Math-17k-shaped JSONL with the math-verify reward."""
from pathlib import Path

from abcx.config.compose import compose
from abcx.tasks.dapo_math import SYSTEM_PROMPT as MATH_SYSTEM_PROMPT
from abcx.training.train import model_path, train

DATA = Path(__file__).parent / "data" / "benchmarks"


def test_paper_model_configs_name_the_hub_models():
    assert compose(["model=qwen3_1.7b_base"]).model.path == "Qwen/Qwen3-1.7B-Base"
    assert compose(["model=qwen3_4b_base"]).model.path == "Qwen/Qwen3-4B-Base"
    assert compose(["task=dapo_math"]).task.options.path == "open-r1/DAPO-Math-17k-Processed"


def test_hub_model_and_dapo_math_configs_train_from_local_copies(tmp_path, tiny_model_path):
    cfg = compose([
        "model=qwen3_1.7b_base", f"model.path={tiny_model_path}", "model.dtype=float32",
        "task=dapo_math", f"task.options.path={DATA / 'dapo_math_17k_processed_en.jsonl'}",
        f"+task.options.eval_benchmark={DATA / 'aime_2024.jsonl'}",
        "train.max_steps=2", "train.per_device_train_batch_size=8", "train.steps_per_generation=2",
        "train.max_completion_length=8", "eval.at_end=false", "logger=none", f"results_dir={tmp_path}",
    ])
    assert model_path(cfg) == str(tiny_model_path)
    record = train(cfg, quiet=True)
    assert record.state() == "finished"
    meta = record.meta()
    assert meta["model_path"] == str(tiny_model_path)
    rows = record.metrics()
    assert [r["step"] for r in rows] == [1, 2]
    assert "rewards/math_reward/mean" in rows[0]  # the math-verify reward ran on the completions
    assert MATH_SYSTEM_PROMPT.startswith("Please reason step by step")


def test_a_math_benchmark_is_evaluated_under_the_math_tasks_contract():
    """The same system prompt and checker as the dapo_math training reward, read from the task."""
    from abcx.evaluation.runner import problems_for

    local = Path(__file__).parent / "data" / "benchmarks" / "aime_2024.jsonl"
    prompts, golds, check = problems_for(str(local), 2)
    assert [m["role"] for m in prompts[0]] == ["system", "user"] and prompts[0][0]["content"] == MATH_SYSTEM_PROMPT
    assert check([f"so the answer is \\boxed{{{golds[0]}}}", "no idea"], golds[:2]) == [True, False]
