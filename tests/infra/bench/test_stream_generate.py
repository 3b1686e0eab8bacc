"""The stream benchmark's events: N events from U users, and the world of the first users."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from infra.bench.stream import first_users, generate


def test_every_user_gets_events_per_user_and_half_the_users_are_a_smaller_world():
    events = generate(60, 6)
    users = Counter(orjson.loads(e)["user_id"] for e in events)
    assert len(events) == 60 and set(users.values()) == {10} and len(users) == 6
    assert first_users(events, 3) == generate(30, 3)  # same people, same events, same order


def test_more_users_than_events_names_the_fix():
    with pytest.raises(ValueError, match="--users between 1 and --events"):
        generate(10, 11)
