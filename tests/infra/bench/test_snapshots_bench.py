"""``marquee bench snapshots``: the store's snapshot hands Bytewax a version, not the users."""

from __future__ import annotations

import pytest

from infra.bench.snapshots import SnapshotSpec, run_bench


def test_the_store_snapshot_is_small_and_the_inline_one_carries_every_user() -> None:
    inline, store = run_bench(SnapshotSpec(users=300, events_per_user=4, shards=4))
    assert inline["users"] == store["users"] > 250
    assert inline["touched_bytes"] > 300 * 200  # every user's pickle, again
    assert store["touched_bytes"] < 1_000  # four {shard, version} dicts
    assert inline["touched_bytes"] >= inline["first_bytes"] * 0.9
    assert inline["resident_users"] == inline["users"]
    assert store["resident_users"] < store["users"] * 0.2  # the 10% active, rounded up


def test_the_spec_names_the_fix() -> None:
    with pytest.raises(ValueError, match="--touched"):
        SnapshotSpec(touched=0)
