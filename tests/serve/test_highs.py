"""The HiGHS wrapper the re-ranker solves with: matrix conversion, relaxation first, reuse."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from serve.highs import Coo, _highs, solve_milp


def test_coo_to_csc_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    cells = rng.choice(7 * 9, size=40, replace=False)
    row, col = cells // 9, cells % 9
    a = Coo(row, col, rng.normal(size=40), (7, 9))
    start, index, value = a.to_csc()
    got = sparse.csc_matrix((value, index, start), shape=(7, 9))
    ref = sparse.csc_matrix((a.val, (row, col)), shape=(7, 9))
    assert np.array_equal(got.toarray(), ref.toarray())
    x = rng.normal(size=9)
    assert np.allclose(a.dot(x), ref @ x)


def test_duplicate_entries_are_an_error_not_a_wrong_model() -> None:
    a = Coo(np.array([0, 0]), np.array([1, 1]), np.ones(2), (1, 2))
    sol = solve_milp(np.array([-1.0, -1.0]), a, np.array([0.0]), np.array([1.0]), np.ones(2),
                     time_limit=1.0)
    assert sol.status == "error"


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


def test_a_model_without_columns_is_decided_not_an_error() -> None:
    empty = Coo(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), (1, 0))
    ok = solve_milp(np.zeros(0), empty, np.array([0.0]), np.array([1.0]), np.zeros(0), 1.0)
    bad = solve_milp(np.zeros(0), empty, np.array([1.0]), np.array([1.0]), np.zeros(0), 1.0)
    assert ok.status == "optimal" and bad.status == "infeasible"
