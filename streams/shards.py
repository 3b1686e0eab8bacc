"""The flow's keyed state in plain Python: the users of one shard, the items of one shard.

Bytewax keeps one state per key and calls it once per key per activation; keyed by user,
that is one Python call (and one snapshot) per user per poll batch, ~5000 calls a second.
Here a key is a *shard* (``u07``: every user whose id hashes to 7): one call per shard and
batch runs a plain loop over its events. A user always hashes to the same shard, so each
user still has exactly one tokenizer, whatever the number of workers or Kafka partitions.

Snapshots pickle only the users (items) touched since the previous snapshot. With a state
directory (set next to the recovery partitions by ``streams.launch``) a user shard writes those
pickles to its ``streams.state_store`` and its snapshot is a version number, so the cost of a
snapshot and the memory it needs follow the traffic, not the number of users; without one the
snapshot carries every user's pickle (the bytes of untouched users are reused).
"""

from __future__ import annotations

import math
import operator
import pickle
import time
import zlib
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streams import metrics, refusals
from streams.contract.catalogue import Title
from streams.contract.merge import TokenizerConfig
from streams.contract.tokenizer import UserTokenizer
from streams.contract.tokens import FACETS, Token, Vocab
from streams.item_stats import COLUMNS, ItemCounter
from streams.records import DeadLetter, ItemRows, Slice, TokenBatch, UserRows
from streams.state_store import StateStore

SEQ_NAMES = [f"{facet}_seq" for facet in FACETS]
_COLUMN_OF = {action.value: column for action, column in COLUMNS.items()}
_N_EVENTS = operator.attrgetter("n_events")
# With a state store, a user untouched for this many snapshots leaves memory (the store has
# their state; their next event reads it back): memory follows the active users.
RESIDENT_SNAPSHOTS = 3


class ShardMap:
    """Stable key -> shard name (``<prefix><nn>``), the same in every process and run."""

    def __init__(self, prefix: str, shards: int) -> None:
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self.prefix = prefix
        self.names = [f"{prefix}{i:02d}" for i in range(shards)]
        self.cache: dict[str, str] = {}

    def __call__(self, key: str) -> str:
        """The shard of ``key`` (crc32, cached: keys repeat)."""
        name = self.cache.get(key)
        if name is None:
            if len(self.cache) > 1_000_000:
                self.cache.clear()
            name = self.cache[key] = self.names[zlib.crc32(key.encode()) % len(self.names)]
        return name


class FlushPacer:
    """When the next online flush may happen (one per process, shared by all shards).

    Flushes sit on a wall-clock grid of ``flush_s`` so that every shard flushes in the same
    activation (one Feast write per worker, not one per shard). Under load a flush writes
    more rows and costs more, so the next one is pushed back until flushing (row building
    plus writes) takes at most ``share`` of the time: a backlog is then written with more
    coalescing instead of row by row, and at the produced rate the grid is kept.
    """

    def __init__(self, share: float = 0.5) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.share = share
        self.tick = 0.0  # the grid point being flushed
        self.cost = 0.0  # seconds spent on it so far
        self.last = 0.0  # seconds the previous tick cost

    def spent(self, seconds: float, tick: float | None = None) -> None:
        """Count ``seconds`` of flush work against ``tick`` (None: the current one)."""
        if tick is not None and tick != self.tick:
            self.tick, self.last, self.cost = tick, self.cost, 0.0
        self.cost += seconds

    def next_tick(self, flush_s: float, now: float | None = None) -> float:
        """The next grid point (epoch seconds) at which a flush may start."""
        now = time.time() if now is None else now
        wait = max(self.last, self.cost) * (1 - self.share) / self.share
        start = now + max(wait - flush_s, 0.0)
        return (math.floor(start / flush_s) + 1) * flush_s


PACER = FlushPacer(share=0.5)


class _Pickles:
    """Per-entity pickles for snapshots: re-pickle what was touched, reuse the rest."""

    def __init__(self, blobs: dict[str, bytes] | None = None) -> None:
        self.blobs = blobs or {}
        self.touched: set[str] = set()

    def snapshot(self, live: Mapping[str, Any]) -> dict[str, bytes]:
        for key in self.touched:
            self.blobs[key] = pickle.dumps(live[key], protocol=pickle.HIGHEST_PROTOCOL)
        self.touched.clear()
        return dict(self.blobs)  # a copy: later changes must not leak into this snapshot


