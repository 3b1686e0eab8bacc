"""Where the flow's outputs go: Feast (coalesced rows), the token log, the dead-letter topic.

The flow's steps already coalesce (a user's row at most once per ``flush_s`` tick, tokens
once per ``log_flush_s``), so the sinks write what they receive at once, synchronously:
``write_batch`` returns only when it is durable, and Bytewax commits an epoch's snapshot only
after every sink has processed that epoch, so a crash loses no write, it only repeats some.
Writing at once also means no row waits in a buffer for the next item (freshness).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bytewax.outputs import DynamicSink
from bytewax.outputs import StatelessSinkPartition as _Stateless

from feature_repo.reach import OnlineStoreUnreachable
from streams import dead_letters, metrics
from streams.config import non_consumer
from streams.contract.tokens import Token
from streams.dead_letters import kafka_key
from streams.records import DeadLetter, ItemRows, TokenBatch, UserRows
from streams.shards import PACER

log = logging.getLogger(__name__)
# Tries of a failed online-store write: 0.05 s, doubling to 1 s between tries, one log line
# per 10 s of waiting.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0
RETRY_LOG_EVERY_S = 10.0

_STORES: dict[str, Any] = {}
_STORES_LOCK = threading.Lock()


def shared_writer(key: str, open_writer: Callable[[], Any]) -> Any:
    """One writer per process and key (Feast clients are costly to open: ~1 s + imports)."""
    with _STORES_LOCK:
        if key not in _STORES:
            _STORES[key] = open_writer()
        return _STORES[key]


class _OutputPartition(_Stateless[Any]):
    def __init__(self, sink: OutputSink, worker: int) -> None:
        self.sink = sink
        self.part = f"w{worker}"

    def write_batch(self, values: list[Any]) -> None:
        start = time.perf_counter()
        self._write(values)
        PACER.spent(time.perf_counter() - start)  # online writes pace the next flush

    def _write(self, values: list[Any]) -> None:
        users: dict[str, dict[str, Any]] = {}
        items: dict[str, dict[str, Any]] = {}
        tokens: list[Token] = []
        produced: list[int] = []
        for value in values:
            if isinstance(value, UserRows):
                for row in value.rows:  # coalesce: the newest row per user wins
                    users[row["user_id"]] = row
                produced.extend(value.produced)
            elif isinstance(value, ItemRows):
                for row in value.rows:
                    items[row["item_id"]] = row
            elif isinstance(value, TokenBatch):
                tokens.extend(value.tokens)
        if tokens and self.sink.log_dir is not None:
            from streams.token_log import write_tokens

            write_tokens(self.sink.log_dir, tokens, prefix=self.part)
        writer = self.sink.writer()
        if users:
            with metrics.FEAST_WRITE_SECONDS.labels(feature_view="user_tokens").time():
                if writer is not None:
                    self.sink.until_written(writer.write_users, list(users.values()))
            metrics.FEAST_ROWS.labels(feature_view="user_tokens").inc(len(users))
            metrics.observe_freshness_many(time.time() * 1000, produced)
        if items:
            with metrics.FEAST_WRITE_SECONDS.labels(feature_view="item_stats").time():
                if writer is not None:
                    self.sink.until_written(writer.write_items, list(items.values()))
            metrics.FEAST_ROWS.labels(feature_view="item_stats").inc(len(items))


class OutputSink(DynamicSink[Any]):
    """Feast rows (``UserRows``/``ItemRows``) and tokens (``TokenBatch``, to the parquet log),
    one partition per worker (no exchange: each worker writes what it computed).

    ``open_writer`` returns a ``feature_repo.store.FeatureWriter`` (or None to skip Feast, as
    a do-nothing baseline does); it is called once per process and ``key``.

    A write the store fails (``OnlineStoreUnreachable``: Redis restarting, a network cut) is
    tried again for up to ``outage_s``: the worker waits, so the flow reads nothing more and
    snapshots nothing past the unwritten rows, and resumes by itself when the store answers.
    Past ``outage_s`` the error ends the process, which restarts from its last snapshot.
    """

    def __init__(self, open_writer: Callable[[], Any] | None, log_dir: Path | None,
                 key: str = "default", outage_s: float = 0.0) -> None:
        self.open_writer = open_writer
        self.log_dir = log_dir
        self.key = key
        self.outage_s = outage_s

    def until_written(self, write: Callable[[list[dict[str, Any]]], None],
                      rows: list[dict[str, Any]]) -> None:
        """``write(rows)``, tried again while the store is unreachable, up to ``outage_s``."""
        deadline = time.monotonic() + self.outage_s
        pause = RETRY_FIRST_S
        warned = 0.0
        while True:
            try:
                write(rows)
            except OnlineStoreUnreachable as exc:
                if time.monotonic() + pause > deadline:
                    raise
                metrics.STORE_UP.set(0)
                metrics.STORE_RETRIES.inc()
                if time.monotonic() - warned > RETRY_LOG_EVERY_S:
                    warned = time.monotonic()
                    log.warning("%s; waiting for it (up to MARQUEE_FLOW_STORE_OUTAGE_S="
                                "%.0f s) before exiting to restart from recovery", exc,
                                self.outage_s)
                time.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_S)
                continue
            metrics.STORE_UP.set(1)
            return

    def writer(self) -> Any:
        """The process's Feast writer (opened on first use)."""
        if self.open_writer is None:
            return None
        return shared_writer(self.key, self.open_writer)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _OutputPartition:
        """A writer of rows and token files for one worker. The process's Feast writer opens
        here, so an online store that cannot be reached stops the flow at its start, with
        the store, its address and the fix named (``feature_repo.reach``).
        """
        try:
            if self.writer() is not None:
                metrics.STORE_UP.set(1)
        except Exception:
            # In a cluster the peers' exit hides this one's cause ("Send thread panic"): say it.
            log.exception("worker %d could not open its online store", worker_index)
            raise
        return _OutputPartition(self, worker_index)


