"""Answer checking with math-verify (abcx.tasks.verify): extraction, equivalence, deadlines, worker pool."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from abcx.errors import UserError
from abcx.tasks.verify import (
    VerifierPool,
    check_answer,
    completion_text,
    is_equivalent,
    last_boxed,
    math_reward,
    verify_many,
)

# 9^(9^(9^9)): sympy keeps it symbolic, then comparing it numerically never finishes.
POWER_TOWER = r"The answer is \boxed{9^{9^{9^{9}}}}"


# ---------------------------------------------------------------- checks run by pool workers
# Module-level so that workers (which get this process's sys.path) can import them by name.


def check_or_hang_without_signals(completion: str, gold: str) -> bool:
    """Stands in for code stuck in C: blocks SIGALRM, so no in-process deadline can stop it."""
    if completion == "hang":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(3600)
    return check_answer(completion, gold)


def check_or_crash(completion: str, gold: str) -> bool:
    if completion == "crash":
        os._exit(3)
    return check_answer(completion, gold)


# ---------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "text, boxed",
    [
        (r"first \boxed{1} then \boxed{2}", "2"),
        (r"\boxed{\frac{1}{\sqrt{2}}}", r"\frac{1}{\sqrt{2}}"),
        (r"\boxed{ \{1, 2\} }", r"\{1, 2\}"),
        (r"\fbox{7}", "7"),
        (r"so \boxed 5.", "5"),
        (r"\boxed{3} and a truncated \boxed{12", "3"),
        (r"\boxed{} then nothing", None),
        ("no box at all", None),
    ],
)
def test_last_boxed_returns_the_last_complete_box(text, boxed):
    assert last_boxed(text) == boxed


# ---------------------------------------------------------------- equivalence


@pytest.mark.parametrize(
    "completion, gold",
    [
        (r"so the answer is $\boxed{18}$.", "18"),
        (r"\boxed{16}", "016"),  # AIME answers are stored zero-padded
        (r"\boxed{\dfrac{3}{4}}", r"\frac{3}{4}"),
        (r"\boxed{0.75}", r"\frac34"),
        (r"\boxed{2\sqrt{3}}", r"2\sqrt{3}"),
        (r"\boxed{\sqrt{12}}", r"2\sqrt{3}"),
        (r"\boxed{x = 3}", "3"),
        (r"\boxed{(-1, 1)}", "(-1,1)"),
        (r"\boxed{27}", "27"),
        ("The final answer is 42.", "42"),  # no box: math-verify's own extraction
    ],
)
def test_equivalent_answers_are_correct(completion, gold):
    assert is_equivalent(completion, gold)


@pytest.mark.parametrize(
    "completion, gold",
    [
        (r"\boxed{17}", "18"),
        (r"\boxed{2}", r"2\sqrt{3}"),
        (r"\boxed{\frac{3}{5}}", r"\frac{3}{4}"),
        ("I could not solve it.", "5"),
        ("", "5"),
    ],
)
def test_different_answers_are_wrong(completion, gold):
    assert not is_equivalent(completion, gold)


def test_the_last_boxed_answer_counts_not_an_earlier_one():
    assert is_equivalent(r"first guess \boxed{5}, corrected: \boxed{7}", "7")
    assert not is_equivalent(r"first guess \boxed{7}, corrected: \boxed{5}", "7")


def test_unwrapped_gold_is_wrapped_in_dollars_before_parsing():
    # math-verify alone reads an unwrapped 2\sqrt{3} as "2", so "the answer is 2" would pass.
    from math_verify import parse, verify

    assert verify(parse(r"2\sqrt{3}"), parse("The answer is 2"))  # the false positive being avoided
    assert not is_equivalent("The answer is 2", r"2\sqrt{3}")
    assert is_equivalent(r"The answer is $2\sqrt{3}$", r"2\sqrt{3}")
    assert is_equivalent(r"\boxed{2\sqrt{3}}", r"$2\sqrt{3}$")  # already wrapped: left alone


# ---------------------------------------------------------------- deadlines


def test_pathological_answer_in_this_process_is_wrong_within_the_deadline():
    started = time.monotonic()
    assert is_equivalent(POWER_TOWER, "5", timeout_s=1) is False
    assert time.monotonic() - started < 3


def test_pathological_answer_in_the_pool_is_wrong_and_the_others_are_still_checked():
    pairs = [(r"\boxed{5}", "5"), (POWER_TOWER, "5"), (r"\boxed{\frac{1}{2}}", "0.5"), (r"\boxed{4}", "5")]
    verify_many([("warm", "up")], workers=2)  # start-up is not part of the bound below
    started = time.monotonic()
    assert verify_many(pairs, workers=2, timeout_s=1) == [True, False, True, False]
    assert time.monotonic() - started < 4


def test_a_check_that_ignores_signals_is_killed_and_its_worker_replaced():
    with VerifierPool(1, check=check_or_hang_without_signals) as pool:
        started = time.monotonic()
        assert pool.map([("hang", "1"), (r"\boxed{1}", "1")], timeout_s=0.5) == [False, True]
        assert pool.restarts == 1
        assert time.monotonic() - started < 30  # deadline + grace + one worker start
        assert pool.map([(r"\boxed{2}", "2")]) == [True]


def test_a_check_that_kills_its_worker_counts_as_wrong():
    with VerifierPool(2, check=check_or_crash) as pool:
        assert pool.map([(r"\boxed{1}", "1"), ("crash", "1"), (r"\boxed{3}", "3")]) == [True, False, True]
        assert pool.restarts == 1


def test_the_callers_own_timer_survives_a_check():
    fired = []
    old_handler = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    old_timer = signal.setitimer(signal.ITIMER_REAL, 30.0)  # e.g. pytest-timeout's
    try:
        assert is_equivalent(r"\boxed{3}", "3", timeout_s=2)
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25 < left <= 30
        assert signal.getsignal(signal.SIGALRM) is not None and not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, *old_timer)
        signal.signal(signal.SIGALRM, old_handler)


def test_checks_from_a_worker_thread_run_in_a_pool_instead_of_failing():
    out = {}

    def run():
        out["many"] = verify_many([(r"\boxed{4}", "4"), (r"\boxed{5}", "4")], workers=0)
        out["one"] = is_equivalent(r"\boxed{\frac{2}{4}}", r"\frac12")

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=60)
    assert out == {"many": [True, False], "one": True}


def test_pool_and_in_process_checks_agree_and_keep_order():
    pairs = [(rf"\boxed{{{i % 7}}}", str(i % 5)) for i in range(30)]
    assert verify_many(pairs, workers=2) == verify_many(pairs, workers=0) == [i % 7 == i % 5 for i in range(30)]
    assert verify_many([], workers=2) == []


def test_bad_worker_counts_and_timeouts_are_user_errors():
    with pytest.raises(UserError, match="workers=-1"):
        verify_many([("1", "1")], workers=-1)
    with pytest.raises(UserError, match="timeout_s"):
        verify_many([("1", "1")], timeout_s=0)
    with pytest.raises(UserError, match="workers=0"):
        VerifierPool(0)


# ---------------------------------------------------------------- TRL reward


def test_completion_text_reads_strings_and_chat_messages():
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": "a"}]) == "a"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "b"}]}]) == "b"


def test_math_reward_scores_string_and_conversational_completions():
    prompts = ["p1", "p2", "p3"]
    completions = [r"\boxed{7}", [{"role": "assistant", "content": r"so \boxed{8}"}], [{"role": "assistant", "content": "no"}]]
    rewards = math_reward(prompts, completions, answer=["7", "8", "8"], completion_ids=[[1], [2], [3]])
    assert rewards == [1.0, 1.0, 0.0]


def test_math_reward_refuses_misaligned_answers():
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        math_reward(["p", "p"], ["a", "b"], answer=["1"])
