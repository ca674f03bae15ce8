"""Means with 95% confidence intervals (Student t; no scipy needed) and gap significance."""
from __future__ import annotations

import math

# Two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042]
_Z = 1.959964


def t975(df: float) -> float:
    if df < 1:
        return math.nan
    if df <= 30 and float(df).is_integer():
        return _T975[int(df) - 1]
    # Cornish-Fisher expansion of the t quantile around the normal one; error < 1e-3 for df > 30.
    return _Z + (_Z ** 3 + _Z) / (4 * df) + (5 * _Z ** 5 + 16 * _Z ** 3 + 3 * _Z) / (96 * df ** 2)


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
    df = se2 ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1)) if (va or vb) else na + nb - 2
    return gain, t975(max(1.0, math.floor(df))) * math.sqrt(se2)
