"""Avg@n, unbiased Pass@k and bootstrap intervals (abcx.evaluation.metrics)."""
from __future__ import annotations

import itertools
import re
import math

import numpy as np
import pytest

from abcx.errors import UserError
from abcx.evaluation.metrics import (
    avg_at_k,
    bootstrap_ci,
    bootstrap_ci_pooled,
    default_ks,
    logged_names,
    pass_at_k,
    pass_at_k_many,
    pooled_estimate,
    summarise,
)


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (the first c correct) that contain a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_equals_enumeration_over_all_k_subsets_for_small_n():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = brute_force_pass_at_k(n, c, k)
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)
                assert pass_at_k_many([n], [c], k)[0] == pytest.approx(expected, abs=1e-12), (n, c, k)


def test_pass_at_k_equals_the_binomial_formula_for_moderate_n():
    for n, c, k in [(64, 5, 8), (64, 1, 1), (100, 37, 10), (50, 49, 2)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12)


def test_pass_at_1_is_the_fraction_correct():
    assert pass_at_k(16, 4, 1) == pytest.approx(0.25)


def test_pass_at_k_edge_cases():
    assert pass_at_k(8, 0, 4) == 0.0
    assert pass_at_k(8, 8, 1) == 1.0
    assert pass_at_k(8, 1, 8) == 1.0  # k = n with any correct sample
    assert pass_at_k(8, 0, 8) == 0.0
    assert pass_at_k(8, 5, 4) == 1.0  # n - c < k: every draw holds a correct one


def test_k_larger_than_n_raises_a_user_error_naming_k_and_n():
    with pytest.raises(UserError, match=r"k=9.*n=8"):
        pass_at_k(8, 3, 9)
    with pytest.raises(UserError, match=r"k=9.*n=8"):
        pass_at_k_many([8, 16], [1, 2], 9)


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, -1, 1), (0, 0, 1), (4, 1, 0)])
def test_impossible_counts_raise_user_errors(n, c, k):
    with pytest.raises(UserError):
        pass_at_k(n, c, k)


def test_no_overflow_and_exact_values_at_n_1024_and_beyond():
    # Binomials leave float range just above n = 1024; the product form has no such limit.
    with pytest.raises(OverflowError):
        float(math.comb(1100, 550))
    assert pass_at_k(4096, 1, 2048) == pytest.approx(0.5, abs=1e-12)
    assert pass_at_k(1024, 1, 512) == pytest.approx(0.5, abs=1e-12)
    assert pass_at_k(1024, 0, 512) == 0.0
    assert pass_at_k(1024, 1024, 1024) == 1.0
    exact = 1 - math.comb(1024 - 3, 100) / math.comb(1024, 100)  # Python ints: exact
    assert pass_at_k(1024, 3, 100) == pytest.approx(exact, rel=1e-12)
    values = pass_at_k_many(np.full(1025, 1024), np.arange(1025), 256)
    assert np.all(np.isfinite(values)) and np.all(np.diff(values) >= 0)


def test_vectorised_pass_at_k_matches_the_scalar_one_for_mixed_n():
    rng = np.random.default_rng(0)
    n = rng.integers(4, 300, size=200)
    c = rng.integers(0, n + 1)
    got = pass_at_k_many(n, c, 4)
    want = [pass_at_k(int(a), int(b), 4) for a, b in zip(n, c)]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)


def test_avg_at_k_averages_per_problem_accuracy_not_pooled_samples():
    # pooled samples would give 9/12; per-problem mean is (1/4 + 8/8) / 2
    assert avg_at_k([(4, 1), (8, 8)]) == pytest.approx(0.625)


def test_default_ks_are_powers_of_two_up_to_n_plus_n():
    assert default_ks(1) == [1]
    assert default_ks(64) == [1, 2, 4, 8, 16, 32, 64]
    assert default_ks(48) == [1, 2, 4, 8, 16, 32, 48]


def test_summarise_reports_avg_at_n_and_pass_at_each_k():
    per_problem = [(4, 0), (4, 1), (4, 4)]
    out = summarise(per_problem)
    assert list(out) == ["avg@4", "pass@1", "pass@2", "pass@4"]
    assert out["avg@4"] == pytest.approx((0 + 0.25 + 1) / 3)
    assert out["pass@1"] == pytest.approx(out["avg@4"])
    assert out["pass@2"] == pytest.approx((0 + 0.5 + 1) / 3)
    assert out["pass@4"] == pytest.approx(2 / 3)
    assert list(summarise(per_problem, ks=[2])) == ["avg@4", "pass@2"]


