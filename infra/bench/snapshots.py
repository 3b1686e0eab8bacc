"""What a recovery snapshot of the user shards costs, with and without the state store.

The users of a generated stream go into the flow's user shards; then a share of them is
touched and every shard snapshotted, as an epoch would. Without a state directory the snapshot
carries every user's pickle, which Bytewax pickles again and writes to its SQLite partition
(done here the same way, to a file of its own); with one, the shards write the touched users
to their stores and Bytewax gets a version number. The sinks' debts (rows, tokens) are
drained first, as the flow's flushes do. The same share of users stays active for a few
epochs: with the store, the others leave memory (``resident_users``).
"""

from __future__ import annotations

import json
import pickle
import resource
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.synthetic import SyntheticWorld, WorldConfig
from streams.contract.fast_events import decode_event
from streams.contract.tokens import Vocab
from streams.flow import FlowSettings
from streams.records import Slice
from streams.shards import RESIDENT_SNAPSHOTS, ShardMap, UserShard


@dataclass(frozen=True)
class SnapshotSpec:
    """The shards' population and the share of users an epoch touches."""

    users: int = 20_000
    events_per_user: int = 10
    shards: int = 16
    touched: float = 0.1

    def __post_init__(self) -> None:
        if self.users < 1 or self.events_per_user < 1 or self.shards < 1:
            raise ValueError("--users, --events-per-user and --shards must be >= 1")
        if not 0 < self.touched <= 1:
            raise ValueError("--touched is a share of the users: give a value in (0, 1]")


def _filled(spec: SnapshotSpec, state_dir: Path | None) -> dict[str, UserShard]:
    world = SyntheticWorld(WorldConfig(n_users=spec.users))
    shard_of, vocab, config = ShardMap("u", spec.shards), Vocab(), FlowSettings().tokenizer()
    by_shard: dict[str, list[Any]] = {}
    for raw in world.events(per_user=spec.events_per_user):
        event = decode_event(json.dumps(raw).encode())[0]
        by_shard.setdefault(shard_of(raw["user_id"]), []).append(event)
    shards = {}
    for name, events in by_shard.items():
        shard = shards[name] = UserShard(vocab, config, {}, ShardMap("i", spec.shards), None,
                                         state_dir)
        shard.offer(Slice(events, [0] * len(events), [(b"", None, 0, 0)] * len(events), name))
    return shards


def _snapshot(shards: dict[str, UserShard], partition: sqlite3.Connection) -> tuple[float, int]:
    """Every shard's snapshot, pickled and written as Bytewax does; (seconds, bytes)."""
    for shard in shards.values():
        shard.dirty, shard.produced, shard.tokens = {}, [], []  # the flushes drain these
    start, size = time.perf_counter(), 0
    partition.execute("BEGIN")
    for name, shard in shards.items():
        blob = pickle.dumps(shard.snapshot())
        size += len(blob)
        partition.execute("INSERT INTO snaps VALUES (?, ?)", (name, blob))
    partition.execute("COMMIT")
    return time.perf_counter() - start, size


def measure(spec: SnapshotSpec, store: bool) -> dict[str, Any]:
    """Snapshot seconds and bytes handed to Bytewax, first (every user new) and after
    ``spec.touched`` of the users changed.
    """
    with tempfile.TemporaryDirectory(prefix="marquee-snapshots-") as tmp:
        shards = _filled(spec, Path(tmp) / "users" if store else None)
        partition = sqlite3.connect(Path(tmp) / "part.sqlite3", isolation_level=None)
        partition.execute("PRAGMA journal_mode=WAL")
        partition.execute("CREATE TABLE snaps (key TEXT, state BLOB)")
        first_s, first_bytes = _snapshot(shards, partition)
        active = {name: list(shard.users)[:max(1, round(len(shard.users) * spec.touched))]
                  for name, shard in shards.items()}
        touched_s = touched_bytes = 0.0
        for _ in range(RESIDENT_SNAPSHOTS + 1):  # the same users active epoch after epoch
            for name, shard in shards.items():
                for user_id in active[name]:
                    shard.user(user_id)
                shard.pickles.touched.update(active[name])
            touched_s, touched_bytes = _snapshot(shards, partition)
        partition.close()
        return {"store": store, "users": sum(len(s.stored) or len(s.users)
                                             for s in shards.values()),
                "resident_users": sum(len(s.users) for s in shards.values()),
                "first_s": first_s, "first_bytes": first_bytes, "touched_s": touched_s,
                "touched_bytes": touched_bytes,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_bench(spec: SnapshotSpec) -> list[dict[str, Any]]:
    """Both ways, inline first."""
    return [measure(spec, store=False), measure(spec, store=True)]
