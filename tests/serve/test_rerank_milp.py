"""The re-ranker's MILP: its warm start, and what happens when HiGHS finds nothing in time."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import serve.rerank_milp as rm
from serve.constraints import Constraints, Diversity
from serve.highs import Solution
from serve.rerank import GoalReranker, RerankConfig, position_weights
from serve.rerank_milp import Model
from serve.rerank_order import order_pruning
from serve.rerank_problem import Pool, build_rules
from tests.serve.rerank_cases import catalogue


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_time_limit_without_a_solution_degrades_instead_of_failing(
        mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A MILP that finds nothing before the time limit still yields a full list, flagged as
    not exact (fault injected at the solver wrapper: HiGHS cannot be made to time out on cue).
    """
    monkeypatch.setattr(rm, "solve_milp",
                        lambda *a, **kw: Solution("time_limit", None, "mip"))
    monkeypatch.setattr(rm, "solve_lexicographic",
                        lambda *a, **kw: [Solution("time_limit", None, "mip")])
    cands = catalogue(90, seed=3)
    cons = Constraints(diversity=[Diversity(attribute="genre", max_items=1, window=3)],
                       min_new_share=0.5)
    res = GoalReranker(RerankConfig(mode=mode)).rerank(cands, 12, cons)
    assert len(res.items) == 12 and len({i.item_id for i in res.items}) == 12
    assert not res.exact and "time limit" in res.explanation


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), window=st.integers(2, 4))
def test_ordering_from_the_staircase_basis_finds_the_same_optimum(seed: int,
                                                                  window: int) -> None:
    """The warm start only changes where simplex begins (k=12: too big for brute force, so the
    cold model is the reference)."""
    pool = Pool.build(catalogue(40, seed), set())
    k = 12
    rules = build_rules(Constraints(diversity=[Diversity(attribute="genre", max_items=1,
                                                         window=window)]), pool, k)
    items = np.arange(k)
    w = position_weights(k)
    got = []
    for staircase in (False, True):
        model = Model(pool, items, k, k, w, rules, [], place_all=True, staircase=staircase,
                      allowed=order_pruning(items, k, rules, pool, windows_hold=True))
        order = model.solve(strict=True)
        got.append(None if order is None else float(w @ pool.scores[order]))
    assert got[0] == pytest.approx(got[1], abs=1e-9) if got[0] is not None else got[1] is None