def test_summarise_rejects_k_above_the_smallest_sample_count():
    with pytest.raises(UserError, match="k=8"):
        summarise([(8, 1), (4, 1)], ks=[8])


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_problems():
    rng = np.random.default_rng(1)
    small = [(16, int(c)) for c in rng.binomial(16, 0.3, size=20)]
    large = [(16, int(c)) for c in rng.binomial(16, 0.3, size=2000)]
    for per_problem in (small, large):
        low, high = bootstrap_ci(per_problem, k=4, seed=0)
        assert low <= summarise(per_problem, ks=[4])["pass@4"] <= high
    assert np.subtract(*bootstrap_ci(large, 4)[::-1]) < np.subtract(*bootstrap_ci(small, 4)[::-1])


def test_bootstrap_is_reproducible_with_a_seed_and_avg_uses_k_none():
    per_problem = [(8, 0), (8, 3), (8, 8), (8, 5)]
    assert bootstrap_ci(per_problem, None, seed=3) == bootstrap_ci(per_problem, None, seed=3)
    low, high = bootstrap_ci(per_problem, None, iters=2000, seed=3)
    assert 0.0 <= low < avg_at_k(per_problem) < high <= 1.0


def test_bootstrap_of_a_constant_metric_has_zero_width():
    assert bootstrap_ci([(4, 4)] * 10, k=2) == (1.0, 1.0)


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(UserError, match="alpha"):
        bootstrap_ci([(4, 1)], 1, alpha=1.5)
    with pytest.raises(UserError, match="iters"):
        bootstrap_ci([(4, 1)], 1, iters=0)
    with pytest.raises(UserError, match="empty"):
        bootstrap_ci([], 1)


def test_pooled_interval_widens_with_seed_to_seed_spread():
    problems = 200
    rng = np.random.default_rng(2)
    p = rng.uniform(0, 1, size=problems)
    alike = [[(8, int(c)) for c in rng.binomial(8, p)] for _ in range(4)]
    # same problems, but runs differ a lot in overall skill
    apart = [[(8, int(c)) for c in rng.binomial(8, np.clip(p + shift, 0, 1))] for shift in (-0.3, -0.1, 0.1, 0.3)]
    low_a, high_a = bootstrap_ci_pooled(alike, k=1, seed=0)
    low_b, high_b = bootstrap_ci_pooled(apart, k=1, seed=0)
    assert low_a <= pooled_estimate(alike, 1) <= high_a
    assert (high_b - low_b) > 1.5 * (high_a - low_a)


def test_pooled_interval_of_one_run_equals_the_problem_bootstrap_in_spread():
    rng = np.random.default_rng(4)
    run = [(8, int(c)) for c in rng.binomial(8, 0.4, size=300)]
    single = bootstrap_ci(run, 2, iters=3000, seed=5)
    pooled = bootstrap_ci_pooled([run], 2, iters=3000, seed=5)
    assert pooled[1] - pooled[0] == pytest.approx(single[1] - single[0], rel=0.15)


def test_pooling_needs_the_same_problems_in_every_run():
    with pytest.raises(UserError, match="same problems"):
        bootstrap_ci_pooled([[(4, 1), (4, 2)], [(4, 1)]], k=1)


def test_the_paired_difference_is_exact_in_its_estimate_and_its_interval_tracks_the_gap():
    from abcx.evaluation.metrics import bootstrap_diff_pooled

    base = [(8, c) for c in (0, 2, 4, 6, 8, 1, 3, 5)]
    better = [[(8, min(8, c + 2)) for _, c in base], [(8, min(8, c + 1)) for _, c in base]]
    est, low, high = bootstrap_diff_pooled(better, [base], None, seed=0)
    exact = (sum(min(8, c + 2) + min(8, c + 1) for _, c in base) / 2 - sum(c for _, c in base)) / (8 * len(base))
    assert est == pytest.approx(exact) and 0 < low <= est <= high
    # Swapping the sides flips the sign; a side against itself is exactly zero.
    assert bootstrap_diff_pooled([base], better, None, seed=0)[0] == pytest.approx(-exact)
    assert bootstrap_diff_pooled([base], [base], 4, seed=0) == (0.0, 0.0, 0.0)
    with pytest.raises(UserError, match="same problems"):
        bootstrap_diff_pooled([base], [base[:-1]], None)


