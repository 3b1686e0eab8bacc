"""Where the flow's outputs go: Feast (coalesced rows), the token log, the dead-letter topic.

``OutputSink`` buffers per partition and writes at least every ``flush_s`` and always when
Bytewax snapshots (``snapshot`` is called at the end of each epoch, before its state is
committed), so nothing acknowledged by a snapshot is still sitting in memory: a crash loses
no write, it only repeats some.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bytewax.outputs import DynamicSink, FixedPartitionedSink, StatefulSinkPartition
from bytewax.outputs import StatelessSinkPartition as _Stateless

from streams import metrics
from streams.tokens import Token

_STORES: dict[str, Any] = {}
_STORES_LOCK = threading.Lock()


def shared_writer(key: str, open_writer: Callable[[], Any]) -> Any:
    """One writer per process and key (Feast clients are costly to open: ~1 s + imports)."""
    with _STORES_LOCK:
        if key not in _STORES:
            _STORES[key] = open_writer()
        return _STORES[key]


class _OutputPartition(StatefulSinkPartition[Any, None]):
    def __init__(self, sink: OutputSink, part: str) -> None:
        self.sink = sink
        self.part = part
        self.users: dict[str, Any] = {}
        self.items: dict[str, dict[str, Any]] = {}
        self.tokens: list[Token] = []
        self.produced: list[int] = []
        self.last = time.monotonic()

    def write_batch(self, values: list[Any]) -> None:
        from streams.flow import ItemRow, UserRow

        for value in values:
            if isinstance(value, Token):
                self.tokens.append(value)
            elif isinstance(value, UserRow):
                self.users[value.user_id] = value  # coalesce: the newest row per user wins
                self.produced.extend(value.produced_ms)
            elif isinstance(value, ItemRow):
                self.items[value.row["item_id"]] = value.row
        if time.monotonic() - self.last >= self.sink.flush_s:
            self.flush()

    def flush(self) -> None:
        self.last = time.monotonic()
        if self.sink.save_vocab is not None and (self.users or self.tokens):
            self.sink.save_vocab()  # ids in these rows must survive a crash
        if self.tokens and self.sink.log_dir is not None:
            from streams.token_log import write_tokens

            write_tokens(self.sink.log_dir, self.tokens, prefix=self.part)
        self.tokens = []
        writer = self.sink.writer()
        if self.users:
            from feature_repo.store import user_row

            rows = [user_row(u.user_id, u.tokens, u.event_ms) for u in self.users.values()]
            with metrics.FEAST_WRITE_SECONDS.labels(feature_view="user_tokens").time():
                if writer is not None:
                    writer.write_users(rows)
            metrics.FEAST_ROWS.labels(feature_view="user_tokens").inc(len(rows))
            done_ms = time.time() * 1000
            for produced in self.produced:
                metrics.observe_freshness(max(done_ms - produced, 0) / 1000)
        if self.items:
            with metrics.FEAST_WRITE_SECONDS.labels(feature_view="item_stats").time():
                if writer is not None:
                    writer.write_items(list(self.items.values()))
            metrics.FEAST_ROWS.labels(feature_view="item_stats").inc(len(self.items))
        self.users, self.items, self.produced = {}, {}, []

    def snapshot(self) -> None:
        self.flush()  # end of an epoch: make everything before it durable

    def close(self) -> None:
        self.flush()


class OutputSink(FixedPartitionedSink[Any, None]):
    """Feast rows (``UserRow``/``ItemRow``) and tokens (to the parquet log), coalesced.

    ``open_writer`` returns a ``feature_repo.store.FeatureWriter`` (or None to skip Feast, as
    the do-nothing baseline does); it is called once per process.
    """

    def __init__(self, open_writer: Callable[[], Any] | None, log_dir: Path | None,
                 flush_s: float = 0.25, partitions: int = 4,
                 save_vocab: Callable[[], None] | None = None, key: str = "default") -> None:
        self.open_writer = open_writer
        self.log_dir = log_dir
        self.flush_s = flush_s
        self.partitions = partitions
        self.save_vocab = save_vocab
        self.key = key

    def writer(self) -> Any:
        """The process's Feast writer (opened on first use)."""
        if self.open_writer is None:
            return None
        return shared_writer(self.key, self.open_writer)

    def list_parts(self) -> list[str]:
        """Every worker may host any partition (one machine, one data dir)."""
        return [f"out{i}" for i in range(self.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _OutputPartition:
        """A fresh buffer: nothing is carried over, writes are idempotent."""
        return _OutputPartition(self, for_part)


class _DeadLetterPartition(_Stateless[Any]):
    def __init__(self, producer: Any, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    def write_batch(self, items: list[Any]) -> None:
        for dl in items:
            self.producer.produce(self.topic, value=dl.to_json(), key=dl.key)
        self.producer.flush(30)  # delivered before the epoch can be committed
        metrics.EVENTS_DEAD_LETTERED.inc(len(items))

    def close(self) -> None:
        self.producer.flush(30)


class DeadLetterSink(DynamicSink[Any]):
    """``DeadLetter`` records to the dead-letter topic (JSON with the reason)."""

    def __init__(self, client_config: dict[str, Any], topic: str) -> None:
        self.client_config = client_config
        self.topic = topic

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeadLetterPartition:
        """A producer per worker."""
        from confluent_kafka import Producer

        return _DeadLetterPartition(Producer({**self.client_config, "linger.ms": 5}), self.topic)
