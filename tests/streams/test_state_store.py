"""The user shards' versioned state store: a snapshot writes only the users it changed, and a
resume from any retained snapshot gives back exactly that snapshot's users.
"""

from __future__ import annotations

import copy
import json
import operator
from collections import Counter
from pathlib import Path

import pytest

from infra.synthetic import SyntheticWorld, WorldConfig
from streams.contract.fast_events import decode_event
from streams.contract.tokens import Vocab
from streams.flow import FlowSettings
from streams.records import Slice
from streams.shards import RESIDENT_SNAPSHOTS, ShardMap, UserShard
from streams.state_store import StateStore


def test_resume_gives_each_keys_newest_pickle_at_or_below_the_version(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.sqlite3")
    store.write(1, {"a": b"a1", "b": b"b1"})
    store.write(2, {"a": b"a2"})
    store.write(3, {"b": b"b3", "c": b"c3"})
    assert dict(store.resume(2)) == {"a": b"a2", "b": b"b1"}
    # Versions above the resumed one are gone: the next write reuses version 3.
    assert store.rows() == 3
    store.write(3, {"c": b"c3'"})
    assert dict(store.resume(3)) == {"a": b"a2", "b": b"b1", "c": b"c3'"}
    assert dict(store.resume(0)) == {}
    assert store.rows() == 0


def test_collapsing_old_versions_keeps_every_retained_resume_point(tmp_path: Path) -> None:
    keep = 4
    store = StateStore(tmp_path / "s.sqlite3", keep_versions=keep)
    expected: dict[int, dict[str, bytes]] = {}
    current: dict[str, bytes] = {}
    for version in range(1, 21):  # collapses at 4, 8, 12, 16, 20
        blobs = {f"k{(version * 7 + j) % 9}": f"{version}.{j}".encode() for j in range(2)}
        if version % 5 == 0:
            blobs["rare"] = f"rare{version}".encode()
        store.write(version, blobs)
        current.update(blobs)
        expected[version] = dict(current)
    assert store.rows() < sum(len(b) for b in expected.values())  # something was collapsed
    newest = 20
    for version in range(newest - keep, newest + 1):
        scratch = StateStore(tmp_path / f"copy{version}.sqlite3", keep_versions=keep)
        scratch.db.executemany("INSERT INTO state VALUES (?, ?, ?)",
                               store.db.execute("SELECT key, version, blob FROM state"))
        assert dict(scratch.resume(version)) == expected[version], version


def test_a_failed_write_leaves_the_previous_versions_intact(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.sqlite3")
    store.write(1, {"a": b"a1"})

    def broken():
        yield "b", b"b2"
        raise RuntimeError("pickling failed")

    class Blobs(dict):
        def items(self):  # type: ignore[override]
            return broken()

    with pytest.raises(RuntimeError):
        store.write(2, Blobs())
    assert dict(store.resume(2)) == {"a": b"a1"}


# ---- a user shard on a store ----------------------------------------------------------------
def _events(n_users: int, per_user: int) -> list:
    world = SyntheticWorld(WorldConfig(n_users=n_users, seed=3))
    return [decode_event(json.dumps(e).encode())[0] for e in world.events(per_user=per_user)]


def _slice(events: list, shard: str = "u00") -> Slice:
    return Slice(list(events), [0] * len(events), [(b"", None, 0, i) for i in range(len(events))],
                 shard)


def _shard(state: dict | None, state_dir: Path | None, vocab: Vocab) -> UserShard:
    return UserShard(vocab, FlowSettings().tokenizer(), {}, ShardMap("i", 4), state, state_dir)


def _users(shard: UserShard) -> dict[str, tuple]:
    """Each user's tokenizer state as the flow sees it (row, dedupe ids, watermark, held and
    open events), comparable across shards; users held only in the store are read back.
    """
    for user_id in list(shard.stored):
        shard.user(user_id)
    return {u: copy.deepcopy((UserShard.row(tok), tok.seen, tok.max_ts, tok.arrivals,
                              tok.provisional(), list(tok.recent)))
            for u, tok in sorted(shard.users.items())}


def test_a_snapshot_writes_only_the_users_touched_since_the_previous_one(tmp_path: Path) -> None:
    events = _events(60, 8)
    head, rest = events[:len(events) // 2], events[len(events) // 2:]
    vocab = Vocab()
    shard = _shard(None, tmp_path, vocab)
    shard.offer(_slice(head))
    first = shard.snapshot()
    assert set(first) == {"shard", "version", "dirty", "produced", "tokens"}
    n_users = len(shard.users)
    assert shard.store is not None and shard.store.rows() == n_users > 10
    two = sorted({e.user_id for e in rest} & set(shard.users))[:2]
    shard.offer(_slice([e for e in rest if e.user_id in two]))
    second = shard.snapshot()
    assert shard.store.rows() == n_users + 2
    assert second["version"] == first["version"] + 1
    assert not any(isinstance(v, bytes) for v in second.values())


def test_resuming_from_an_older_snapshot_gives_that_snapshots_users(tmp_path: Path) -> None:
    events = _events(40, 12)
    half = len(events) // 2
    vocab = Vocab()
    live = _shard(None, tmp_path / "store", vocab)
    reference = _shard(None, None, vocab)  # snapshots carry every user inline
    for shard in (live, reference):
        shard.offer(_slice(events[:half]))
    state_1, inline_1 = live.snapshot(), reference.snapshot()
    at_1 = _users(live)
    live.offer(_slice(events[half:]))
    live.snapshot()  # written, but (say) the epoch never committed: the process died
    resumed = _shard(state_1, tmp_path / "store", vocab)
    assert _users(resumed) == at_1 == _users(_shard(inline_1, None, vocab))
    # The resumed shard goes on exactly as one that never stopped.
    resumed.offer(_slice(events[half:]))
    reference.offer(_slice(events[half:]))
    assert _users(resumed) == _users(reference)
    assert resumed.take_rows().rows == reference.take_rows().rows
    assert resumed.snapshot()["version"] == state_1["version"] + 1


def test_an_inline_snapshot_moves_into_the_store(tmp_path: Path) -> None:
    events = _events(20, 5)
    vocab = Vocab()
    inline = _shard(None, None, vocab)
    inline.offer(_slice(events))
    state = inline.snapshot()
    moved = _shard(state, tmp_path, vocab)
    assert moved.store is None  # opened at the first slice, which names the shard
    moved.offer(_slice([]))
    moved.snapshot()
    assert moved.store is not None and moved.store.rows() == 20
    assert _users(_shard(moved.snapshot(), tmp_path, vocab)) == _users(inline)


def test_a_store_snapshot_without_the_state_directory_names_the_fix() -> None:
    with pytest.raises(ValueError, match="--recovery-dir"):
        _shard({"shard": "u00", "version": 3}, None, Vocab())


def test_idle_users_leave_memory_and_return_with_their_state(tmp_path: Path) -> None:
    events = _events(50, 10)
    half = len(events) // 2
    vocab = Vocab()
    live = _shard(None, tmp_path, vocab)
    reference = _shard(None, None, vocab)
    for shard in (live, reference):
        shard.offer(_slice(events[:half]))
        shard.take_rows()
    everyone = set(live.users)
    busy = Counter(e.user_id for e in events[half:]).most_common(1)[0][0]
    busy_events = [e for e in events[half:] if e.user_id == busy]
    rest = [e for e in events[half:] if e.user_id != busy]
    live.snapshot()
    for e in busy_events[:RESIDENT_SNAPSHOTS + 1]:  # one user active, snapshot after each
        for shard in (live, reference):
            shard.offer(_slice([e]))
            shard.take_rows()
        live.snapshot()
    assert len(busy_events) > RESIDENT_SNAPSHOTS + 1 and len(everyone) > 20
    assert set(live.users) == {busy}  # the idle ones were dropped from memory
    assert set(live.stored) == everyone | {busy}
    # They come back with their state: the same rows, tokens and state as never evicted.
    later = rest + busy_events[RESIDENT_SNAPSHOTS + 1:]
    later.sort(key=lambda e: e.ts)
    for shard in (live, reference):
        shard.offer(_slice(later))
        shard.finish()
    by_user = operator.itemgetter("user_id")
    assert sorted(live.take_rows().rows, key=by_user) == sorted(reference.take_rows().rows,
                                                                 key=by_user)
    by_event = operator.attrgetter("user_id", "ts", "event_id")
    assert sorted(live.take_tokens().tokens, key=by_event) == sorted(
        reference.take_tokens().tokens, key=by_event)
    assert _users(live) == _users(reference)
