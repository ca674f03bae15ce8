"""Accuracy metrics over sampled answers: Avg@n, unbiased Pass@k, bootstrap confidence intervals.

Input everywhere is `per_problem`: one `(n, c)` pair per problem, n samples drawn, c of them correct.
Pure numpy, no I/O.

Pass@k is Chen et al. (2021)'s unbiased estimator 1 − C(n−c, k)/C(n, k): the chance that k samples
drawn without replacement from the n contain a correct one. It is computed as a product
1 − Π_{i=n−c+1..n} (1 − k/i), never through binomials, which overflow floats from n ≈ 1030 on.
(The ABC-GRPO authors' own Pass@k looks at the first k samples only; it has the same mean but a
larger variance, so numbers differ slightly from theirs.)
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from abcx.errors import UserError

PerProblem = Sequence[tuple[int, int]]


def _check_nck(n: int, c: int, k: int) -> None:
    if n < 1:
        raise UserError(f"pass@k: n={n} samples; need n >= 1")
    if not 0 <= c <= n:
        raise UserError(f"pass@k: c={c} correct out of n={n}; need 0 <= c <= n")
    if not 1 <= k <= n:
        raise UserError(f"pass@k: k={k} with n={n} samples; need 1 <= k <= n")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of Pass@k for one problem with c correct out of n samples."""
    n, c, k = int(n), int(c), int(k)
    _check_nck(n, c, k)
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_many(n: Iterable[int] | np.ndarray, c: Iterable[int] | np.ndarray, k: int) -> np.ndarray:
    """`pass_at_k` over arrays of (n, c), vectorised.

    log Π_{i=n−c+1..n} (1 − k/i) = S(n) − S(n−c) with S(m) = Σ_{i=k+1..m} log(1 − k/i), so one
    cumulative sum up to max(n) serves every problem. `-expm1` keeps precision when Pass@k ≈ 1.
    """
    n_arr = np.asarray(n, dtype=np.int64).reshape(-1)
    c_arr = np.asarray(c, dtype=np.int64).reshape(-1)
    if n_arr.shape != c_arr.shape:
        raise UserError(f"pass@k: {n_arr.size} sample counts but {c_arr.size} correct counts")
    k = int(k)
    if n_arr.size == 0:
        return np.zeros(0)
    bad = (n_arr < 1) | (c_arr < 0) | (c_arr > n_arr) | (k < 1) | (k > n_arr)
    if bad.any():
        j = int(np.argmax(bad))
        _check_nck(int(n_arr[j]), int(c_arr[j]), k)
    n_max = int(n_arr.max())
    # table[m] = S(m) for m in 0..n_max; S(m) = 0 for m <= k.
    terms = np.zeros(n_max + 1)
    i = np.arange(k + 1, n_max + 1)
    terms[k + 1 :] = np.log1p(-k / i)
    table = np.cumsum(terms)
    sure = (n_arr - c_arr) < k
    log_fail = table[n_arr] - table[np.maximum(n_arr - c_arr, 0)]
    out = -np.expm1(log_fail)
    out[c_arr == 0] = 0.0  # exactly, not -0.0
    out[sure] = 1.0
    return out


def _as_arrays(per_problem: PerProblem) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(int(n), int(c)) for n, c in per_problem]
    if not pairs:
        raise UserError("metrics: per_problem is empty; need at least one (n, c) pair")
    arr = np.asarray(pairs, dtype=np.int64)
    n, c = arr[:, 0], arr[:, 1]
    bad = (n < 1) | (c < 0) | (c > n)
    if bad.any():
        j = int(np.argmax(bad))
        raise UserError(f"metrics: problem {j} has (n={n[j]}, c={c[j]}); need n >= 1 and 0 <= c <= n")
    return n, c


def avg_at_k(per_problem: PerProblem) -> float:
    """Mean accuracy: c/n per problem, averaged over problems (Avg@n; unbiased for Avg@k, any k <= n)."""
    n, c = _as_arrays(per_problem)
    return float(np.mean(c / n))


def default_ks(n: int) -> list[int]:
    """1, 2, 4, … up to n, plus n itself when it is not a power of two."""
    n = int(n)
    if n < 1:
        raise UserError(f"metrics: n={n} samples; need n >= 1")
    ks = [1 << e for e in range(n.bit_length()) if (1 << e) <= n]
    if ks[-1] != n:
        ks.append(n)
    return ks


def logged_names(n: int) -> list[str]:
    """The metric names an evaluation with n samples per problem logs (eval.jsonl `metrics`): those
    `summarise` gives with the ks the evaluation runner uses, read off a one-problem summary."""
    return list(summarise([(int(n), 0)], default_ks(n)))