class _DeadLetterPartition(_Stateless[list[DeadLetter]]):
    def __init__(self, producer: Any, topic: str, max_bytes: int) -> None:
        self.producer = producer
        self.topic = topic
        self.max_bytes = max_bytes
        self.failed: list[str] = []

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed.append(str(err))

    def write_batch(self, items: list[list[DeadLetter]]) -> None:
        n = 0
        for batch in items:
            for dl in batch:
                self.producer.produce(self.topic, value=dl.to_json(self.max_bytes),
                                      key=kafka_key(dl.key), on_delivery=self._delivered)
            n += len(batch)
        self.producer.flush(30)  # delivered before the epoch can be committed
        if self.failed:
            errors, self.failed = self.failed, []
            raise RuntimeError(
                f"{len(errors)} dead letters were not delivered to topic {self.topic!r} "
                f"(first: {errors[0]}); if the broker says the message is too large, set "
                "MARQUEE_FLOW_DEAD_LETTER_MAX_BYTES below the topic's max.message.bytes")
        metrics.EVENTS_DEAD_LETTERED.inc(n)

    def close(self) -> None:
        self.producer.flush(30)


class DeadLetterSink(DynamicSink[list[DeadLetter]]):
    """Batches of ``DeadLetter`` records to the dead-letter topic (JSON with the reason),
    each at most ``max_bytes`` long (``streams.dead_letters``).
    """

    def __init__(self, client_config: dict[str, Any], topic: str,
                 max_bytes: int = dead_letters.DEFAULT_MAX_BYTES) -> None:
        self.client_config = client_config
        self.topic = topic
        self.max_bytes = max_bytes

    def producer_config(self) -> dict[str, Any]:
        """The dead-letter producer's config: the client config less any consumer-only
        properties (librdkafka would warn about each), lingering 5 ms.
        """
        return {**non_consumer(self.client_config), "linger.ms": 5}

    def build(self, step_id: str, worker_index: int,
              worker_count: int) -> _DeadLetterPartition:
        """A producer per worker."""
        from confluent_kafka import Producer

        return _DeadLetterPartition(Producer(self.producer_config()), self.topic,
                                    self.max_bytes)
