"""The stream benchmark's Kafka sources and sink: tailing sources that stop at an end marker
(so a timed run ends where the produced events end) and a sink that drops everything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bytewax.connectors.kafka import KafkaSource
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from streams.config import KafkaSettings, non_consumer
from streams.flow import consumer_config
from streams.kafka_batches import KafkaBatchSource, partition_names

END = b"__marquee_bench_end__"

# Called with the partition's name when a partition of this process reaches its end marker
# (the child process notes the time and its resident memory there).
OnEnd = Callable[[str], None]


class _Null(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        pass


class NullSink(DynamicSink[Any]):
    """Drops everything (the floor flow's sink)."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Null:
        """A partition that does nothing."""
        return _Null()


class _UntilEnd(StatefulSourcePartition[Any, Any]):
    def __init__(self, inner: StatefulSourcePartition[Any, Any], batched: bool, name: str,
                 on_end: OnEnd | None) -> None:
        self.inner = inner
        self.batched = batched
        self.name = name
        self.on_end = on_end
        self.done = False

    def next_batch(self) -> list[Any]:
        if self.done:
            raise StopIteration
        batch = self.inner.next_batch()
        msgs = batch[0] if self.batched and batch else batch
        for i, msg in enumerate(msgs):
            value = msg.value() if self.batched else getattr(msg, "value", None)
            if value == END:
                self.done = True
                if self.on_end is not None:
                    self.on_end(self.name)
                if self.batched:
                    return [msgs[:i]] if i else []
                return batch[:i]
        return batch

    def next_awake(self) -> Any:
        return self.inner.next_awake()

    def snapshot(self) -> Any:
        return self.inner.snapshot()

    def close(self) -> None:
        self.inner.close()


class FloorKafkaSource(KafkaSource):
    """Bytewax's ``KafkaSource``, except that its partition listing's admin client gets no
    consumer-only properties (Bytewax hands it ``add_config`` whole, and librdkafka warns
    about each).
    """

    def __init__(self, brokers: list[str], topics: list[str], **kwargs: Any) -> None:
        super().__init__(brokers, topics, **kwargs)
        self.admin_config = non_consumer({"bootstrap.servers": ",".join(brokers),
                                          **kwargs.get("add_config", {})})
        self.topic_names = list(topics)

    def list_parts(self) -> list[str]:
        """The Kafka partitions, named as ``KafkaSource`` names them."""
        return partition_names(self.admin_config, self.topic_names)


class UntilEndSource(FixedPartitionedSource[Any, Any]):
    """A tailing Kafka source whose partitions stop at an end marker (for timed runs); wraps
    Bytewax's ``KafkaSource`` (one item per message) or ``KafkaBatchSource`` (one per poll).
    """

    def __init__(self, inner: FloorKafkaSource | KafkaBatchSource,
                 on_end: OnEnd | None = None) -> None:
        self.inner = inner
        self.batched = isinstance(inner, KafkaBatchSource)
        self.on_end = on_end

    def list_parts(self) -> list[str]:
        """The Kafka partitions."""
        return self.inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _UntilEnd:
        """Wrap the Kafka partition."""
        return _UntilEnd(self.inner.build_part(step_id, for_part, resume_state), self.batched,
                         for_part, self.on_end)


def until_end(kafka: KafkaSettings, topic: str, batch_size: int, batched: bool = False,
              on_end: OnEnd | None = None) -> UntilEndSource:
    """``topic`` read to its end markers, one item per message or (``batched``) per poll."""
    add = consumer_config()
    inner: FloorKafkaSource | KafkaBatchSource
    if batched:
        inner = KafkaBatchSource([kafka.bootstrap_servers], [topic], tail=True,
                                 batch_size=batch_size, add_config=add)
    else:
        inner = FloorKafkaSource([kafka.bootstrap_servers], [topic], tail=True,
                                 batch_size=batch_size, add_config=add)
    return UntilEndSource(inner, on_end)


def end_markers(kafka: KafkaSettings, topic: str, partitions: int) -> None:
    """One end marker on every partition of ``topic``."""
    from confluent_kafka import Producer

    producer = Producer(kafka.client_config())
    for p in range(partitions):
        producer.produce(topic, value=END, partition=p)
    producer.flush(30)


def poll_ages(seen: list[float]) -> Callable[[list[Any]], int]:
    """A step that appends each message's age (now - producer timestamp, seconds) to
    ``seen``: what the broker and the clients add to freshness.
    """
    def note(poll: list[Any]) -> int:
        now = time.time() * 1000
        seen.extend((now - m.timestamp()[1]) / 1000 for m in poll)
        return len(poll)

    return note
