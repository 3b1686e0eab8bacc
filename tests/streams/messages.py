"""Kafka messages for flow tests without a broker: real ``confluent_kafka.Message`` objects,
keyed and partitioned as a producer keying by ``user_id`` would place them.
"""

from __future__ import annotations

import time
import zlib

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
