"""A Kafka source that emits one item per poll: the list of raw messages.

Bytewax's ``KafkaSource`` emits every message as its own item wrapped in a Python dataclass,
which costs more per event than the whole tokenizer budget. Here each partition's poll is one
item (a list of ``confluent_kafka.Message``), and the flow's first step decodes the whole list
in one call. Offsets are snapshotted like ``KafkaSource`` does (the next offset to read), so
recovery resumes exactly where the snapshot was taken.

With a ``group_id``, each snapshot's offset is also committed to that consumer group,
asynchronously (``streams.group_offsets``), so Kafka's lag tools see the flow's progress.
Those offsets are for watching only: partitions are assigned, not subscribed, and a start
reads from the snapshot (or the beginning), never from the committed offsets.

The messages are not picklable; the step that reads them must run on the same worker (any
non-keyed step does) and turn them into plain values before a keyed step.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka.admin import AdminClient

from streams import metrics
from streams.config import non_consumer
from streams.group_offsets import GroupOffsets


class _Partition(StatefulSourcePartition[list[Any], int]):
    def __init__(self, config: dict[str, Any], topic: str, partition: int, offset: int,
                 batch_size: int, poll_s: float, offsets: GroupOffsets | None = None) -> None:
        self.offsets = offsets
        self.consumer = Consumer(config)
        self.tp = TopicPartition(topic, partition)
        self.consumer.assign([TopicPartition(topic, partition, offset)])
        self.offset = offset
        self.lag_due = 0.0
        self.batch_size = batch_size
        self.poll_s = poll_s
        self.topic = topic
        self.eof = False

    def next_batch(self) -> list[list[Any]]:
        if self.eof:
            raise StopIteration
        msgs = self.consumer.consume(self.batch_size, self.poll_s)
        now = time.monotonic()
        if now >= self.lag_due:  # the last fetch's high watermark, cached: no request
            self.lag_due = now + 0.5
            low, high = self.consumer.get_watermark_offsets(self.tp, cached=True)
            next_offset = msgs[-1].offset() + 1 if msgs and msgs[-1].error() is None \
                else self.offset if self.offset >= 0 else max(low, 0)
            metrics.observe_lag(self.tp.partition, high, next_offset)
        good = msgs
        for i, msg in enumerate(msgs):
            error = msg.error()
            if error is None:
                continue
            if error.code() == ConfluentKafkaError._PARTITION_EOF:
                self.eof = True  # emit what came before it, stop on the next call
                good = [m for m in msgs[:i] if m.error() is None]
                break
            raise RuntimeError(f"error consuming from Kafka topic {self.topic!r}: {error}")
        if not good:
            return []
        self.offset = good[-1].offset() + 1
        return [good]

    def snapshot(self) -> int:
        if self.offsets is not None:  # for lag tools; sent, not waited for
            self.offsets.commit(self.topic, self.tp.partition, self.offset)
        return self.offset

    def close(self) -> None:
        self.consumer.close()
        if self.offsets is not None:
            self.offsets.flush()  # the last snapshot's commit, bounded


def partition_names(admin_config: dict[str, Any], topics: Iterable[str]) -> list[str]:
    """``<partition>-<topic>`` for every partition of ``topics`` (Bytewax's partition names)."""
    client = AdminClient(admin_config)
    parts = []
    for topic in topics:
        meta = client.list_topics(topic, timeout=30).topics[topic]
        if meta.error is not None:
            raise RuntimeError(f"listing partitions of Kafka topic {topic!r}: {meta.error}")
        parts += [f"{i}-{topic}" for i in sorted(meta.partitions)]
    return parts


class KafkaBatchSource(FixedPartitionedSource[list[Any], int]):
    """Topics' partitions as input partitions; items are lists of ``confluent_kafka.Message``.

    ``group_id``: the consumer group each snapshot's offsets are committed to (None: no
    commits).
    """

    def __init__(self, brokers: Iterable[str], topics: Iterable[str], tail: bool = True,
                 batch_size: int = 5000, add_config: dict[str, Any] | None = None,
                 poll_s: float = 0.001, starting_offset: int = OFFSET_BEGINNING,
                 group_id: str | None = None) -> None:
        if isinstance(brokers, str) or isinstance(topics, str):
            raise TypeError("brokers and topics must be lists of strings, not strings")
        self.brokers = list(brokers)
        self.topics = list(topics)
        self.tail = tail
        self.batch_size = batch_size
        self.add_config = add_config or {}
        self.poll_s = poll_s
        self.starting_offset = starting_offset
        self.offsets = GroupOffsets(self.admin_config(), group_id) if group_id else None

    def _config(self) -> dict[str, Any]:
        return {"bootstrap.servers": ",".join(self.brokers), **self.add_config}

    def admin_config(self) -> dict[str, Any]:
        """The partition listing's admin client config: the consumer's, less consumer-only
        properties (librdkafka would warn about each).
        """
        return non_consumer(self._config())

    def list_parts(self) -> list[str]:
        """``<partition>-<topic>`` for every partition of every topic."""
        return partition_names(self.admin_config(), self.topics)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Partition:
        """A consumer assigned to one partition, from the snapshot's offset if resuming."""
        index, topic = for_part.split("-", 1)
        if topic not in self.topics:
            raise ValueError(f"cannot resume partition {for_part!r}: topic {topic!r} is not "
                             f"one of {self.topics}")
        config = {"group.id": "marquee-flow-unused", "enable.auto.commit": "false",
                  "enable.partition.eof": str(not self.tail).lower(), **self._config()}
        offset = self.starting_offset if resume_state is None else resume_state
        return _Partition(config, topic, int(index), offset, self.batch_size, self.poll_s,
                          self.offsets)
