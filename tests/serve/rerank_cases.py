"""Re-ranking requests for the re-ranker's tests: hypothesis strategies for small candidate
sets (brute force enumerates every list of them) and their constraints, and a fixed catalogue.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from serve.constraints import Constraints, Diversity, Goal, GroupCount, Pin
from serve.rerank import Candidate
from tests.serve.rerank_reference import Problem

GENRES = ("drama", "comedy", "scifi")
KINDS = ("movie", "episode", "series")
SERIES = ("", "s1", "s2")
DOMAIN = {"genre": GENRES, "kind": KINDS, "series": SERIES[1:]}
PRESETS = (None, "short_episodes", "new_to_me", "new_releases", "movie_night")


@st.composite
def candidate_sets(draw: st.DrawFn) -> list[Candidate]:
    n = draw(st.integers(3, 7))
    return [Candidate(
        item_id=f"i{i}", score=draw(st.integers(-50, 50)) / 10 + i * 1e-4,
        genre=draw(st.sampled_from(GENRES)), kind=draw(st.sampled_from(KINDS)),
        series=draw(st.sampled_from(SERIES)), duration_s=draw(st.sampled_from((1200, 2700, 6000))),
        is_new=draw(st.booleans()), over_exposed=draw(st.booleans()),
        familiar=draw(st.booleans())) for i in range(n)]


@st.composite
def goals(draw: st.DrawFn) -> Goal:
    """A preset or none, refined by up to two explicit filters."""
    fields = draw(st.sets(st.sampled_from(("kinds", "genres", "exclude_genres", "max", "min",
                                           "new_to_me", "new_releases")), max_size=2))
    some = st.lists(st.sampled_from(GENRES), min_size=1, max_size=2, unique=True)
    extra: dict[str, object] = {
        "kinds": draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=2, unique=True)),
        "genres": draw(some), "exclude_genres": draw(some),
        "max_duration_minutes": draw(st.sampled_from((30, 60))),
        "min_duration_minutes": draw(st.sampled_from((30, 80))),
        "new_to_me": True, "new_releases": True}
    names = {"max": "max_duration_minutes", "min": "min_duration_minutes"}
    chosen = {names.get(f, f): extra[names.get(f, f)] for f in fields}
    return Goal(preset=draw(st.sampled_from(PRESETS)), **chosen)


@st.composite
def group_counts(draw: st.DrawFn) -> GroupCount:
    attribute = draw(st.sampled_from(("genre", "kind", "series")))
    low = draw(st.integers(0, 2))
    return GroupCount(attribute=attribute, value=draw(st.sampled_from(DOMAIN[attribute])),
                      min=low, max=draw(st.one_of(st.none(), st.integers(low, 3))))


@st.composite
def windows(draw: st.DrawFn) -> Diversity:
    window = draw(st.integers(2, 4))
    return Diversity(attribute=draw(st.sampled_from(("genre", "kind", "series"))),
                     max_items=draw(st.integers(1, window - 1)), window=window)


@st.composite
def constraint_sets(draw: st.DrawFn, ids: list[str]) -> Constraints:
    pinned_ids = draw(st.lists(st.sampled_from([*ids, "gone"]), max_size=2, unique=True))
    positions = draw(st.permutations([None, 1, 2, 3, 5]))
    pinned = [Pin(item_id=i, position=p) for i, p in zip(pinned_ids, positions, strict=False)]
    blocked = draw(st.lists(st.sampled_from([i for i in ids if i not in pinned_ids]),
                            max_size=2, unique=True))
    return Constraints(
        group_counts=draw(st.lists(group_counts(), max_size=2)),
        diversity=draw(st.lists(windows(), max_size=2)), pinned=pinned, blocked=blocked,
        goal=draw(st.one_of(st.none(), goals())),
        min_new_share=draw(st.sampled_from((None, 0.25, 0.5, 1.0))),
        max_overexposed_share=draw(st.sampled_from((None, 0.0, 0.5))))


def problems(data: st.DataObject) -> tuple[list[Candidate], int, Constraints, Problem]:
    """Candidates, k (at most 5: brute force stays cheap), constraints and their ``Problem``."""
    cands = data.draw(candidate_sets())
    cons = data.draw(constraint_sets([c.item_id for c in cands]))
    k = data.draw(st.integers(1, min(5, len(cands))))
    return cands, k, cons, Problem.of(cands, k, cons)


def catalogue(n: int = 60, seed: int = 0) -> list[Candidate]:
    """N titles over three genres with normal scores, every 7th new, every 5th over-exposed."""
    rng = np.random.default_rng(seed)
    return [Candidate(f"t{i}", float(rng.normal()), genre=GENRES[i % 3],
                      kind="episode" if i % 4 else "movie", duration_s=1500 if i % 2 else 6000,
                      is_new=i % 7 == 0, over_exposed=i % 5 == 0) for i in range(n)]