def summarise(per_problem: PerProblem, ks: Iterable[int] | None = None) -> dict[str, float]:
    """{"avg@<n>": …, "pass@<k>": … for each k}; n is the sample count (the smallest, if problems differ).

    ks defaults to `default_ks(n)`.
    """
    n, c = _as_arrays(per_problem)
    n_min = int(n.min())
    ks = default_ks(n_min) if ks is None else sorted({int(k) for k in ks})
    for k in ks:
        if not 1 <= k <= n_min:
            raise UserError(f"metrics: k={k} but some problems have only n={n_min} samples; need 1 <= k <= n")
    out = {f"avg@{n_min}": float(np.mean(c / n))}
    for k in ks:
        out[f"pass@{k}"] = float(np.mean(pass_at_k_many(n, c, k)))
    return out


def _per_problem_values(per_problem: PerProblem, k: int | None) -> np.ndarray:
    """Per-problem contributions to the metric: c/n for Avg (k=None), Pass@k otherwise."""
    n, c = _as_arrays(per_problem)
    if k is None:
        return c / n
    return pass_at_k_many(n, c, k)


def _check_ci_args(iters: int, alpha: float) -> None:
    if int(iters) < 1:
        raise UserError(f"bootstrap: iters={iters}; need iters >= 1")
    if not 0.0 < float(alpha) < 1.0:
        raise UserError(f"bootstrap: alpha={alpha}; need 0 < alpha < 1 (0.05 gives a 95% interval)")


def bootstrap_ci(
    per_problem: PerProblem,
    k: int | None,
    iters: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval over problems for Pass@k (k=None: for Avg@n).

    Problems are resampled with replacement; samples within a problem are not (their uncertainty
    is already in the per-problem estimate). Returns (low, high) at level 1 − alpha.
    """
    _check_ci_args(iters, alpha)
    values = _per_problem_values(per_problem, k)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(int(iters), values.size))
    means = values[idx].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def pooled_estimate(runs: Sequence[PerProblem], k: int | None) -> float:
    """Pass@k (k=None: Avg@n) averaged over runs, e.g. over training seeds."""
    return float(np.mean(_run_matrix(runs, k)))


def _run_matrix(runs: Sequence[PerProblem], k: int | None) -> np.ndarray:
    if not runs:
        raise UserError("bootstrap: no runs given; need at least one run's per_problem list")
    rows = [_per_problem_values(r, k) for r in runs]
    sizes = {r.size for r in rows}
    if len(sizes) != 1:
        raise UserError(
            f"bootstrap: runs have different problem counts {sorted(sizes)}; pooling needs every run "
            "scored on the same problems in the same order"
        )
    return np.vstack(rows)


def bootstrap_ci_pooled(
    runs: Sequence[PerProblem],
    k: int | None,
    iters: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval for a metric pooled over several runs (seeds) of one configuration.

    Scheme (two-level bootstrap, problems crossed with runs): each iteration draws R runs with
    replacement and, independently, P problems with replacement; the same problem draw is used for
    every drawn run because all runs answer the same benchmark questions, which keeps the
    within-problem correlation between runs. The statistic is the mean over the drawn cells. The
    interval thus widens both with seed-to-seed spread and with problem-to-problem spread.
    """
    _check_ci_args(iters, alpha)
    matrix = _run_matrix(runs, k)  # runs × problems
    r, p = matrix.shape
    rng = np.random.default_rng(seed)
    means = np.empty(int(iters))
    for it in range(int(iters)):
        ri = rng.integers(0, r, size=r)
        pi = rng.integers(0, p, size=p)
        means[it] = matrix[np.ix_(ri, pi)].mean()
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_diff_pooled(
    runs_a: Sequence[PerProblem],
    runs_b: Sequence[PerProblem],
    k: int | None,
    iters: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(estimate, low, high) of metric(a) − metric(b), paired over problems, pooled over runs.

    As `bootstrap_ci_pooled`, for a difference: each iteration draws one set of problems for both
    sides (they answer the same questions, so the pairing removes problem difficulty from the noise)
    and, independently per side, runs with replacement (seed-to-seed spread). A side may be a single
    run (e.g. the starting model), whose spread is then its problem-level and sampling noise alone.
    """
    _check_ci_args(iters, alpha)
    a, b = _run_matrix(runs_a, k), _run_matrix(runs_b, k)
    if a.shape[1] != b.shape[1]:
        raise UserError(f"bootstrap: the sides have {a.shape[1]} and {b.shape[1]} problems; pairing needs the same problems")
    rng = np.random.default_rng(seed)
    p = a.shape[1]
    diffs = np.empty(int(iters))
    for it in range(int(iters)):
        pi = rng.integers(0, p, size=p)
        ra, rb = rng.integers(0, a.shape[0], size=a.shape[0]), rng.integers(0, b.shape[0], size=b.shape[0])
        diffs[it] = a[np.ix_(ra, pi)].mean() - b[np.ix_(rb, pi)].mean()
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return float(a.mean() - b.mean()), float(low), float(high)
