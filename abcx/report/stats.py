"""Means with 95% confidence intervals (Student t quantiles from scipy) and gap significance."""
from __future__ import annotations

import math

# Below this many runs a t interval over seeds rests on too few degrees of freedom to mean much
# (n = 2: t = 12.7, the interval spans most of the metric's range); the report says so.
FEW_RUNS = 3


def t975(df: float) -> float:
    """Two-sided 95% Student-t quantile t_{0.975, df}; NaN below one degree of freedom."""
    if df < 1:
        return math.nan
    # scipy.special's inverse t CDF: what scipy.stats.t.ppf calls, without importing all of scipy.stats
    # (seconds on a 2-core machine, for one quantile).
    from scipy.special import stdtrit

    return float(stdtrit(df, 0.975))


def mean_ci(values) -> tuple[float, float, int]:
    """(mean, 95% CI half-width, n) over the finite values; half-width NaN when n < 2."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(vals) / n
    if n < 2:
        return mean, math.nan, n
    var = sum((v - mean) ** 2 for v in vals) / (n - 1)
    return mean, t975(n - 1) * math.sqrt(var / n), n


def diff_ci(a, b) -> tuple[float, float]:
    """mean(a) - mean(b) and the Welch 95% CI half-width of that difference (NaN if either n < 2)."""
    ma, _, na = mean_ci(a)
    mb, _, nb = mean_ci(b)
    gain = ma - mb
    if na < 2 or nb < 2:
        return gain, math.nan
    va = sum((float(v) - ma) ** 2 for v in a if math.isfinite(float(v))) / (na - 1) / na
    vb = sum((float(v) - mb) ** 2 for v in b if math.isfinite(float(v))) / (nb - 1) / nb
    se2 = va + vb
    if se2 == 0:
        return gain, 0.0
    # Welch-Satterthwaite; it is at least min(na, nb) - 1 >= 1, and max() keeps rounding from going below.
    df = se2 ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    return gain, t975(max(1.0, df)) * math.sqrt(se2)
