"""Read a topic back from the beginning: for tests, the demo and checks, not the flow."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from streams.config import KafkaSettings
from streams.topics import partition_count


@dataclass(frozen=True)
class Record:
    """One message as read back."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: int = 0  # ms, as the broker stored it


def read_all(settings: KafkaSettings, topic: str, expected: int | None = None,
             timeout: float = 30.0) -> list[Record]:
    """Every message of ``topic`` from offset 0, by assignment (no consumer group).

    Stops at ``expected`` messages, or when every partition reached the high watermark of
    its last fetch response, or at ``timeout``. (The fetch's watermark, not a ListOffsets
    request: Tansu answers "latest" wrongly on its S3 storage.)
    """
    consumer = Consumer(settings.client_config(**{
        "group.id": "marquee-reader", "enable.auto.commit": False,
        "auto.offset.reset": "earliest"}))
    partitions = [TopicPartition(topic, p) for p in range(partition_count(settings, topic))]
    consumer.assign([TopicPartition(topic, tp.partition, 0) for tp in partitions])
    records: list[Record] = []
    positions = dict.fromkeys(range(len(partitions)), 0)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if expected is not None and len(records) >= expected:
                break
            for msg in consumer.consume(10_000, timeout=0.5):
                if msg.error():
                    continue
                records.append(Record(msg.partition(), msg.offset(), msg.key(), msg.value(),
                                      msg.timestamp()[1]))
                positions[msg.partition()] = msg.offset() + 1
            if expected is None:
                highs = [consumer.get_watermark_offsets(tp, cached=True)[1] for tp in partitions]
                if all(0 <= h <= positions[tp.partition] for h, tp in zip(highs, partitions,
                                                                            strict=True)):
                    break
    finally:
        consumer.close()
    return records
