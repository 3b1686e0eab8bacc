"""Kafka messages for flow tests without a broker: real ``confluent_kafka.Message`` objects,
keyed and partitioned as a producer keying by ``user_id`` would place them.
"""

from __future__ import annotations

import time
import zlib
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from streams.contract.files import key_of


def message(value: bytes | None, key: bytes | None, partition: int = 0, offset: int = 0,
            timestamp: int | None = None, topic: str = "events") -> Message:
    """One message; ``timestamp`` (ms, the record's CreateTime) defaults to now."""
    ts = int(time.time() * 1000) if timestamp is None else timestamp
    return Message(topic=topic, partition=partition, offset=offset, key=key, value=value,
                   timestamp=(TIMESTAMP_CREATE_TIME, ts))


def partition_of(key: bytes | None, partitions: int, fallback: int = 0) -> int:
    """The partition of ``key`` (crc32 here; Kafka's murmur2 differs, which no test needs)."""
    return fallback % partitions if key is None else zlib.crc32(key) % partitions


def as_messages(values: list[bytes], partitions: int = 4,
                timestamp: int | None = None) -> list[Message]:
    """``values`` keyed by their ``user_id`` (``key_of``) in list order, each on its key's
    partition at the next offset there.
    """
    offsets = [0] * partitions
    out = []
    for i, value in enumerate(values):
        key = key_of(value)
        p = partition_of(key, partitions, fallback=i)
        out.append(message(value, key, p, offsets[p], timestamp))
        offsets[p] += 1
    return out


def produce_raw(kafka: Any, records: list[tuple[bytes | None, bytes | None, int | None]],
                max_bytes: int = 4_000_000) -> list[tuple[int, int]]:
    """Send ``(value, key, timestamp or None)`` records as they are, in order, to the events
    topic of a real broker; where each landed (partition, offset).
    """
    from confluent_kafka import Producer

    producer = Producer(kafka.client_config(**{"message.max.bytes": max_bytes,
                                               "enable.idempotence": True}))
    where: list[tuple[int, int] | None] = [None] * len(records)

    def landed(i: int):
        def done(err, msg) -> None:
            assert err is None, err
            where[i] = (msg.partition(), msg.offset())
        return done

    for i, (value, key, timestamp) in enumerate(records):
        extra = {} if timestamp is None else {"timestamp": timestamp}
        while True:
            try:
                producer.produce(kafka.events_topic, value=value, key=key,
                                 on_delivery=landed(i), **extra)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0
    assert all(w is not None for w in where)
    return where  # type: ignore[return-value]
