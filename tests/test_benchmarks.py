"""Benchmark loading (abcx.tasks.benchmarks) and the dapo_math task, on local files shaped like
the hub datasets (tests/data/benchmarks/, one file per hub dataset, with its real column names)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from abcx.errors import UserError
from abcx.tasks.benchmarks import BENCHMARKS, load_benchmark, load_local_dataset, valid_names
from abcx.tasks import build_task
from abcx.tasks.dapo_math import SYSTEM_PROMPT, strip_dapo_instructions
from abcx.tasks.verify import is_equivalent, math_reward

DATA = Path(__file__).parent / "data" / "benchmarks"
REPO = Path(__file__).resolve().parents[1]

# benchmark name -> (fixture shaped like its hub dataset, expected first row)
FIXTURES = {
    "aime24": ("aime_2024.jsonl", {"problem": "Find the number of positive divisors of $2024$.", "answer": "016", "id": "60"}),
    "aime25": ("aime_2025.jsonl", {"problem": "Find the sum of all positive integers $n<10$ that are prime.", "answer": "17", "id": "1"}),
    "amc23": ("amc23.jsonl", {"problem": "What is $3^3$?", "answer": "27", "id": "0"}),
    "math500": ("math500.jsonl", {"problem": r"Simplify $\frac{6}{8}$.", "answer": r"\frac{3}{4}", "id": "test/prealgebra/1.json"}),
    "hmmt25": ("hmmt_feb_2025.jsonl", {"problem": "An equilateral triangle has side $4$. Find its height.", "answer": r"2\sqrt{3}", "id": "1"}),
}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_parquet(rows: list[dict], path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


# ---------------------------------------------------------------- benchmarks


def test_every_known_benchmark_has_a_fixture_with_its_hub_columns():
    assert set(FIXTURES) == set(BENCHMARKS)
    for name, (fixture, _) in FIXTURES.items():
        spec = BENCHMARKS[name]
        columns = set(read_jsonl(DATA / fixture)[0])
        assert {spec.problem, spec.answer, spec.id} <= columns, name


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_a_local_copy_of_each_hub_benchmark_loads_as_problem_answer_id_rows(name):
    fixture, first = FIXTURES[name]
    rows = load_benchmark(str(DATA / fixture))
    assert rows[0] == first
    assert len(rows) == len(read_jsonl(DATA / fixture))
    assert all(isinstance(v, str) for row in rows for v in row.values())


def test_numeric_gold_answers_become_plain_strings():
    assert [r["answer"] for r in load_benchmark(str(DATA / "amc23.jsonl"))] == ["27", "0.75"]
    assert [r["answer"] for r in load_benchmark(str(DATA / "aime_2025.jsonl"))] == ["17", "32"]


def test_fixture_gold_answers_are_checkable_by_the_verifier():
    boxed = {r"2\sqrt{3}": r"\boxed{\sqrt{12}}", r"\frac{3}{4}": r"\boxed{0.75}", "016": r"\boxed{16}", "27": r"\boxed{27}"}
    for fixture in ("hmmt_feb_2025.jsonl", "math500.jsonl", "aime_2024.jsonl", "amc23.jsonl"):
        gold = load_benchmark(str(DATA / fixture))[0]["answer"]
        assert is_equivalent(boxed[gold], gold)


def test_parquet_and_json_files_load_like_jsonl(tmp_path):
    rows = read_jsonl(DATA / "math500.jsonl")
    parquet = write_parquet(rows, tmp_path / "math500.parquet")
    as_json = tmp_path / "math500.json"
    as_json.write_text(json.dumps(rows))
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": rows}))
    expected = load_benchmark(str(DATA / "math500.jsonl"))
    assert load_benchmark(str(parquet)) == load_benchmark(str(as_json)) == load_benchmark(str(wrapped)) == expected


def test_a_hub_snapshot_folder_loads_the_requested_split(tmp_path):
    rows = read_jsonl(DATA / "math500.jsonl")
    write_parquet(rows, tmp_path / "data" / "test-00000-of-00001.parquet")
    write_parquet(rows[:1], tmp_path / "data" / "train-00000-of-00001.parquet")
    (tmp_path / "README.md").write_text("---\ndataset_info: {}\n---\n")
    assert len(load_benchmark(str(tmp_path), split="test")) == 3
    assert len(load_benchmark(str(tmp_path), split="train")) == 1
    with pytest.raises(UserError, match="split='validation'.*test, train"):
        load_benchmark(str(tmp_path), split="validation")


def test_folders_saved_with_datasets_load_including_dataset_dicts(tmp_path):
    import datasets

    rows = read_jsonl(DATA / "hmmt_feb_2025.jsonl")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dict"))
    expected = load_benchmark(str(DATA / "hmmt_feb_2025.jsonl"))
    assert load_benchmark(str(tmp_path / "single")) == expected
    assert load_benchmark(str(tmp_path / "dict")) == expected
    assert load_benchmark(str(tmp_path / "dict"), split="train") == expected
    with pytest.raises(UserError, match="split='test'.*train"):
        load_benchmark(str(tmp_path / "dict"), split="test")


def test_verl_style_files_with_chat_prompts_and_nested_answers_load():
    rows = load_benchmark(str(DATA / "dapo_math_17k_original.jsonl"))
    assert rows[0]["answer"] == "18" and "30$ students" in rows[0]["problem"]


def test_unknown_benchmark_name_lists_the_valid_names():
    with pytest.raises(UserError) as err:
        load_benchmark("aime2024")
    for name in valid_names():
        assert name in str(err.value)
    assert {"arith", "chain", "chain_hard"} <= set(valid_names())


def test_missing_local_file_is_not_mistaken_for_a_hub_id():
    with pytest.raises(UserError, match="valid names"):
        load_benchmark("data/aime.jsonl")


def test_a_file_without_problem_or_answer_columns_names_the_columns_it_has(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "x", "label_text": "y"}) + "\n")
    with pytest.raises(UserError, match="found text, label_text"):
        load_benchmark(str(bad))
    odd = tmp_path / "odd.csv"
    odd.write_text("problem,answer\n1,1\n")
    with pytest.raises(UserError, match="unsupported suffix '.csv'"):
        load_local_dataset(odd)


def test_a_named_benchmark_that_cannot_be_fetched_is_a_user_error_naming_the_hub_id(tmp_path):
    # Offline mode with an empty cache, in a fresh process (the hub settings are read at import).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO)}
    code = (
        "from abcx.errors import UserError\n"
        "from abcx.tasks.benchmarks import load_benchmark\n"
        "try:\n    load_benchmark('math500')\nexcept UserError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "HuggingFaceH4/MATH-500" in out.stdout and "local" in out.stdout, out.stderr[-2000:]


# ---------------------------------------------------------------- dapo_math


def test_dapo_rows_become_system_user_conversations_with_answers():
    task = build_task(
        "dapo_math",
        path=str(DATA / "dapo_math_17k_processed_en.jsonl"),
        eval_benchmark=str(DATA / "hmmt_feb_2025.jsonl"),
    )
    assert task.name == "dapo_math" and task.system_prompt == SYSTEM_PROMPT
    assert task.train.column_names == ["prompt", "answer"]
    assert len(task.train) == 4
    assert task.train[0] == {
        "prompt": [
            {"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
            {"role": "user", "content": "In a class of $30$ students, $2/5$ wear glasses. How many do not?"},
        ],
        "answer": "18",
    }
    assert task.eval[0]["prompt"][1]["content"] == "An equilateral triangle has side $4$. Find its height."
    assert task.eval["answer"] == [r"2\sqrt{3}", "20"] and task.eval["id"] == ["1", "2"]
    assert task.reward is math_reward and task.is_correct is is_equivalent
    assert task.info["n_train"] == 4 and task.info["n_eval"] == 2


def test_dapo_reward_scores_the_gold_answer_of_each_row():
    task = build_task("dapo_math", path=str(DATA / "dapo_math_17k_processed_en.jsonl"), eval_benchmark=None)
    completions = [[{"role": "assistant", "content": rf"... \boxed{{{a}}}"}] for a in task.train["answer"]]
    assert task.reward(task.train["prompt"], completions, answer=task.train["answer"]) == [1.0] * 4
    assert task.reward(task.train["prompt"], completions[::-1], answer=task.train["answer"]) == [0.0] * 4
    assert task.eval is None


def test_original_dapo_prompts_lose_their_answer_line_instructions():
    task = build_task("dapo_math", path=str(DATA / "dapo_math_17k_original.jsonl"), eval_benchmark=None)
    user = task.train[0]["prompt"][1]["content"]
    assert user == "In a class of $30$ students, $2/5$ wear glasses. How many do not?"
    assert task.train["answer"] == ["18", "15"]
    assert strip_dapo_instructions("Plain problem.") == "Plain problem."


def test_max_train_samples_and_system_prompt_are_honoured():
    task = build_task(
        "dapo_math",
        path=str(DATA / "dapo_math_17k_processed_en.jsonl"),
        eval_benchmark=None,
        max_train_samples=2,
        system_prompt=None,
    )
    assert len(task.train) == 2
    assert task.train[0]["prompt"] == [{"role": "user", "content": "In a class of $30$ students, $2/5$ wear glasses. How many do not?"}]
    with pytest.raises(UserError, match="max_train_samples=0"):
        build_task("dapo_math", path=str(DATA / "dapo_math_17k_processed_en.jsonl"), max_train_samples=0)


def test_a_hub_snapshot_of_dapo_picks_the_subset_folder(tmp_path):
    rows = read_jsonl(DATA / "dapo_math_17k_processed_en.jsonl")
    write_parquet(rows, tmp_path / "en" / "train-00000-of-00001.parquet")
    write_parquet(rows[:1], tmp_path / "all" / "train-00000-of-00001.parquet")
    shutil.copy(DATA / "amc23.jsonl", tmp_path / "amc23.jsonl")
    kwargs = dict(path=str(tmp_path), eval_benchmark=str(tmp_path / "amc23.jsonl"))
    assert len(build_task("dapo_math", subset="en", **kwargs).train) == 4
    assert len(build_task("dapo_math", subset="all", **kwargs).train) == 1


def test_unknown_dapo_subset_on_the_hub_is_a_user_error():
    with pytest.raises(UserError, match="subset='fr'.*all, en, cn"):
        build_task("dapo_math", subset="fr")
