"""The flow's keyed state in plain Python: the users of one shard, the items of one shard.

Bytewax keeps one state per key and calls it once per key per activation; keyed by user,
that is one Python call (and one snapshot) per user per poll batch, ~5000 calls a second.
Here a key is a *shard* (``u07``: every user whose id hashes to 7): one call per shard and
batch runs a plain loop over its events. A user always hashes to the same shard, so each
user still has exactly one tokenizer, whatever the number of workers or Kafka partitions.

Snapshots pickle only the users (items) touched since the previous snapshot and reuse the
bytes of the others, so their cost follows the traffic, not the shard's size.
"""

from __future__ import annotations

import math
import operator
import pickle
import time
import zlib
from collections.abc import Mapping
from typing import Any

from streams import metrics, refusals
from streams.contract.catalogue import Title
from streams.contract.merge import TokenizerConfig
from streams.contract.tokenizer import UserTokenizer
from streams.contract.tokens import FACETS, Token, Vocab
from streams.item_stats import COLUMNS, ItemCounter
from streams.records import DeadLetter, ItemRows, Slice, TokenBatch, UserRows

SEQ_NAMES = [f"{facet}_seq" for facet in FACETS]
_COLUMN_OF = {action.value: column for action, column in COLUMNS.items()}
_N_EVENTS = operator.attrgetter("n_events")


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
                 item_shard: ShardMap, state: dict[str, Any] | None = None) -> None:
        self.vocab, self.config, self.durations = vocab, config, durations
        self.item_shard = item_shard
        state = state or {}
        self.users: dict[str, UserTokenizer] = {}
        for user_id, blob in state.get("users", {}).items():
            tok = pickle.loads(blob)
            tok.attach(vocab, durations)
            self.users[user_id] = tok
        self.pickles = _Pickles(dict(state.get("users", {})))
        self.dirty: dict[str, None] = dict.fromkeys(state.get("dirty", ()))  # rows owed
        self.produced: list[int] = list(state.get("produced", ()))
        self.tokens: list[Token] = list(state.get("tokens", ()))  # owed to the token log

    def offer(self, sl: Slice) -> tuple[list[DeadLetter], dict[str, list[tuple[str, int, int]]]]:
        """Tokenize a slice; returns the refusals (late, duplicate) and the accepted events
        that count for item stats, as ``(item_id, column, ts)`` per item shard.
        """
        users, dirty, touched = self.users, self.dirty, self.pickles.touched
        produced, tokens = self.produced, self.tokens
        n_before = len(tokens)
        refused: list[DeadLetter] = []
        counts: list[tuple[str, int, int]] = []
        for i, ev in enumerate(sl.events):
            user_id = ev.user_id
            tok = users.get(user_id)
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
        rows = [self.row(self.users[user_id]) for user_id in self.dirty]
        out = UserRows(rows, self.produced)
        self.dirty, self.produced = {}, []
        return out

    @staticmethod
    def row(tok: UserTokenizer) -> dict[str, Any]:
        """The ``user_tokens`` row of one user (``feature_repo.store.user_row``'s shape)."""
        facets, last_ts = tok.preview()
        row: dict[str, Any] = {"user_id": tok.user_id, "event_timestamp": tok.max_ts or 0,
                               "last_ts": last_ts if facets else 0, "n_tokens": len(facets)}
        columns = zip(*facets, strict=True) if facets else ((),) * len(SEQ_NAMES)
        for name, column in zip(SEQ_NAMES, columns, strict=True):
            row[name] = list(column)
        return row

    def take_tokens(self) -> TokenBatch | None:
        """Final tokens not yet handed to the token log."""
        if not self.tokens:
            return None
        out, self.tokens = TokenBatch(self.tokens), []
        return out

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to resume: users, and what is still owed to the sinks."""
        return {"users": self.pickles.snapshot(self.users), "dirty": list(self.dirty),
                "produced": list(self.produced), "tokens": list(self.tokens)}


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
