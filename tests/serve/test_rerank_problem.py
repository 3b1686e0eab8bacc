"""The problem's rules and their evaluation against slow, obvious implementations."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from serve.constraints import Diversity
from serve.rerank_problem import Pool, build_rules, evaluate, goal_mask, window_cap
from tests.serve.rerank_cases import candidate_sets, constraint_sets, goals
from tests.serve.rerank_reference import most_in_windows, passes_goal


def _slow_values(order: list[int], rules: list, pool: Pool) -> list[float]:
    """``evaluate`` the obvious way: counts by loop, windows slot by slot."""
    out = []
    for r in rules:
        if r.family == "pin":
            out.append(float(r.pin_item in order and (r.pin_pos is None
                                                      or order.index(r.pin_item) == r.pin_pos)))
        elif r.family == "diversity":
            codes = [int(pool.codes[r.attribute][i]) for i in order]
            out.append(float(max((sum(c == g for c in codes[t:t + r.window])
                                  for t in range(len(codes)) for g in set(codes) if g >= 0),
                                 default=0)))
        else:
            out.append(float(sum(bool(r.mask[i]) for i in order)))
    return out


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_evaluate_matches_slow_reference(data: st.DataObject) -> None:
    cands = data.draw(candidate_sets())
    cons = data.draw(constraint_sets([c.item_id for c in cands]))
    pool = Pool.build(cands, set(cons.blocked))
    order = data.draw(st.permutations(range(len(pool))))[:data.draw(st.integers(0, len(pool)))]
    window = data.draw(st.integers(2, 6))
    cons = cons.model_copy(update={"diversity": [
        Diversity(attribute=data.draw(st.sampled_from(("genre", "kind", "series"))),
                  max_items=data.draw(st.integers(1, window - 1)), window=window)]})
    rules = build_rules(cons, pool, max(1, len(order)))
    assert evaluate(list(order), rules, pool) == _slow_values(list(order), rules, pool)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_goal_mask_matches_the_reference(data: st.DataObject) -> None:
    cands = data.draw(candidate_sets())
    goal = data.draw(goals())
    pool = Pool.build(cands, set())
    assert goal_mask(goal, pool).tolist() == [passes_goal(c, goal) for c in pool.cands]


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 10), window=st.integers(2, 6), data=st.data())
def test_window_cap_is_the_most_one_group_can_fill(k: int, window: int,
                                                    data: st.DataObject) -> None:
    most = data.draw(st.integers(1, window - 1))
    assert window_cap(most, window, k) == most_in_windows(k, window, most)
