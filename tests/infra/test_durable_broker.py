"""The durable embedded broker: real Tansu on a real s3rver folder, real SIGKILLs.

Each test checks what a crash must not change: every event the broker acknowledged reads back
once, and the broker takes new events after the restart without overwriting old ones.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from infra.broker import EmbeddedBroker
from streams.produce import PRODUCER_CONFIG, produce_events
from streams.topics import create_topics

pytestmark = pytest.mark.integration
TOPIC = "durable"
PARTITIONS = 4


def events(start: int, stop: int) -> list[bytes]:
    """Small JSON events keyed by user, numbered so each one can be found again."""
    return [orjson.dumps({"user_id": f"u{i % 37}", "n": i}) for i in range(start, stop)]


def read_until_quiet(broker: EmbeddedBroker, quiet: float = 1.5) -> list[bytes]:
    """Every message of the topic, from offset 0 until none came for ``quiet`` seconds.

    Not ``read_all``: it stops at the high watermarks, and Tansu 0.6 answers a ListOffsets
    for the latest offset with the last stored batch's base offset + 1, which on S3 storage
    is always 1 (stored batches keep base offset 0).
    """
    consumer = Consumer(broker.settings().client_config(
        **{"group.id": "durable-test", "enable.auto.commit": False}))
    consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
    values: list[bytes] = []
    last = time.monotonic()
    try:
        while time.monotonic() - last < quiet:
            for msg in consumer.consume(10_000, timeout=0.2):
                if msg.error() is None:
                    values.append(msg.value())
                    last = time.monotonic()
    finally:
        consumer.close()
    return values


def assert_reads_back_exactly(broker: EmbeddedBroker, total: int) -> None:
    """Events 0..total-1 read back from the topic, each once."""
    read = Counter(orjson.loads(value)["n"] for value in read_until_quiet(broker))
    missing = set(range(total)) - set(read)
    duplicated = sorted(n for n, count in read.items() if count > 1)
    unexpected = set(read) - set(range(total))
    assert not (missing or duplicated or unexpected), (
        f"{len(missing)} acknowledged events missing (e.g. {sorted(missing)[:5]}), "
        f"{len(duplicated)} duplicated, {len(unexpected)} never sent; "
        f"producer state repaired at restart: {broker.repairs}")


def topics_of(broker: EmbeddedBroker) -> set[str]:
    return set(AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics)


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A durable broker with one 4-partition topic, stopped after the test."""
    broker = EmbeddedBroker(data_dir=tmp_path / "broker", log_path=tmp_path / "broker.log")
    with broker:
        create_topics(broker.settings(), {TOPIC: PARTITIONS})
        yield broker


def produce(broker: EmbeddedBroker, batch: list[bytes]) -> None:
    report = produce_events(batch, broker.settings(), topic=TOPIC, progress=False)
    assert report.delivered == len(batch), report.summary()


def test_acknowledged_events_survive_a_sigkill_of_tansu(durable):
    produce(durable, events(0, 20_000))
    pid = durable.process.pid
    os.kill(pid, signal.SIGKILL)
    durable.process.wait(5)
    assert not durable.alive()

    durable.start()
    assert durable.process.pid != pid and durable.alive()
    # Produce before anything reads: a restarted Tansu that has not loaded a partition's
    # high watermark must still append after the stored batches, not write at offset 0.
    produce(durable, events(20_000, 25_000))
    assert_reads_back_exactly(durable, 25_000)


def test_acknowledged_events_survive_a_sigkill_of_the_object_store(durable):
    produce(durable, events(0, 10_000))
    durable.store.kill()
    assert not durable.alive()
    durable.start()
    assert_reads_back_exactly(durable, 10_000)
    produce(durable, events(10_000, 12_000))
    durable.kill()  # both processes at once
    durable.start()
    assert_reads_back_exactly(durable, 12_000)


def test_the_events_come_from_the_data_folder(durable, tmp_path):
    produce(durable, events(0, 1_000))
    port = durable.port
    durable.stop()
    with EmbeddedBroker(port=port, data_dir=tmp_path / "empty") as fresh:
        assert TOPIC not in topics_of(fresh)
    durable.start()
    assert TOPIC in topics_of(durable)
    assert_reads_back_exactly(durable, 1_000)


def test_a_second_broker_on_the_same_folder_is_refused(durable):
    with pytest.raises(RuntimeError, match="another Marquee broker is using"):
        EmbeddedBroker(data_dir=durable.data_dir).start()
    assert durable.alive()


def test_a_sigkill_during_produce_loses_no_acknowledged_event(durable):
    """Jepsen-style: kill Tansu while an idempotent producer has batches in flight."""
    acked: list[int] = []
    failed: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is None:
            acked.append(orjson.loads(msg.value())["n"])
        else:
            failed.append(str(err))

    producer = Producer(durable.settings().client_config(
        **PRODUCER_CONFIG, **{"message.timeout.ms": 60_000}))
    total = 20_000

    def send() -> None:
        for i, value in enumerate(events(0, total)):
            producer.produce(TOPIC, value=value, key=f"u{i % 37}".encode(),
                             on_delivery=on_delivery)
            producer.poll(0)
            if i % 100 == 0:
                time.sleep(0.01)  # about 2 s of steady traffic
        producer.flush(90)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    for acknowledged in (2_000, 9_000):  # two crashes, each with batches in flight
        deadline = time.monotonic() + 30
        while len(acked) < acknowledged and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(acked) >= acknowledged, "the producer stalled before the kill"
        os.kill(durable.process.pid, signal.SIGKILL)
        durable.process.wait(5)
        durable.start()
    sender.join(120)

    assert not failed and sorted(acked) == list(range(total))
    assert_reads_back_exactly(durable, total)
