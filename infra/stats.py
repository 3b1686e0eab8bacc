"""The few statistics an experiment report needs: intervals of rates and of their differences,
of means and of their differences, and the sign test of an interleaving preference.

Proportions use Wilson's score interval (good coverage at small counts and near 0 or 1, where
the textbook Wald interval fails) and Newcombe's hybrid score interval for a difference of two
(method 10 of Newcombe 1998, built from the two Wilson intervals). Means use the normal
approximation, the difference of two Welch's standard error. The interleaving preference is a
two-sided exact binomial (sign) test of the decided requests against 1/2, ties left out.
A rate per impression with users as the unit (what an A/B test that assigns users must use)
takes the delta method's interval of a ratio of per-user sums, from five sums over the users.
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


@dataclass(frozen=True)
class UserSums:
    """A rate per impression with users as the unit, as sums over the ``n`` users: of each
    user's numerator ``x`` and impressions ``y``, of ``x*x``, of ``x*y`` and of ``y*y``.
    """

    n: int
    x: float
    y: float
    xx: float
    xy: float
    yy: float

    @classmethod
    def of(cls, x: Sequence[float], y: Sequence[float]) -> UserSums:
        """The sums of per-user values."""
        xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        return cls(len(xs), float(xs.sum()), float(ys.sum()), float(xs @ xs), float(xs @ ys),
                   float(ys @ ys))


def ratio(s: UserSums, z: float = Z95) -> tuple[Estimate, float]:
    """``x/y`` with its delta-method normal interval (Deng et al., 2018), and the variance of
    the ratio; nan with fewer than two users or no impressions.
    """
    if s.n < 2 or s.y <= 0:
        return Estimate(math.nan, math.nan, math.nan), math.nan
    r, ybar = s.x / s.y, s.y / s.n
    # the users' residuals x - r*y sum to 0, so their sample variance is this over n - 1
    resid = max(s.xx - 2 * r * s.xy + r * r * s.yy, 0.0) / (s.n - 1)
    var = resid / (s.n * ybar * ybar)
    half = z * math.sqrt(var)
    return Estimate(r, r - half, r + half), var


def diff_ratios(a: UserSums, b: UserSums, z: float = Z95) -> Estimate:
    """``ratio(a) - ratio(b)`` for two independent groups of users, with the normal interval
    and the two-sided p-value. Unlike ``diff_proportions`` it does not treat a user's
    impressions as independent, which an A/B test that assigns users must not.
    """
    (ra, va), (rb, vb) = ratio(a, z), ratio(b, z)
    if math.isnan(ra.value) or math.isnan(rb.value):
        return Estimate(math.nan, math.nan, math.nan, None)
    d, se = ra.value - rb.value, math.sqrt(va + vb)
    p = (1.0 if d == 0 else 0.0) if se == 0 else float(2 * stats.norm.sf(abs(d) / se))
    return Estimate(d, d - z * se, d + z * se, p)


def diff_ratios_clustered(x1: Sequence[float], y1: Sequence[float], x2: Sequence[float],
                          y2: Sequence[float], z: float = Z95) -> Estimate:
    """``diff_ratios`` of per-user values: index ``i`` of ``x1``/``y1`` is one user's plays
    and impressions.
    """
    return diff_ratios(UserSums.of(x1, y1), UserSums.of(x2, y2), z)
