"""The chain task: partial-sum traces, pools disjoint by construction, and a reward that reads the final number."""
import subprocess
import sys
from pathlib import Path

import pytest

from abcx.errors import UserError
from abcx.tasks import benchmark_names, build_task, task_benchmarks
from abcx.tasks.chain import (demonstrations, draw, final_answer, is_correct, make_reward, pool_of, solve,
                              well_formed)

REPO = Path(__file__).resolve().parents[1]


def test_a_problem_is_written_as_its_left_to_right_partial_sums():
    prompt, steps, value = solve([5, 95, 7, 6], ["+", "+", "+"])
    assert prompt == "5+95+7+6="
    assert steps == ["5+95=100", "100+7=107", "107+6=113"] and value == 113
    prompt, steps, value = solve([12, 30, 5], ["-", "+"])
    assert prompt == "12-30+5=" and steps == ["12-30=-18", "-18+5=-13"] and value == -13


def test_the_reward_reads_the_number_after_the_last_equals_sign():
    reward = make_reward(format_check=False)
    completions = ["5+95=100,100+7=107,107+6=113", "5+95=100,100+7=107,107+6=112", "113", "5+95=100,100+7=107,107+6=113 junk",
                   "5+95=100,100+7=107,107+6=113\n999"]
    assert reward(["5+95+7+6="] * 5, completions, answer=["113"] * 5) == [1.0, 0.0, 1.0, 1.0, 1.0]
    assert final_answer([{"role": "assistant", "content": "1+2=3"}]) == "3"
    assert not is_correct("", "3")


def test_the_format_check_wants_one_chained_step_per_operator():
    prompt = "5+95+7+6="
    assert well_formed("5+95=100,100+7=107,107+6=113", prompt)
    assert well_formed("5+95=1,1+7=2,2+6=113", prompt)  # arithmetic inside a step is not the format's business
    assert not well_formed("113", prompt)
    assert not well_formed("5+95=100,100+7=107", prompt)  # a step missing
    assert not well_formed("5+95=100,101+7=108,108+6=114", prompt)  # not chained on the previous result
    assert not well_formed("5+95=100,100-7=93,93+6=99", prompt)  # wrong operator
    strict, loose = make_reward(format_check=True), make_reward(format_check=False)
    assert strict([prompt], ["113"], answer=["113"]) == [0.0] and loose([prompt], ["113"], answer=["113"]) == [1.0]


def test_pools_are_disjoint_whatever_the_seed_or_size():
    shape = dict(min_operands=4, max_operands=5, digits=2, ops="+")
    pools = {pool: {p for seed in (0, 1) for p, _, _ in draw(400, pool, seed=seed, **shape)}
             for pool in ("eval", "rl", "sft")}
    assert not pools["eval"] & pools["rl"] and not pools["eval"] & pools["sft"] and not pools["rl"] & pools["sft"]
    assert all(pool_of(p) == "eval" for p in pools["eval"])
    task = build_task("chain", n_train=300, n_eval=50, seed=3)
    assert not set(task.train["prompt"]) & set(task.eval["prompt"])
    assert not set(task.train["prompt"]) & {p for p, _ in demonstrations(2000, seed=0, **shape)}


def test_the_task_is_deterministic_in_its_seed_and_eval_does_not_depend_on_n_train():
    a, b = build_task("chain", n_train=100, n_eval=20, seed=0), build_task("chain", n_train=100, n_eval=20, seed=0)
    assert a.train["prompt"] == b.train["prompt"] and a.eval["answer"] == b.eval["answer"]
    c = build_task("chain", n_train=500, n_eval=20, seed=0)
    assert c.eval["prompt"] == a.eval["prompt"]
    assert build_task("chain", n_train=100, n_eval=20, seed=1).train["prompt"] != a.train["prompt"]


def test_answers_are_the_values_of_the_prompts_and_shapes_follow_the_options():
    task = build_task("chain", n_train=200, n_eval=0, min_operands=6, max_operands=8, digits=1, ops="+-")
    for prompt, answer in zip(task.train["prompt"], task.train["answer"]):
        body = prompt.rstrip("=")
        assert eval(body) == int(answer)  # noqa: S307 - a digit/+/- string made by the task itself
        operands = body.replace("-", "+").split("+")
        assert 6 <= len(operands) <= 8 and all(len(x) == 1 for x in operands)


def test_demonstrations_write_the_steps_or_only_the_result():
    shape = dict(min_operands=4, max_operands=4, digits=2, ops="+")
    (prompt, chain), = demonstrations(1, **shape)
    (same, bare), = demonstrations(1, write_steps=False, **shape)
    assert prompt == same and chain.count("=") == 3 and chain.count(",") == 2
    assert bare == chain.rsplit("=", 1)[-1] and is_correct(chain, bare)


def test_the_task_declares_an_in_distribution_and_a_longer_chain_benchmark():
    assert {"chain", "chain_hard"} <= set(benchmark_names())
    name, options = task_benchmarks()["chain_hard"]
    assert name == "chain" and options["min_operands"] > 5
    easy, hard = build_task("chain", **task_benchmarks()["chain"][1]), build_task("chain", **options)
    assert len(easy.train) == 0 and len(hard.eval) == len(easy.eval) > 0
    assert min(p.count("+") for p in hard.eval["prompt"]) > max(p.count("+") for p in easy.eval["prompt"])


@pytest.mark.parametrize("options, field", [
    ({"min_operands": 1}, "task.options.min_operands"), ({"max_operands": 13}, "task.options.max_operands"),
    ({"min_operands": 6, "max_operands": 5}, "task.options.min_operands"), ({"digits": 0}, "task.options.digits"),
    ({"ops": "*"}, "task.options.ops"), ({"n_train": -1}, "task.options.n_train"), ({"digits": True}, "task.options.digits"),
])
def test_invalid_options_name_the_field(options, field):
    with pytest.raises(UserError, match=field):
        build_task("chain", **options)


def test_evaluation_scores_a_benchmark_with_its_tasks_own_checker():
    from abcx.evaluation.runner import problems_for

    prompts, golds, check = problems_for("chain", 5)
    assert len(prompts) == len(golds) == 5 and all(isinstance(p, str) for p in prompts)
    right = [",".join(solve_steps(p)) for p in prompts]
    assert check(right, golds) == [True] * 5
    assert check(["0"] * 5, golds) == [g == "0" for g in golds]


def solve_steps(prompt: str) -> list[str]:
    import re

    numbers = [int(x) for x in re.findall(r"\d+", prompt)]
    ops = re.findall(r"(?<=\d)[+-]", prompt)
    return solve(numbers, ops)[1]


def test_tasks_do_not_import_evaluation_and_importing_them_is_cheap():
    code = ("import sys, abcx.tasks, abcx.tasks.chain, abcx.tasks.arith, abcx.tasks.dapo_math, abcx.tasks.sources; "
            "abcx.tasks.task_benchmarks(); "
            "print(any(m.startswith('abcx.evaluation') for m in sys.modules), 'torch' in sys.modules, 'datasets' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]
