"""The report's statistics against published values and scipy's own routines."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sp

from infra import stats


def test_wilson_interval_matches_newcombe_1998():
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553 to 0.3662;
    # 15/148 -> 0.0624 to 0.1605; 0/20 -> 0 to 0.1611.
    for (k, n), (low, high) in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605),
                                (0, 20): (0.0, 0.1611)}.items():
        e = stats.wilson(k, n)
        assert (round(e.low, 4), round(e.high, 4)) == (low, high)


@given(st.integers(1, 5000), st.data())
def test_wilson_agrees_with_scipy(n, data):
    k = data.draw(st.integers(0, n))
    ci = sp.binomtest(k, n).proportion_ci(0.95, method="wilson")
    e = stats.wilson(k, n)
    assert e.low == pytest.approx(ci.low, abs=1e-9) and e.high == pytest.approx(ci.high, abs=1e-9)
    assert e.low <= k / n <= e.high


def test_difference_interval_matches_newcombe_method_10():
    # Newcombe (1998), Statistics in Medicine 17:873, table II, example (a): 56/70 - 48/80
    # -> 0.2000, hybrid score interval 0.0524 to 0.3339.
    d = stats.diff_proportions(56, 70, 48, 80)
    assert round(d.value, 4) == 0.2 and (round(d.low, 4), round(d.high, 4)) == (0.0524, 0.3339)
    # The pooled z-test is the uncorrected chi-square test of the 2x2 table.
    chi2 = sp.chi2_contingency([[56, 14], [48, 32]], correction=False)
    assert d.p == pytest.approx(chi2.pvalue, rel=1e-9) and d.p == pytest.approx(0.00805, abs=1e-5)


def test_sign_test_known_values():
    assert stats.sign_test(0, 0) == 1.0
    assert stats.sign_test(9, 1) == pytest.approx(22 / 1024)  # 2 * (1 + 10) / 2^10
    assert stats.sign_test(5, 5) == 1.0
    assert stats.sign_test(61, 39) == pytest.approx(0.0352, abs=5e-4)


def test_means_and_their_difference():
    values_a = [0.0, 10.0, 20.0, 30.0]
    a, var_a = stats.mean(sum(values_a), sum(v * v for v in values_a), 4)
    assert a.value == 15 and var_a == pytest.approx(166.6667, rel=1e-6)
    assert a.high - a.value == pytest.approx(stats.Z95 * math.sqrt(var_a / 4))
    b, var_b = stats.mean(20.0, 100.0, 4)
    assert (b.value, var_b, b.low, b.high) == (5, 0, 5, 5)
    d = stats.diff_means(a.value, var_a, 4, b.value, var_b, 4)
    assert d.value == 10 and d.p == pytest.approx(2 * sp.norm.sf(10 / math.sqrt(var_a / 4)))
    assert math.isnan(stats.wilson(0, 0).value)
