"""Send events to Kafka with an idempotent producer and account for every one of them."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError, Producer
from tqdm import tqdm

from streams.config import KafkaSettings
from streams.contract.files import key_of

DEFAULT_DELIVERY_TIMEOUT = 60.0

PRODUCER_CONFIG: dict[str, Any] = {
    "enable.idempotence": True,  # implies acks=all and ordered, de-duplicated retries
    "acks": "all",
    "linger.ms": 5,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 500_000,
    "compression.type": "none",
}


@dataclass
class ProduceReport:
    """What happened to every event handed to ``produce_events``."""

    attempted: int = 0
    delivered: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    acked: list[tuple[int, int, bytes]] | None = None  # (partition, offset, value) if tracked

    @property
    def undelivered(self) -> int:
        """Events not acknowledged by the broker (failed, or still queued at the deadline)."""
        return self.attempted - self.delivered

    @property
    def rate(self) -> float:
        """Delivered events per second."""
        return self.delivered / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        """The final line ``marquee produce`` prints."""
        line = (f"delivered {self.delivered:,} of {self.attempted:,} events in "
                f"{self.seconds:.2f}s ({self.rate:,.0f} events/s)")
        if self.undelivered:
            line += f"; {self.undelivered:,} NOT delivered (first error: {self.errors[:1]})"
        return line


def producer_config(settings: KafkaSettings,
                    delivery_timeout: float = DEFAULT_DELIVERY_TIMEOUT) -> dict[str, Any]:
    """The events producer's librdkafka config: ``PRODUCER_CONFIG`` on the cluster's, an
    event given up after ``delivery_timeout`` seconds.
    """
    return settings.client_config(**PRODUCER_CONFIG,
                                  **{"message.timeout.ms": int(delivery_timeout * 1000)})


def produce_events(events: Iterable[dict[str, Any] | bytes], settings: KafkaSettings,
                   topic: str | None = None, rate: float | None = None,
                   total: int | None = None, progress: bool = True,
                   delivery_timeout: float | None = None, track: bool = False) -> ProduceReport:
    """Produce dicts (serialized to JSON) or raw bytes, keyed by ``user_id``.

    ``rate`` caps events/s. Delivery reports are counted; the report says how many were
    acknowledged, so callers can fail loudly when any were not. An event not acknowledged
    within ``delivery_timeout`` seconds (librdkafka retries until then) counts as failed.
    ``track`` keeps where each acknowledged event landed (``report.acked``), for checks that
    every acknowledged event survives a fault.
    """
    topic = topic or settings.events_topic
    delivery_timeout = delivery_timeout or DEFAULT_DELIVERY_TIMEOUT
    report = ProduceReport(acked=[] if track else None)
    producer = Producer(producer_config(settings, delivery_timeout))

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        if err is None:
            report.delivered += 1
            if report.acked is not None:
                report.acked.append((msg.partition(), msg.offset(), msg.value()))
        else:
            report.failed += 1
            if len(report.errors) < 10:
                report.errors.append(str(err))

    bar = tqdm(total=total, unit="ev", disable=not progress, file=sys.stderr, mininterval=0.5)
    start = time.perf_counter()
    for event in events:
        if isinstance(event, bytes):
            value, key = event, key_of(event)
        else:
            value = orjson.dumps(event)
            key = str(event.get("user_id", "")).encode() or None
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        report.attempted += 1
        if rate:
            ahead = report.attempted / rate - (time.perf_counter() - start)
            if ahead > 0:
                time.sleep(ahead)
        if report.attempted % 1000 == 0:
            producer.poll(0)
            bar.update(1000)
    producer.flush(delivery_timeout + 5)
    bar.update(report.attempted % 1000)
    bar.close()
    report.seconds = time.perf_counter() - start
    return report
