"""The ordering stage's exact reductions against their definitions and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serve.constraints import Constraints
from serve.rerank import position_weights
from serve.rerank_order import bound_pruning, order_pruning
from serve.rerank_problem import Pool, build_rules
from tests.serve.rerank_cases import problems
from tests.serve.rerank_reference import Problem


def _slow_bound_pruning(scores: np.ndarray, weights: np.ndarray, lower: float) -> np.ndarray:
    """Move item r to slot p in the score order, evaluate, compare: the definition."""
    k = len(scores)
    out = np.zeros((k, k), dtype=bool)
    for r in range(k):
        for p in range(k):
            order = [i for i in range(k) if i != r]
            order.insert(p, r)
            out[r, p] = float(weights @ scores[order]) >= lower - 1e-9 * max(1.0, abs(lower))
    return out


@settings(max_examples=100, deadline=None)
@given(k=st.integers(1, 9), data=st.data())
def test_bound_pruning_matches_its_definition(k: int, data: st.DataObject) -> None:
    scores = np.sort(np.array(data.draw(st.lists(st.integers(-40, 40), min_size=k,
                                                  max_size=k))) / 8.0)[::-1].copy()
    w = position_weights(k, data.draw(st.sampled_from(("dcg", "linear"))))
    # thresholds at, just above and below every achievable "one item moved" value
    values = sorted({float(w @ scores[[i for i in range(k) if i != r][:p] + [r]
                                      + [i for i in range(k) if i != r][p:]])
                     for r in range(k) for p in range(k)})
    lower = data.draw(st.sampled_from(values)) + data.draw(st.sampled_from((0.0, 1e-6, -1e-6)))
    assert (bound_pruning(scores, w, lower) == _slow_bound_pruning(scores, w, lower)).all()


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_order_pruning_keeps_an_optimal_order(data: st.DataObject) -> None:
    """The best order of the top k under windows and positional pins uses allowed pairs only."""
    cands, k, cons, prob = problems(data)
    pool = Pool.build(cands, set(cons.blocked))
    items = np.arange(prob.k)
    ids = tuple(pool.cands[i].item_id for i in items)
    rules = [r for r in build_rules(cons, pool, prob.k) if r.family == "diversity" or (
        r.family == "pin" and r.pin_pos is not None and r.pin_item < prob.k)]
    allowed = order_pruning(items, prob.k, rules, pool, windows_hold=True)
    kept = [p for p in cons.pinned if p.item_id in ids and p.position is not None
            and p.position <= prob.k]
    order_only = Problem.of([prob.cands[i] for i in ids], prob.k,
                            Constraints(diversity=cons.diversity, pinned=kept))
    fits = [list(o) for o in itertools.permutations(ids) if order_only.holds(list(o))]
    within = [o for o in fits if all(allowed[ids.index(i), p] for p, i in enumerate(o))]
    assert bool(fits) == bool(within)
    if fits:
        assert max(map(order_only.value, within)) == pytest.approx(
            max(map(order_only.value, fits)), abs=1e-9)
