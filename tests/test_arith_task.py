"""The arith task: deterministic, disjoint splits and an exact reward."""
from __future__ import annotations

import pytest

from abcx.errors import UserError
from abcx.tasks import Task, build_task
from abcx.tasks.arith import arith_correct, in_eval_pool, is_correct, problems


def _value(prompt: str) -> int:
    expr = prompt.rstrip("=")
    for op in "+-*":
        left, sep, right = expr.rpartition(op)
        if sep and left:
            a, b = int(left), int(right)
            return a + b if op == "+" else a - b if op == "-" else a * b
    raise AssertionError(prompt)


def test_build_through_the_registry_gives_prompt_and_answer_columns():
    task = build_task("arith", n_train=50, n_eval=10)
    assert isinstance(task, Task) and task.name == "arith"
    assert task.train.column_names == ["prompt", "answer"]
    assert len(task.train) == 50 and len(task.eval) == 10
    assert task.eval[0]["prompt"].endswith("=")


def test_same_seed_gives_the_same_splits_and_another_seed_other_problems():
    a, b = build_task("arith", seed=0), build_task("arith", seed=0)
    assert a.train["prompt"] == b.train["prompt"] and a.eval["prompt"] == b.eval["prompt"]
    c = build_task("arith", seed=1)
    assert c.train["prompt"] != a.train["prompt"] and c.eval["prompt"] != a.eval["prompt"]


def test_eval_problems_never_appear_in_any_train_split():
    # The warm start trains on a large split with task seed 0; an RL run may use any seed.
    _, eval0 = problems(n_train=0, n_eval=200, seed=0)
    _, eval3 = problems(n_train=0, n_eval=200, seed=3)
    for seed in (0, 1, 2):
        train, _ = problems(n_train=12_000, n_eval=0, seed=seed)
        seen = {p for p, _ in train}
        assert not seen & {p for p, _ in eval0 + eval3}
    assert all(in_eval_pool(p) for p, _ in eval0) and not any(in_eval_pool(p) for p, _ in train)


def test_eval_split_does_not_depend_on_the_train_size():
    assert problems(n_train=10, n_eval=100)[1] == problems(n_train=5000, n_eval=100)[1]
    # A larger eval split extends the smaller one rather than reshuffling it.
    assert problems(n_train=0, n_eval=300)[1][:100] == problems(n_train=0, n_eval=100)[1]


def test_problems_are_distinct_and_answers_are_exact_arithmetic():
    train, evals = problems(n_train=3000, n_eval=200, ops="+-*", digits=3, seed=5)
    prompts = [p for p, _ in train + evals]
    assert len(set(prompts)) == len(prompts)
    assert all(str(_value(p)) == a for p, a in train + evals)
    assert {p[-1] for p in prompts} == {"="}


def test_subtraction_results_are_non_negative_unless_asked_for():
    train, _ = problems(n_train=500, n_eval=0, ops="-")
    assert all(not a.startswith("-") for _, a in train)
    train, _ = problems(n_train=500, n_eval=0, ops="-", negatives=True)
    assert any(a.startswith("-") for _, a in train)


def test_operand_lengths_mix_easy_and_hard_problems():
    train, _ = problems(n_train=2000, n_eval=0, digits=3, ops="+")
    lengths = {len(p.split("+")[0]) for p, _ in train}
    assert lengths == {1, 2, 3}


@pytest.mark.parametrize(
    "completion, reward",
    [
        ("432", 1.0),
        ("432\n17+5=22", 1.0),  # the answer ends at the newline
        ("432 and more", 1.0),  # or at a space
        ("432<eos>", 1.0),
        (" 432", 1.0),  # leading whitespace is ignored
        ("4321", 0.0),
        ("43", 0.0),
        ("0432", 0.0),
        ("+432", 0.0),
        ("", 0.0),
        ("\n432", 1.0),
        ("4 32", 0.0),
    ],
)
def test_reward_is_one_only_for_the_exact_answer(completion, reward):
    assert arith_correct(["47+385="], [completion], answer=["432"]) == [reward]
    assert is_correct(completion, "432") is (reward == 1.0)


def test_reward_accepts_conversational_completions_and_batches():
    completions = [[{"role": "assistant", "content": "12"}], [{"role": "assistant", "content": "13"}], "12"]
    assert arith_correct(["5+7="] * 3, completions, answer=["12"] * 3, trainer_state=None) == [1.0, 0.0, 1.0]


def test_reward_function_has_a_stable_name_for_trl_logs():
    task = build_task("arith", n_train=1, n_eval=1)
    assert task.reward.__name__ == "arith_correct"
    assert task.is_correct is is_correct


@pytest.mark.parametrize(
    "options, field",
    [({"digits": 0}, "task.digits"), ({"ops": "/"}, "task.ops"), ({"ops": ""}, "task.ops"),
     ({"n_train": -1}, "task.n_train"), ({"mul_digits": 9}, "task.mul_digits")],
)
def test_bad_options_raise_a_user_error_naming_the_field(options, field):
    with pytest.raises(UserError, match=field):
        build_task("arith", **options)


def test_asking_for_more_problems_than_exist_is_a_user_error():
    with pytest.raises(UserError, match="n_train"):
        problems(n_train=200, n_eval=0, digits=1, ops="+")
