from collections import Counter, defaultdict

import pytest

from infra.synthetic import SyntheticWorld, WorldConfig
from streams.contract.events import validate_event
from streams.contract.tokens import DAY_MS

CONFIG = WorldConfig(seed=3, n_users=150, days=20)


@pytest.fixture(scope="module")
def events():
    return list(SyntheticWorld(CONFIG).events())


def test_deterministic_by_seed(events):
    again = list(SyntheticWorld(CONFIG).events(limit=2000))
    assert again == events[:2000]
    other = list(SyntheticWorld(WorldConfig(seed=4, n_users=150, days=20)).events(limit=2000))
    assert other != again


def test_every_event_meets_the_contract_and_ids_are_unique(events):
    assert all(validate_event(e)[1] == [] for e in events)
    assert len({e["event_id"] for e in events}) == len(events)


def test_stream_is_in_timestamp_order(events):
    assert all(a["ts"] <= b["ts"] for a, b in zip(events, events[1:]))


def test_impressions_come_before_clicks_before_plays(events):
    by_session = defaultdict(list)
    for e in events:
        by_session[e["session_id"]].append(e)
    checked = 0
    for session in by_session.values():
        for i, e in enumerate(session):
            if e["action"] == "play" and e["surface"] not in ("player/autoplay",):
                before = [x["action"] for x in session[:i] if x["item_id"] == e["item_id"]]
                assert "click" in before and "impression" in before
                checked += 1
    assert checked > 100


def test_binges_follow_episode_order(events):
    """The sequential signal: after episode e, the next episode played of that series is e+1."""
    last = {}
    follows = total = 0
    for e in events:
        if e["action"] != "play" or not e["item_id"].startswith("s"):
            continue
        key = (e["user_id"], e["item_id"][:5])
        episode = int(e["item_id"][6:])
        if key in last:
            total += 1
            follows += episode == last[key] + 1
        last[key] = episode
    assert total > 100 and follows / total > 0.6


def test_devices_have_habits(events):
    hours = defaultdict(Counter)
    for e in events:
        hours[e["device"]][(e["ts"] // 3_600_000) % 24] += 1
    tv_evening = sum(hours["tv"][h] for h in range(19, 24)) + sum(hours["tv"][h] for h in range(3))
    assert tv_evening / sum(hours["tv"].values()) > 0.6


def test_titles_released_mid_stream_get_watched(events):
    world = SyntheticWorld(CONFIG)
    new = {t.item_id for t in world.catalogue if t.release_ms > CONFIG.start_ms + DAY_MS}
    played = {e["item_id"] for e in events if e["action"] == "play"}
    assert new and len(new & played) >= 0.3 * len(new)
    release = {t.item_id: t.release_ms for t in world.catalogue}
    assert all(e["ts"] >= release[e["item_id"]] for e in events if e["item_id"] in release)


def test_satisfaction_depends_on_taste(events):
    """Completion varies a lot by user-genre pair: the action facet carries taste."""
    world = SyntheticWorld(CONFIG)
    genre = {t.item_id: t.genre for t in world.catalogue}
    outcome = defaultdict(Counter)
    for e in events:
        if e["action"] in ("complete", "stop"):
            outcome[(e["user_id"], genre[e["item_id"]])][e["action"]] += 1
    rates = [c["complete"] / (c["complete"] + c["stop"]) for c in outcome.values()
             if c.total() >= 5]
    assert min(rates) < 0.4 and max(rates) > 0.8


def test_per_user_keeps_every_users_first_events_in_time_order():
    world = SyntheticWorld(WorldConfig(seed=3, n_users=40, days=20))
    got = list(world.events(per_user=5))
    by_user = defaultdict(list)
    for ev in got:
        by_user[ev["user_id"]].append(ev)
    assert len(by_user) == 40 and all(len(evs) == 5 for evs in by_user.values())
    assert [e["ts"] for e in got] == sorted(e["ts"] for e in got)
    full = defaultdict(list)
    for ev in SyntheticWorld(WorldConfig(seed=3, n_users=40, days=20)).events():
        full[ev["user_id"]].append(ev)
    assert all(full[u][:5] == evs for u, evs in by_user.items())
    # a smaller world's users are the same people: the first 10 users' events are unchanged
    small = list(SyntheticWorld(WorldConfig(seed=3, n_users=10, days=20)).events(per_user=5))
    assert small == [e for e in got if int(e["user_id"][1:]) < 10]