def test_vectorised_pass_at_k_accepts_every_boundary_and_refuses_one_past_each_wherever_it_stands():
    """n >= 1, 0 <= c <= n, 1 <= k <= n: the edges are valid; one step past any of them is refused in
    one line, whichever problem of the array holds it."""
    for n, c, k in ((1, 0, 1), (1, 1, 1), (4, 4, 4), (4, 0, 4), (4, 3, 1)):
        assert pass_at_k_many([6, n], [2, c], k)[1] == pytest.approx(pass_at_k(n, c, k))
    for n, c, k, says in ((0, 0, 1, "n=0 samples"), (4, -1, 2, "c=-1 correct"), (4, 5, 2, "c=5 correct"),
                          (4, 2, 0, "k=0 with n=6"), (4, 2, 5, "k=5 with n=4")):
        with pytest.raises(UserError, match=f"^pass@k: {says}"):
            pass_at_k_many([6, n], [2, c], k)  # bad on the second problem (k=0 on both): not found by looking at the first
    # A problem at a valid edge before a bad one: the bad one is still found.
    for n, c, k, says in (([1, 0], [0, 0], 1, "n=0 samples"), ([4, 4], [0, 5], 2, "c=5 correct"),
                          ([4, 4], [4, 5], 2, "c=5 correct"), ([4, 3], [1, 1], 4, "k=4 with n=3")):
        with pytest.raises(UserError, match=f"^pass@k: {says}"):
            pass_at_k_many(n, c, k)
    with pytest.raises(UserError, match="^pass@k: 2 sample counts but 3 correct counts$"):
        pass_at_k_many([4, 4], [1, 2, 3], 2)
    assert pass_at_k_many([], [], 3).shape == (0,)


def test_vectorised_pass_at_k_takes_counts_held_as_floats():
    """pandas gives counts as floats once a column has a missing value; they are counts all the same."""
    as_int = pass_at_k_many([8, 16, 5], [3, 0, 5], 4)
    assert pass_at_k_many(np.array([8.0, 16.0, 5.0]), np.array([3.0, 0.0, 5.0]), 4) == pytest.approx(as_int)


def test_the_paired_bootstrap_resamples_every_problem_and_its_quantiles_are_the_two_tails():
    """One problem in three holds the whole difference, problem 0: an interval that never drew it would
    be [0, 0]. On 400 problems the bootstrap interval approaches the normal one, est -/+ 1.96 se (paired
    se of the per-problem differences), within Monte-Carlo error; another alpha gives other tails."""
    from abcx.evaluation.metrics import bootstrap_diff_pooled

    est, low, high = bootstrap_diff_pooled([[(4, 4), (4, 1), (4, 2)]], [[(4, 0), (4, 1), (4, 2)]], None)
    assert est == pytest.approx(1 / 3) and low == 0.0 and high == pytest.approx(1.0)
    assert bootstrap_diff_pooled([[(4, 4), (4, 1), (4, 2)]], [[(4, 0), (4, 1), (4, 2)]], None) == (est, low, high)

    rng = np.random.default_rng(11)
    a = rng.integers(0, 9, size=400)
    b = np.clip(a + rng.integers(-3, 2, size=400), 0, 8)
    d = (a - b) / 8
    se = d.std(ddof=1) / math.sqrt(len(d))
    for alpha, z in ((0.05, 1.959964), (0.2, 1.281552)):
        est, low, high = bootstrap_diff_pooled([[(8, int(c)) for c in a]], [[(8, int(c)) for c in b]], None,
                                               iters=4000, alpha=alpha, seed=3)
        assert est == pytest.approx(d.mean())
        assert est - low == pytest.approx(z * se, rel=0.05) and high - est == pytest.approx(z * se, rel=0.05)