class UserShard:
    """The tokenizers of one shard's users and what they owe the sinks: the rows of users
    whose sequence changed, and final tokens not yet in the token log.
    """

    def __init__(self, vocab: Vocab, config: TokenizerConfig, durations: Mapping[str, int],
                 item_shard: ShardMap, state: dict[str, Any] | None = None,
                 state_dir: Path | None = None) -> None:
        self.vocab, self.config, self.durations = vocab, config, durations
        self.item_shard = item_shard
        self.state_dir = state_dir
        self.store: StateStore | None = None
        self.version = 0
        self.stored: dict[str, int] = {}  # user -> newest version in the store
        self.written: deque[list[str]] = deque()  # users written by each recent snapshot
        self.loaded: list[str] = []  # users read back since the last snapshot
        state = state or {}
        self.users: dict[str, UserTokenizer] = {}
        inline = state.get("users", {})
        for user_id, blob in inline.items():
            self._load(user_id, blob)
        self.pickles = _Pickles(dict(inline))
        if "version" in state:
            if state_dir is None:
                raise ValueError("this snapshot keeps its users in a state directory: run the "
                                 "flow with the same --recovery-dir (marquee flow sets "
                                 "MARQUEE_FLOW_STATE_DIR next to it)")
            self._open(state["shard"], state["version"])
        self.dirty: dict[str, None] = dict.fromkeys(state.get("dirty", ()))  # rows owed
        self.produced: list[int] = list(state.get("produced", ()))
        self.tokens: list[Token] = list(state.get("tokens", ()))  # owed to the token log
        # Accepted events that carry a request_id (the experiment join takes them after each
        # offer); None: the join is off and offer does not look.
        self.outcomes: list[Any] | None = None

    def _load(self, user_id: str, blob: bytes) -> None:
        tok = pickle.loads(blob)
        tok.attach(self.vocab, self.durations)
        self.users[user_id] = tok

    def _open(self, shard: str, version: int) -> None:
        """Open this shard's state store at ``version`` (0: a fresh shard) and load its users;
        users held inline (a snapshot without a store) are written at the next snapshot.
        """
        assert self.state_dir is not None
        self.store = StateStore(self.state_dir / f"{shard}.sqlite3")
        self.shard, self.version = shard, version
        self.stored = self.store.versions(version)
        self.pickles.touched.update(self.pickles.blobs)
        self.pickles.blobs = {}

    def user(self, user_id: str) -> UserTokenizer | None:
        """``user_id``'s tokenizer: in memory, or read back from the store (None: new)."""
        tok = self.users.get(user_id)
        if tok is None and user_id in self.stored:
            assert self.store is not None
            blob = self.store.read(user_id)
            assert blob is not None, f"{user_id} is in the state store's index but not in it"
            self._load(user_id, blob)
            self.loaded.append(user_id)
            tok = self.users[user_id]
        return tok

    def offer(self, sl: Slice) -> tuple[list[DeadLetter], dict[str, list[tuple[str, int, int]]]]:
        """Tokenize a slice; returns the refusals (late, duplicate) and the accepted events
        that count for item stats, as ``(item_id, column, ts)`` per item shard.
        """
        if self.store is None and self.state_dir is not None:
            self._open(sl.shard, 0)
        users, dirty, touched = self.users, self.dirty, self.pickles.touched
        produced, tokens = self.produced, self.tokens
        n_before = len(tokens)
        refused: list[DeadLetter] = []
        counts: list[tuple[str, int, int]] = []
        stored, outcomes = self.stored, self.outcomes
        for i, ev in enumerate(sl.events):
            user_id = ev.user_id
            tok = users.get(user_id)
            if tok is None and user_id in stored:
                tok = self.user(user_id)
            if tok is None:
                tok = users[user_id] = UserTokenizer(user_id, self.vocab, self.config,
                                                     self.durations)
            out, reason = tok.offer(ev)  # type: ignore[arg-type]
            touched.add(user_id)
            if reason is not None:
                raw, key, partition, offset = sl.origins[i]
                problem = (refusals.duplicate(ev.event_id, tok.seen[ev.event_id])
                           if reason == refusals.DUPLICATE else refusals.late(
                               ev.ts, user_id, tok.max_ts or ev.ts, self.config.max_lateness_ms))
                refused.append(DeadLetter(reason, (problem,), raw, key, partition, offset,
                                          sl.produced[i]))
                continue
            dirty[user_id] = None
            produced.append(sl.produced[i])
            column = _COLUMN_OF.get(ev.action._value_)  # by value: Enum hashing is slow
            if column is not None and ev.item_id:
                counts.append((ev.item_id, column, ev.ts))
            if outcomes is not None and ev.request_id is not None:
                outcomes.append(ev)
            if out:
                tokens.extend(out)
        counted: dict[str, list[tuple[str, int, int]]] = {}
        shard_of = self.item_shard
        for entry in counts:
            counted.setdefault(shard_of(entry[0]), []).append(entry)
        released = tokens[n_before:]
        metrics.EVENTS_VALID.inc(len(sl.events) - len(refused))
        metrics.observe_tokens(len(released), sum(map(_N_EVENTS, released)))
        for dl in refused:
            metrics.EVENTS_INVALID.labels(reason=dl.reason).inc()
        return refused, counted

    def finish(self) -> None:
        """End of input: close every open token (replays)."""
        for user_id in self.stored.keys() - self.users.keys():
            self.user(user_id)
        for user_id, tok in self.users.items():
            if tok.buffer or tok.machine.drafts:
                out = tok.flush()
                metrics.observe_tokens(len(out), sum(t.n_events for t in out))
                self.tokens.extend(out)
                self.dirty[user_id] = None
                self.pickles.touched.add(user_id)

    def take_rows(self) -> UserRows | None:
        """The rows of every user whose sequence changed since the last call."""
        if not self.dirty:
            return None
        users = self.users
        rows = [self.row(users.get(user_id) or self.user(user_id))  # type: ignore[arg-type]
                for user_id in self.dirty]
        out = UserRows(rows, self.produced)
        self.dirty, self.produced = {}, []
        return out

    @staticmethod
    def row(tok: UserTokenizer) -> dict[str, Any]:
        """The ``user_tokens`` row of one user (``feature_repo.store.user_row``'s shape)."""
        columns, last_ts = tok.preview_columns()
        n = len(columns[0])
        row: dict[str, Any] = {"user_id": tok.user_id, "event_timestamp": tok.max_ts or 0,
                               "last_ts": last_ts if n else 0, "n_tokens": n}
        row.update(zip(SEQ_NAMES, columns, strict=True))
        return row

    def take_tokens(self) -> TokenBatch | None:
        """Final tokens not yet handed to the token log."""
        if not self.tokens:
            return None
        out, self.tokens = TokenBatch(self.tokens), []
        return out

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to resume: the users (their store's version, or their pickles),
        and what is still owed to the sinks.
        """
        owed = {"dirty": list(self.dirty), "produced": list(self.produced),
                "tokens": list(self.tokens)}
        if self.store is None:
            return {"users": self.pickles.snapshot(self.users), **owed}
        touched, users = self.pickles.touched, self.users
        self.version = version = self.version + 1
        self.store.write(version, {user_id: pickle.dumps(
            users[user_id], protocol=pickle.HIGHEST_PROTOCOL) for user_id in touched})
        self.stored.update(dict.fromkeys(touched, version))
        self.written.append([*touched, *self.loaded])
        touched.clear()
        self.loaded = []
        self._evict(version - RESIDENT_SNAPSHOTS)
        return {"shard": self.shard, "version": version, **owed}

    def _evict(self, upto: int) -> None:
        """Drop from memory the users last written at or before version ``upto`` (their
        state is in the store) and not owed a row.
        """
        while len(self.written) > RESIDENT_SNAPSHOTS:
            stored, users, dirty = self.stored, self.users, self.dirty
            for user_id in self.written.popleft():
                if stored[user_id] <= upto and user_id not in dirty:
                    users.pop(user_id, None)


class ItemShard:
    """The windowed counters of one shard's items; rows of changed items are owed."""

    def __init__(self, catalogue: Mapping[str, Title],
                 state: dict[str, Any] | None = None) -> None:
        self.catalogue = catalogue
        state = state or {}
        self.items: dict[str, ItemCounter] = {k: pickle.loads(b)
                                              for k, b in state.get("items", {}).items()}
        self.pickles = _Pickles(dict(state.get("items", {})))
        self.dirty: dict[str, None] = dict.fromkeys(state.get("dirty", ()))

    def count(self, updates: list[tuple[str, int, int]]) -> None:
        """Apply ``(item_id, column, ts)`` counts."""
        items, dirty, touched = self.items, self.dirty, self.pickles.touched
        for item_id, column, ts in updates:
            counter = items.get(item_id)
            if counter is None:
                counter = items[item_id] = ItemCounter(item_id)
            if counter.count(column, ts):
                dirty[item_id] = None
                touched.add(item_id)

    def take_rows(self) -> ItemRows | None:
        """The rows of every item whose counts changed since the last call."""
        if not self.dirty:
            return None
        rows = [self.items[i].row(self.catalogue.get(i)) for i in self.dirty]
        self.dirty = {}
        return ItemRows(rows)

    def snapshot(self) -> dict[str, Any]:
        """Counters and the items whose rows are still owed."""
        return {"items": self.pickles.snapshot(self.items), "dirty": list(self.dirty)}
