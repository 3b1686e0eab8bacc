"""The goal re-ranker against brute-force enumeration on small candidate sets (hypothesis):
the rules read straight from the request (``rerank_reference``), not from the re-ranker."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve.constraints import Constraints, Diversity, Goal, Pin
from serve.rerank import Candidate, GoalReranker, RerankConfig, RerankResult
from tests.serve.rerank_cases import candidate_sets, catalogue, goals, problems, windows
from tests.serve.rerank_reference import Problem, most_in_windows, passes_goal


def _check_list(got: RerankResult, prob: Problem) -> list[str]:
    """What holds for any answer: k distinct candidates with their own scores, slots 1..k, the
    objective their value, and exactly the broken families reported relaxed.
    """
    ids = [i.item_id for i in got.items]
    assert len(ids) == len(set(ids)) == prob.k and set(ids) <= set(prob.cands)
    assert [i.score for i in got.items] == [prob.cands[i].score for i in ids]
    assert [i.position for i in got.items] == list(range(1, prob.k + 1))
    assert got.objective == pytest.approx(prob.value(ids), abs=1e-9)
    assert {c.family for c in got.relaxed} == prob.broken(ids)
    assert got.feasible == (not prob.broken(ids))
    return ids


def _assert_joint_optimum(got: RerankResult, prob: Problem) -> None:
    """The least violation (none whenever some list keeps every rule), then the best value."""
    ids = _check_list(got, prob)
    viol, value = prob.optimum()
    assert prob.violations(ids) == viol
    assert prob.value(ids) == pytest.approx(value, abs=1e-9)


def _assert_best_set_best_order(got: RerankResult, prob: Problem) -> None:
    """Fast mode = best set under the count rules, then the best order of that set; the joint
    optimum when no order of that set keeps the windows. It relaxes a rule only when no list
    keeps them all.
    """
    ids = _check_list(got, prob)
    viol, value = prob.optimum()
    if viol == (0, 0, 0):
        assert prob.holds(ids)
    sets = [s for s in itertools.combinations(prob.cands, prob.k) if prob.selectable(s)]
    if not sets:
        assert viol != (0, 0, 0)  # a list that keeps every rule is a selectable set
        assert got.relaxed and "could not satisfy" in got.explanation
        return
    total = max(sum(prob.cands[i].score for i in s) for s in sets)
    best = prob.best_order(tuple(ids))
    if sum(prob.cands[i].score for i in ids) == pytest.approx(total, abs=1e-9) \
            and best is not None:
        assert prob.value(ids) == pytest.approx(best, abs=1e-9)  # a best set, best ordered
    else:  # no order of the best set keeps the windows: the joint optimum decides
        assert prob.violations(ids) == viol
        assert prob.value(ids) == pytest.approx(value, abs=1e-9)


@pytest.mark.parametrize("route", ["core", "core-mip", "milp"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_exact_mode_matches_brute_force(route: str, data: st.DataObject) -> None:
    """Every route: the core one with the LP relaxation first (the default), the core one
    straight to branch and bound, and scipy.optimize.milp."""
    cands, k, cons, prob = problems(data)
    config = RerankConfig(mode="exact", solver=route.removesuffix("-mip"),
                          lp_first=route == "core")
    got = GoalReranker(config).rerank(cands, k, cons)
    _assert_joint_optimum(got, prob)
    assert got.exact


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_mode_is_optimal_stage_by_stage(data: st.DataObject) -> None:
    cands, k, cons, prob = problems(data)
    _assert_best_set_best_order(GoalReranker().rerank(cands, k, cons), prob)


@pytest.mark.parametrize("mode", ["fast", "exact"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_windows_alone_match_brute_force(mode: str, data: st.DataObject) -> None:
    """Only diversity windows, on lists of 3 to 5: where a window's max_items decides the list
    far more often than among every other rule."""
    cands = data.draw(candidate_sets())
    k = data.draw(st.integers(3, min(5, len(cands))))
    cons = Constraints(diversity=data.draw(st.lists(windows(), min_size=1, max_size=2)))
    prob = Problem.of(cands, k, cons)
    got = GoalReranker(RerankConfig(mode=mode)).rerank(cands, k, cons)
    check = _assert_joint_optimum if mode == "exact" else _assert_best_set_best_order
    check(got, prob)


@pytest.mark.parametrize("mode", ["fast", "exact"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_goal_holds_whenever_enough_candidates_pass_it(mode: str, data: st.DataObject) -> None:
    """The goal is relaxed only when fewer than k candidates pass it, and then every one that
    passes is in the list."""
    cands = data.draw(candidate_sets())
    goal = data.draw(goals())
    blocked = data.draw(st.lists(st.sampled_from([c.item_id for c in cands]), max_size=2,
                                 unique=True))
    k = data.draw(st.integers(1, len(cands) + 1))
    cons = Constraints(goal=goal, blocked=blocked)
    prob = Problem.of(cands, k, cons)
    got = GoalReranker(RerankConfig(mode=mode)).rerank(cands, k, cons)
    ids = _check_list(got, prob)
    passing = sorted((i for i, c in prob.cands.items() if passes_goal(c, goal)),
                     key=lambda i: -prob.cands[i].score)
    (report,) = [c for c in got.constraints if c.family == "goal"]
    if len(passing) >= prob.k:
        assert not report.relaxed and got.feasible
        assert ids == passing[:prob.k]  # the best that pass, best first
    else:
        assert report.relaxed and set(passing) <= set(ids)
        assert f"only {len(passing)} of {prob.k} candidates match" in got.explanation


def test_the_reference_reads_windows_goals_and_pins() -> None:
    """The brute-force reference itself, on lists worked out by hand."""
    def cand(i: int, genre: str, familiar: bool = False) -> Candidate:
        return Candidate(f"i{i}", float(-i), genre=genre, familiar=familiar)

    cands = [cand(0, "a"), cand(1, "a"), cand(2, "b"), cand(3, "a", familiar=True)]
    two_in_three = Constraints(diversity=[Diversity(attribute="genre", max_items=2, window=3)])
    prob = Problem.of(cands, 4, two_in_three)
    assert prob.holds(["i0", "i1", "i2", "i3"])  # a a b a: two a in every 3 slots
    assert prob.violations(["i0", "i1", "i3", "i2"]) == (0, 0, 1)  # a a a b
    new = Problem.of(cands, 2, Constraints(goal=Goal(preset="new_to_me"),
                                           pinned=[Pin(item_id="i2", position=1)]))
    assert new.violations(["i3", "i0"]) == (2, 1, 0)  # pin missing: not in, not at 1
    assert new.violations(["i0", "i2"]) == (1, 0, 0)  # in, not at 1
    assert new.optimum() == ((0, 0, 0), -2.0)  # i2 (score -2) then i0 (score 0)
    far = Problem.of(cands, 2, Constraints(pinned=[Pin(item_id="i3", position=3)]))
    assert far.unreachable_pins and far.broken(["i0", "i1"]) == {"pin"}
    assert most_in_windows(5, 3, 2) == 4 and most_in_windows(4, 2, 1) == 2


def test_plain_sort_when_nothing_binds() -> None:
    cands = catalogue()
    res = GoalReranker().rerank(cands, 10)
    scores = sorted((c.score for c in cands), reverse=True)[:10]
    assert [i.score for i in res.items] == scores
    assert res.solver_calls == 0 and res.objective == res.baseline_objective
    assert res.explanation == "the score order satisfies every constraint"


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_a_window_that_only_a_lower_scored_item_can_fill_is_kept(mode: str) -> None:
    """The best set {i3, i2, i0} has no order keeping "1 genre per 2 slots" with i0 pinned
    second, but {i3, i0, i4} does (comedy, drama, comedy): fast mode must not relax the window,
    and exact mode must not prune i4 as dominated by the better dramas."""
    def cand(i: int, score: float, genre: str) -> Candidate:
        return Candidate(f"i{i}", score, genre=genre, kind="movie", duration_s=1200)

    cands = [cand(0, 0.0, "drama"), cand(1, 1e-4, "drama"), cand(2, 2e-4, "drama"),
             cand(3, 3e-4, "comedy"), cand(4, -0.0996, "comedy")]
    cons = Constraints(diversity=[Diversity(attribute="genre", max_items=1, window=2)],
                       pinned=[Pin(item_id="i0", position=2)], blocked=["i1"])
    got = GoalReranker(RerankConfig(mode=mode)).rerank(cands, 3, cons)
    assert [i.item_id for i in got.items] == ["i3", "i0", "i4"]
    assert got.feasible and not got.relaxed


def test_diversity_windows_hold_in_fast_mode() -> None:
    cands = catalogue(90, seed=3)
    cons = Constraints(diversity=[Diversity(attribute="genre", max_items=1, window=3)])
    res = GoalReranker().rerank(cands, 12, cons)
    genres = [next(c.genre for c in cands if c.item_id == i.item_id) for i in res.items]
    assert all(len(set(genres[t:t + 3])) == 3 for t in range(10))
    assert res.feasible


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_a_window_holds_up_to_max_items_of_a_group(mode: str) -> None:
    """At most 2 dramas in any 3 slots: the two best dramas may sit side by side."""
    cands = [Candidate(f"i{i}", 10.0 - i, genre=g) for i, g in enumerate(
        ["drama", "drama", "drama", "comedy", "drama", "scifi", "comedy"])]
    cons = Constraints(diversity=[Diversity(attribute="genre", max_items=2, window=3)])
    got = GoalReranker(RerankConfig(mode=mode)).rerank(cands, 5, cons)
    ids = [i.item_id for i in got.items]
    assert ids == ["i0", "i1", "i3", "i2", "i4"] and got.feasible
    assert Problem.of(cands, 5, cons).optimum() == ((0, 0, 0), pytest.approx(got.objective))


def test_bad_input_raises_value_error() -> None:
    with pytest.raises(ValueError, match="not finite"):
        GoalReranker().rerank([Candidate("a", float("nan"))], 1)
    with pytest.raises(ValueError, match="at least one"):
        GoalReranker().rerank([Candidate("a", 1.0)], 0)
