"""The re-ranker's report: which constraints bound, which were relaxed and why, in words."""

from __future__ import annotations

from serve.constraints import Constraints, Goal, GroupCount, Pin
from serve.rerank import GoalReranker
from tests.serve.rerank_cases import catalogue
from tests.serve.rerank_reference import passes_goal


def test_infeasible_goal_is_relaxed_and_explained() -> None:
    cands = catalogue()
    goal = Goal(kinds=["movie"], max_duration_minutes=30)  # no short movies exist
    assert not any(passes_goal(c, goal) for c in cands)  # no list can keep the goal
    res = GoalReranker().rerank(cands, 10, Constraints(goal=goal, min_new_share=0.2))
    assert len(res.items) == 10
    relaxed = {c.family for c in res.relaxed}
    assert relaxed == {"goal"}
    assert "only 0 of 10 candidates match" in res.explanation
    news = sum(c.is_new for c in cands if c.item_id in {i.item_id for i in res.items})
    assert news >= 2  # the lower-priority new-title share still holds


def test_binding_constraints_are_reported() -> None:
    cands = catalogue()
    cons = Constraints(group_counts=[GroupCount(attribute="genre", value="drama", max=1)],
                       max_overexposed_share=0.5)
    res = GoalReranker().rerank(cands, 6, cons)
    by_name = {c.family: c for c in res.constraints}
    drama = by_name["group_count"]
    assert drama.value == 1 and drama.binding and drama.changed_ranking
    assert sum(c.genre == "drama" for c in cands if c.item_id in
               {i.item_id for i in res.items}) == 1
    assert "genre=drama <= 1" in res.explanation


def test_pins_blocks_and_missing_pins() -> None:
    cands = catalogue()
    worst = min(cands, key=lambda c: c.score).item_id
    best = max(cands, key=lambda c: c.score).item_id
    cons = Constraints(pinned=[Pin(item_id=worst, position=2), Pin(item_id="nope")],
                       blocked=[best])
    res = GoalReranker().rerank(cands, 5, cons)
    ids = [i.item_id for i in res.items]
    assert ids[1] == worst and best not in ids
    missing = [c for c in res.relaxed if c.name == "pin nope"]
    assert missing and "not among the candidates" in missing[0].message
