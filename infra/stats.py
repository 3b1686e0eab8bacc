"""The few statistics an experiment report needs: intervals of rates and of their differences,
of means and of their differences, and the sign test of an interleaving preference.

Proportions use Wilson's score interval (good coverage at small counts and near 0 or 1, where
the textbook Wald interval fails) and Newcombe's hybrid score interval for a difference of two
(method 10 of Newcombe 1998, built from the two Wilson intervals). Means use the normal
approximation, the difference of two Welch's standard error. The interleaving preference is a
two-sided exact binomial (sign) test of the decided requests against 1/2, ties left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

Z95 = float(stats.norm.ppf(0.975))


@dataclass(frozen=True)
class Estimate:
    """A value with its interval (and a p-value, for a difference)."""

    value: float
    low: float
    high: float
    p: float | None = None


def wilson(k: int, n: int, z: float = Z95) -> Estimate:
    """``k`` successes of ``n``: the share and its Wilson score interval (nan for n = 0)."""
    if n <= 0:
        return Estimate(math.nan, math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends: no rounding past p
    high = 1.0 if k == n else min(1.0, centre + half)
    return Estimate(p, low, high)


def diff_proportions(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> Estimate:
    """``k1/n1 - k2/n2`` with Newcombe's hybrid score interval and the two-sided p-value of
    the pooled two-proportion z-test.
    """
    if n1 <= 0 or n2 <= 0:
        return Estimate(math.nan, math.nan, math.nan, None)
    a, b = wilson(k1, n1, z), wilson(k2, n2, z)
    d = a.value - b.value
    low = d - math.sqrt((a.value - a.low) ** 2 + (b.high - b.value) ** 2)
    high = d + math.sqrt((a.high - a.value) ** 2 + (b.value - b.low) ** 2)
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    p = 1.0 if se == 0 else float(2 * stats.norm.sf(abs(d) / se))
    return Estimate(d, low, high, p)


def mean(total: float, total_sq: float, n: int, z: float = Z95) -> tuple[Estimate, float]:
    """The mean of ``n`` values from their sum and sum of squares, with its normal interval;
    and the values' variance (sample, n - 1).
    """
    if n <= 0:
        return Estimate(math.nan, math.nan, math.nan), math.nan
    m = total / n
    var = max(total_sq - n * m * m, 0.0) / (n - 1) if n > 1 else 0.0
    half = z * math.sqrt(var / n)
    return Estimate(m, m - half, m + half), var


def diff_means(m1: float, v1: float, n1: int, m2: float, v2: float, n2: int,
               z: float = Z95) -> Estimate:
    """``m1 - m2`` with Welch's standard error, its normal interval and two-sided p-value."""
    if n1 <= 0 or n2 <= 0:
        return Estimate(math.nan, math.nan, math.nan, None)
    d = m1 - m2
    se = math.sqrt(v1 / n1 + v2 / n2)
    p = (1.0 if d == 0 else 0.0) if se == 0 else float(2 * stats.norm.sf(abs(d) / se))
    return Estimate(d, d - z * se, d + z * se, p)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial p-value of ``wins`` out of ``wins + losses`` against 1/2."""
    n = wins + losses
    if n == 0:
        return 1.0
    return float(stats.binomtest(wins, n, 0.5, alternative="two-sided").pvalue)


def diff_ratios_clustered(x1: Sequence[float], y1: Sequence[float], x2: Sequence[float],
                          y2: Sequence[float], z: float = Z95) -> Estimate:
    """``sum(x1)/sum(y1) - sum(x2)/sum(y2)`` where each index is one cluster (a user: their
    plays and impressions), with the delta-method standard error of each ratio (Deng et al.,
    2018) and the two-sided normal p-value. Unlike ``diff_proportions`` it does not treat a
    user's impressions as independent, which an A/B test that assigns users must not.
    """
    parts = []
    for x, y in ((x1, y1), (x2, y2)):
        xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        n = len(xs)
        if n < 2 or ys.sum() <= 0:
            return Estimate(math.nan, math.nan, math.nan, None)
        r, ybar = xs.sum() / ys.sum(), ys.mean()
        var = float((xs - r * ys).var(ddof=1)) / (n * ybar * ybar)
        parts.append((float(r), var))
    d, se = parts[0][0] - parts[1][0], math.sqrt(parts[0][1] + parts[1][1])
    p = (1.0 if d == 0 else 0.0) if se == 0 else float(2 * stats.norm.sf(abs(d) / se))
    return Estimate(d, d - z * se, d + z * se, p)