def test_each_bootstrap_draws_problem_0_and_its_tails_are_alpha_over_2_each():
    """The one-level and pooled bootstraps, as the paired one above: a problem-0-only signal is seen,
    and on 400 problems the interval is mean -/+ z se of a normal with alpha / 2 in each tail."""
    only_first = [(4, 4), (4, 0), (4, 0)]
    assert bootstrap_ci(only_first, None) == pytest.approx((0.0, 1.0))
    assert bootstrap_ci_pooled([only_first], None) == pytest.approx((0.0, 1.0))
    # The default seed is fixed: a report printed twice shows the same intervals (distinct values, so
    # two different draws would not land on the same quantiles by chance).
    spread = [[(64, c) for c in (0, 3, 5, 8, 2, 7, 1, 6, 11, 19, 23, 29)],
              [(64, c) for c in (1, 2, 6, 7, 3, 8, 0, 4, 13, 17, 31, 37)]]
    assert bootstrap_ci(spread[0], 5) == bootstrap_ci(spread[0], 5)
    assert bootstrap_ci_pooled(spread, 5) == bootstrap_ci_pooled(spread, 5)
    assert bootstrap_ci_pooled(spread, 5, seed=1) != bootstrap_ci_pooled(spread, 5, seed=2)
    from abcx.evaluation.metrics import bootstrap_diff_pooled
    assert bootstrap_diff_pooled(spread, spread[::-1], 5) == bootstrap_diff_pooled(spread, spread[::-1], 5)
    assert bootstrap_diff_pooled(spread, spread[::-1], 5, seed=1) != bootstrap_diff_pooled(spread, spread[::-1], 5, seed=2)

    c = np.random.default_rng(5).integers(0, 9, size=400)
    per_problem = [(8, int(x)) for x in c]
    se = (c / 8).std(ddof=1) / math.sqrt(len(c))
    mean = float((c / 8).mean())
    for alpha, z in ((0.05, 1.959964), (0.2, 1.281552)):
        for low, high in (bootstrap_ci(per_problem, None, iters=4000, alpha=alpha, seed=2),
                          bootstrap_ci_pooled([per_problem], None, iters=4000, alpha=alpha, seed=2)):
            assert mean - low == pytest.approx(z * se, rel=0.05) and high - mean == pytest.approx(z * se, rel=0.05)


def test_the_pooled_estimate_is_of_the_metric_asked_for():
    runs = [[(8, 1), (8, 6)], [(8, 3), (8, 0)]]
    assert pooled_estimate(runs, None) == pytest.approx((1 + 6 + 3 + 0) / 32)
    assert pooled_estimate(runs, 4) == pytest.approx(np.mean([pass_at_k(8, c, 4) for c in (1, 6, 3, 0)]))


def test_metric_inputs_at_their_edges_are_taken_and_one_past_is_one_line_naming_the_problem():
    assert summarise([(1, 0), (1, 1)]) == {"avg@1": 0.5, "pass@1": 0.5}
    for bad, says in (((0, 0), "(n=0, c=0)"), ((4, -1), "(n=4, c=-1)"), ((4, 5), "(n=4, c=5)")):
        with pytest.raises(UserError, match=rf"^metrics: problem 1 has {re.escape(says)}; need n >= 1 and 0 <= c <= n$"):
            summarise([(4, 1), bad])
    with pytest.raises(UserError, match=r"^metrics: per_problem is empty; need at least one \(n, c\) pair$"):
        summarise([])
    with pytest.raises(UserError, match=r"^metrics: n=0 samples; need n >= 1$"):
        default_ks(0)
    with pytest.raises(UserError, match=r"^bootstrap: no runs given; need at least one run's per_problem list$"):
        pooled_estimate([], None)
    with pytest.raises(UserError, match=r"problem counts \[1, 2\]; pooling needs every run scored on the same "
                                        r"problems in the same order$"):
        pooled_estimate([[(4, 1)], [(4, 1), (4, 2)]], None)
    low, high = bootstrap_ci([(4, 1), (4, 3)], None, iters=1)  # one iteration is allowed: one resampled mean
    assert low == high
    for alpha in (0.0, 1.0):
        with pytest.raises(UserError, match=rf"^bootstrap: alpha={alpha}; need 0 < alpha < 1"):
            bootstrap_ci([(4, 1), (4, 3)], None, alpha=alpha)


def test_an_evaluation_logs_avg_at_n_and_pass_at_each_default_k():
    """What eval.jsonl's `metrics` holds for n samples (a sweep's metric names are checked against it)."""
    assert logged_names(8) == ["avg@8", "pass@1", "pass@2", "pass@4", "pass@8"]
    assert logged_names(6) == ["avg@6", "pass@1", "pass@2", "pass@4", "pass@6"]
    assert logged_names(1) == ["avg@1", "pass@1"]
