"""Item counters: the window sums kept as counts arrive equal a recount of the buckets, for
any order of counts (late ones, long jumps, eviction), and survive pickling, also from a
state pickled before the sums were kept.
"""

from __future__ import annotations

import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.item_stats import BUCKET_MS, DAY, HOUR, ItemCounter

T0 = 1_700_000_000_000


def recount(counter: ItemCounter) -> tuple[int, int, int, int]:
    """(plays 1 h, plays 24 h, impressions 24 h, clicks 24 h) from the buckets themselves."""
    day = [c for b, c in counter.buckets.items() if b > counter.newest - DAY]
    hour = [c for b, c in counter.buckets.items() if b > counter.newest - HOUR]
    return (sum(c[0] for c in hour), sum(c[0] for c in day), sum(c[1] for c in day),
            sum(c[2] for c in day))


def figures(counter: ItemCounter) -> tuple[int, int, int, int]:
    row = counter.row()
    clicks = counter.sums[2]  # the row carries clicks only as a CTR
    assert row["ctr_24h"] == (clicks / row["impressions_24h"] if row["impressions_24h"] else 0)
    return row["plays_1h"], row["plays_24h"], row["impressions_24h"], clicks


steps = st.lists(st.tuples(st.integers(0, 2),  # column
                           st.integers(-2 * DAY, 3 * HOUR),  # minutes from the newest
                           st.booleans()), max_size=120)  # a pickle round trip first


@settings(max_examples=300, deadline=None)
@given(steps)
def test_sums_equal_a_recount(moves: list[tuple[int, int, bool]]) -> None:
    counter, newest = ItemCounter("t1"), T0
    for column, minutes, round_trip in moves:
        if round_trip:
            counter = pickle.loads(pickle.dumps(counter))
        ts = newest + minutes * BUCKET_MS
        newest = max(newest, ts)
        counter.count(column, ts)
        assert figures(counter) == recount(counter)
        assert counter.row()["event_timestamp"] == (counter.newest + 1) * BUCKET_MS


def test_long_jumps_and_eviction() -> None:
    counter = ItemCounter("t1")
    for minute in range(0, 3 * DAY, 7):
        counter.count(minute % 3, T0 + minute * BUCKET_MS)
        assert figures(counter) == recount(counter)
    assert len(counter.buckets) <= DAY
    assert counter.count(0, T0 + 10 * DAY * BUCKET_MS)  # a jump past every stored bucket
    assert figures(counter) == (1, 1, 0, 0)
    assert not counter.count(1, T0)  # outside every window now


def test_a_state_pickled_without_sums_is_recounted() -> None:
    counter = ItemCounter("t1")
    for minute in (0, 5, 50, 70, 500):
        counter.count(0, T0 + minute * BUCKET_MS)
        counter.count(1, T0 + minute * BUCKET_MS)
    old = pickle.loads(pickle.dumps(counter))
    del old.__dict__["sums"], old.__dict__["plays_1h"]  # the earlier layout
    restored = pickle.loads(pickle.dumps(old))
    assert figures(restored) == figures(counter) == recount(counter)
