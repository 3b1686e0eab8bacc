"""The simulated audience's reactions (no service): valid contract events carrying the
ranking's request_id, deterministic per seed, position bias and tastes that show in the
rates, and the bench's fixed-horizon decision rule."""

from __future__ import annotations

import random

import pytest

from infra.audience import Behaviour, Member, attraction, members, react
from infra.bench.experiments import BenchConfig, needed, run_interleave
from infra.synthetic import SyntheticWorld, WorldConfig
from streams.contract.events import InteractionEvent

WORLD = SyntheticWorld(WorldConfig(seed=3, n_users=20, days=4, n_movies=60, n_series=8))
TITLES = {t.item_id: t for t in WORLD.catalogue}
CROWD = members(WORLD)
NOW = WORLD.config.start_ms + 5 * 86_400_000


def _fan(genre: str) -> Member:
    """A member who likes ``genre`` only and has seen nothing."""
    return Member("u-fan", "tv", {g: (1.0 if g == genre else 0.02) for g in
                                  {t.genre for t in WORLD.catalogue}},
                  {t.item_id: 1.0 for t in WORLD.catalogue}, frozenset(), frozenset())


def test_members_are_the_worlds_users_as_their_history_left_them():
    again = members(SyntheticWorld(WORLD.config))
    assert again == CROWD and len(CROWD) == 20
    assert all(max(m.affinity.values()) == 1.0 for m in CROWD)
    assert all(e in TITLES for m in CROWD for e in m.next_episodes)
    assert any(m.seen for m in CROWD) and any(m.next_episodes for m in CROWD)


def test_reactions_are_contract_events_with_the_request_id_and_repeat_per_seed():
    items = [t.item_id for t in WORLD.catalogue[:10]]
    shown = []
    for n in range(200):
        member = CROWD[n % len(CROWD)]
        events = react(member, items, TITLES, random.Random(n), now_ms=NOW,
                       request_id=f"{n:032x}", event_prefix=f"t{n}")
        assert events == react(member, items, TITLES, random.Random(n), now_ms=NOW,
                               request_id=f"{n:032x}", event_prefix=f"t{n}")
        assert [e["item_id"] for e in events[:10]] == items  # every item shown, in order
        assert {e["action"] for e in events[:10]} == {"impression"}
        assert len({e["event_id"] for e in events}) == len(events)
        plays = [e for e in events if e["action"] == "play"]
        assert len(plays) <= Behaviour().max_plays
        for e in events:
            InteractionEvent.model_validate(e)
            assert e["request_id"] == f"{n:032x}" and e["user_id"] == member.user_id
        ends = [e for e in events if e["action"] in ("complete", "stop")]
        assert [e["item_id"] for e in ends] == [e["item_id"] for e in plays]
        assert all(0 < e["watch_seconds"] <= TITLES[e["item_id"]].duration_s for e in ends)
        shown.append(len(plays))
    assert 0 < sum(shown) < 200 * 2


def _plays_at(member: Member, item: str, slot: int, trials: int = 3000) -> float:
    filler = [t.item_id for t in WORLD.catalogue if t.item_id != item][:9]
    items = filler[:slot] + [item] + filler[slot:]
    rng = random.Random(slot)
    hits = sum(any(e["action"] == "play" and e["item_id"] == item
                   for e in react(member, items, TITLES, rng)) for _ in range(trials))
    return hits / trials


def test_position_bias_and_taste_show_in_the_play_rates():
    liked = WORLD.catalogue[0]
    fan, other = _fan(liked.genre), _fan(next(t.genre for t in WORLD.catalogue
                                                 if t.genre != liked.genre))
    top, bottom = _plays_at(fan, liked.item_id, 0), _plays_at(fan, liked.item_id, 9)
    assert top > 2 * bottom > 0
    assert _plays_at(fan, liked.item_id, 0) > 3 * _plays_at(other, liked.item_id, 0)
    assert attraction(fan, liked, Behaviour()) > attraction(other, liked, Behaviour())


def test_the_bench_decides_by_fixed_horizons_and_interleaving_finds_the_better_list():
    cfg = BenchConfig(first=10, factor=2.0, max_requests=100)
    assert cfg.horizons() == [10, 20, 40, 80]
    traces = [[(0.5, True), (0.001, True), (0.001, True), (0.001, True)],
              [(0.5, True), (0.5, True), (0.001, False), (0.001, True)]]
    assert needed(traces, cfg.horizons(), 0.01) == 20  # half the seeds
    assert needed(traces, cfg.horizons(), 0.01, share=1.0) == 80
    assert needed([[(0.5, True)] * 4], cfg.horizons(), 0.01) is None
    # a list of each member's liked titles against the same titles reversed
    good = {m.user_id: sorted(TITLES, key=lambda i, m=m: -attraction(m, TITLES[i],
                                                                      Behaviour()))[:10]
            for m in CROWD}
    bad = {u: items[::-1] for u, items in good.items()}
    trace = run_interleave(CROWD, {"strong": good, "weak": bad}, TITLES, 0,
                           BenchConfig(first=400, max_requests=400), Behaviour())
    ((p, strong_ahead),) = trace["interleave"]
    assert strong_ahead and p < 0.01


@pytest.mark.parametrize("spread", [0.0, 0.3])
def test_user_clustered_ab_interval(spread: float):
    from infra import stats

    rng = random.Random(1)
    users = [min(0.9, max(0.01, 0.3 + rng.uniform(-spread, spread))) for _ in range(200)]
    x = [sum(rng.random() < p for _ in range(20)) for p in users]
    y = [20] * len(users)
    clustered = stats.diff_ratios_clustered(x[:100], y[:100], x[100:], y[100:])
    flat = stats.diff_proportions(sum(x[:100]), 2000, sum(x[100:]), 2000)
    assert clustered.value == pytest.approx(flat.value)
    width, flat_width = clustered.high - clustered.low, flat.high - flat.low
    if spread:  # users differ: impressions are not independent, the honest interval is wider
        assert width > 1.2 * flat_width
    else:
        assert width == pytest.approx(flat_width, rel=0.2)
