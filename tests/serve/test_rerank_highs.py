"""The HiGHS wrapper the re-ranker solves with: matrix conversion, relaxation first, reuse."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from serve.highs import Coo, _highs, solve_milp


def test_coo_to_csc_sums_duplicates_like_scipy() -> None:
    rng = np.random.default_rng(0)
    row, col = rng.integers(0, 7, 60), rng.integers(0, 9, 60)
    a = Coo(row, col, rng.normal(size=60), (7, 9))
    start, index, value = a.to_csc()
    ref = sparse.csc_matrix((a.val, (row, col)), shape=(7, 9))
    ref.sum_duplicates()
    got = sparse.csc_matrix((value, index, start), shape=(7, 9))
    assert np.allclose(got.toarray(), ref.toarray())
    x = rng.normal(size=9)
    assert np.allclose(a.dot(x), ref @ x)


def _knapsack() -> tuple:
    """max x0 + x1 s.t. x0 + x1 <= 1.5: the LP optimum is fractional, the MILP's is 1."""
    a = Coo(np.array([0, 0]), np.array([0, 1]), np.ones(2), (1, 2))
    return np.array([-1.0, -1.0]), a, np.array([0.0]), np.array([1.5]), np.ones(2)


def test_fractional_relaxation_goes_to_branch_and_bound() -> None:
    sol = solve_milp(*_knapsack(), time_limit=1.0)
    assert sol.status == "optimal" and sol.how == "mip" and sol.x.sum() == 1.0
    c, a, lo, _, ub = _knapsack()
    sol = solve_milp(c, a, lo, np.array([2.0]), ub, time_limit=1.0)  # integral LP optimum
    assert sol.status == "optimal" and sol.how == "lp" and sol.duals is not None
    assert list(sol.x) == [1.0, 1.0]
    sol = solve_milp(c, a, np.array([3.0]), np.array([4.0]), ub, time_limit=1.0)
    assert sol.status == "infeasible" and sol.how == "lp"


def test_reused_solver_keeps_a_per_call_time_limit() -> None:
    """HiGHS compares time_limit with the run time summed over an object's life; a reused
    object must not start timing out once that sum passes the limit."""
    limit = 1e-3
    start = _highs().getRunTime()
    calls = 0
    while _highs().getRunTime() - start < 5 * limit or calls < 5:
        sol = solve_milp(*_knapsack(), time_limit=limit)
        assert sol.status == "optimal", f"call {calls}: {sol.status}"
        calls += 1
