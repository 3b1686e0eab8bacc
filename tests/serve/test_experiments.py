"""A/B allocation and team-draft interleaving: properties over generated users and rankings."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from serve.experiments import allocate, team_draft, unit

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = st.lists(st.floats(0.05, 100), min_size=1, max_size=6)
RANKINGS = st.lists(st.integers(0, 40), unique=True, max_size=30)


@settings(max_examples=12, deadline=None)
@given(weights=WEIGHTS, salt=st.text(min_size=1, max_size=12))
def test_allocation_proportions_are_within_tolerance(weights, salt) -> None:
    n = 10_000
    got = Counter(allocate(salt, f"u{i:06d}", weights) for i in range(n))
    total = sum(weights)
    for arm, w in enumerate(weights):
        share = w / total
        sd = math.sqrt(share * (1 - share) / n)
        assert abs(got[arm] / n - share) <= 5 * sd + 1e-9, (arm, got, weights)
    assert set(got) <= set(range(len(weights)))


@given(user=st.text(min_size=1, max_size=40), salt=st.text(min_size=1, max_size=12),
       weights=WEIGHTS)
def test_allocation_is_stable_and_in_range(user, salt, weights) -> None:
    arm = allocate(salt, user, weights)
    assert 0 <= arm < len(weights)
    assert all(allocate(salt, user, list(weights)) == arm for _ in range(3))
    assert 0.0 <= unit(salt, user) < 1.0


def test_allocation_is_the_same_in_another_process() -> None:
    """No per-process hash seed: a fresh interpreter (another PYTHONHASHSEED) agrees."""
    users = [f"u{i}" for i in range(50)]
    here = [allocate("exp-1", u, [1, 2, 3]) for u in users]
    code = ("from serve.experiments import allocate; "
            f"print([allocate('exp-1', u, [1, 2, 3]) for u in {users!r}])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONHASHSEED": "12345"}, check=True, cwd=ROOT)
    assert out.stdout.strip() == str(here)


def test_a_new_salt_reshuffles_users() -> None:
    users = [f"u{i}" for i in range(2000)]
    a = [allocate("first", u, [1, 1]) for u in users]
    b = [allocate("second", u, [1, 1]) for u in users]
    same = sum(x == y for x, y in zip(a, b, strict=True)) / len(users)
    assert 0.45 < same < 0.55  # independent: half agree by chance


@settings(max_examples=300, deadline=None)
@given(a=RANKINGS, b=RANKINGS, seed=st.integers(0, 10**6), limit=st.none() | st.integers(0, 40))
def test_team_draft_properties(a, b, seed, limit) -> None:
    out = team_draft(a, b, seed, limit)
    items = [i for i, _ in out]
    assert len(items) == len(set(items))  # no duplicates
    union = set(a) | set(b)
    assert len(out) == min(len(union), len(union) if limit is None else limit)
    lists = (a, b)
    for item, team in out:
        assert item in lists[team]  # every item from the list of the team that placed it
    for team in (0, 1):  # a team picks in its own list's order
        picked = [i for i, t in out if t == team]
        assert picked == sorted(picked, key=lists[team].index)
    counts = [0, 0]
    for n, (item, team) in enumerate(out):
        left_a = [x for x in a if x not in items[:n]]
        left_b = [x for x in b if x not in items[:n]]
        if left_a and left_b:  # both could pick: the team behind picks, never more than 1 ahead
            assert counts[team] <= counts[1 - team]
            # a pick is the team's best item not yet shown
            assert item == (left_a if team == 0 else left_b)[0]
        counts[team] += 1
        if left_a and left_b:
            assert abs(counts[0] - counts[1]) <= 1
    assert out == team_draft(a, b, seed, limit)  # reproducible from the seed


@settings(max_examples=100, deadline=None)
@given(a=RANKINGS, seed=st.integers(0, 10**6))
def test_interleaving_a_ranking_with_itself_keeps_it(a, seed) -> None:
    assert [i for i, _ in team_draft(a, a, seed)] == a


@given(a=RANKINGS, b=RANKINGS, seed=st.integers(0, 10**6))
def test_without_fill_it_stops_when_a_ranking_runs_out(a, b, seed) -> None:
    out = team_draft(a, b, seed, fill=False)
    counts = Counter(t for _, t in out)
    assert abs(counts[0] - counts[1]) <= 1
    full = team_draft(a, b, seed)
    assert full[:len(out)] == out


def test_teams_share_the_first_slot_evenly_over_requests() -> None:
    first = Counter(team_draft(list(range(10)), list(range(10, 20)), f"r{i}")[0][1]
                    for i in range(4000))
    assert abs(first[0] - 2000) < 5 * math.sqrt(1000)  # a fair coin per request
