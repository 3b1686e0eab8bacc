"""Explicit topic management: partition counts are ours, never a broker's auto-create default."""

from __future__ import annotations

import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.config import KafkaSettings


def admin(settings: KafkaSettings) -> AdminClient:
    """An AdminClient for the configured cluster."""
    return AdminClient(settings.client_config())


def create_topics(settings: KafkaSettings, topics: dict[str, int], timeout: float = 15.0) -> None:
    """Create ``{name: partitions}``; topics that already exist are left as they are."""
    client = admin(settings)
    futures = client.create_topics(
        [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items()],
        operation_timeout=timeout,
    )
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"could not create topic {name!r}: {exc}") from exc
    wait_for_topics(settings, list(topics), timeout)


def delete_topics(settings: KafkaSettings, names: list[str], timeout: float = 15.0) -> None:
    """Delete topics, ignoring ones that are already gone."""
    client = admin(settings)  # keep a reference: futures fail if the client is collected
    futures = client.delete_topics(names, operation_timeout=timeout)
    for future in futures.values():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise


def wait_for_topics(settings: KafkaSettings, names: list[str], timeout: float = 15.0) -> None:
    """Block until the metadata lists every topic with its partitions."""
    client = admin(settings)
    deadline = time.monotonic() + timeout
    while True:
        listed = client.list_topics(timeout=timeout).topics
        if all(name in listed and listed[name].partitions for name in names):
            return
        if time.monotonic() > deadline:
            missing = [n for n in names if n not in listed]
            raise TimeoutError(f"topics not visible after {timeout}s: {missing}")
        time.sleep(0.1)


def marquee_topics(settings: KafkaSettings) -> dict[str, int]:
    """The topics Marquee needs, with partition counts."""
    return {settings.events_topic: settings.events_partitions, settings.dead_letter_topic: 1,
            settings.rankings_topic: settings.events_partitions}


def partition_count(settings: KafkaSettings, topic: str) -> int:
    """Number of partitions of ``topic`` (0 when it does not exist)."""
    meta = admin(settings).list_topics(topic=topic, timeout=10).topics.get(topic)
    return len(meta.partitions) if meta and not meta.error else 0


def topic_exists(settings: KafkaSettings, topic: str) -> bool:
    """Whether ``topic`` exists, asked without naming it (a metadata request that names a topic
    makes a broker with auto-create on, Tansu among them, create it with its default count).
    """
    return topic in admin(settings).list_topics(timeout=10).topics
