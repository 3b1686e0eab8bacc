"""Per-user state sizes, growth per users, and one user's state as their history grows."""

from __future__ import annotations

import json

import pytest

from infra.bench.stream_memory import (
    growth_per,
    history_curve,
    in_memory,
    pickled,
    state_sizes,
)
from infra.synthetic import SyntheticWorld, WorldConfig
from streams.contract.fast_events import decode_event
from streams.contract.merge import TokenizerConfig
from streams.contract.tokenizer import UserTokenizer
from streams.contract.tokens import Vocab


def _raw(world: SyntheticWorld, n: int) -> list[bytes]:
    return [json.dumps(e).encode() for e in world.events(n)]


def test_state_sizes_summarise_each_users_tokenizer():
    vocab, users = Vocab(), {}
    for raw in _raw(SyntheticWorld(WorldConfig(n_users=5)), 300):
        ev = decode_event(raw)[0]
        tok = users.setdefault(ev.user_id, UserTokenizer(ev.user_id, vocab, TokenizerConfig()))
        tok.offer(ev)
    sizes = {u: len(pickled(t)) for u, t in users.items()}
    got = state_sizes(users, sizes)
    assert got.users == len(users) and got.bytes_total == sum(sizes.values())
    assert got.bytes_max == max(sizes.values())
    assert got.events_mean == pytest.approx(300 / len(users))
    assert got.recent_max == max(len(t.recent) for t in users.values())


def test_growth_is_bytes_per_100k_more_users():
    assert growth_per(50_000, 400e6, 100_000, 500e6) == pytest.approx(200e6)
    with pytest.raises(ValueError, match="larger run"):
        growth_per(100, 1.0, 100, 2.0)


def test_one_users_state_stops_growing_with_their_history():
    world = SyntheticWorld(WorldConfig(n_users=1, days=400))
    curve = history_curve(iter(_raw(world, 4000)), (100, 2000, 4000))
    assert [c["events"] for c in curve] == [100, 2000, 4000]
    assert curve[-1]["recent"] == TokenizerConfig().recent_tokens  # the row's bound is reached
    # past the bound, twice the history costs no more state (a little slack for held events)
    assert curve[-1]["pickled_bytes"] < 1.2 * curve[1]["pickled_bytes"]
    assert curve[0]["pickled_bytes"] < curve[1]["pickled_bytes"]


def test_in_memory_size_counts_the_objects_a_pickle_becomes():
    small, big = pickled(list(range(10))), pickled([str(i) * 20 for i in range(10_000)])
    assert 0 < in_memory(small) < 2_000
    assert in_memory(big) > 10_000 * 60  # each of the 10,000 strings is at least 60 bytes
