"""Set selection's exact shortcuts against the brute-force reference."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from serve.rerank_problem import Pool, build_rules, count_rows
from serve.rerank_select import quick_infeasible, top_k_holds
from tests.serve.rerank_cases import problems


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_shortcuts_agree_with_the_sets_that_keep_every_count(data: st.DataObject) -> None:
    """"Infeasible" only when no set keeps every count; "the top k hold" only when they do."""
    cands, k, cons, prob = problems(data)
    pool = Pool.build(cands, set(cons.blocked))
    rules = build_rules(cons, pool, prob.k)
    rows = count_rows(rules, pool, prob.k)
    pins = np.zeros(len(pool), dtype=bool)
    pins[[r.pin_item for r in rules if r.family == "pin"]] = True
    if quick_infeasible(rows, len(pool), prob.k, pins):
        assert not any(prob.selectable(s) for s in itertools.combinations(prob.cands, prob.k))
    top = tuple(c.item_id for c in sorted(prob.cands.values(), key=lambda c: -c.score))
    assert top_k_holds(rows, prob.k) == prob.selectable(top[:prob.k])
