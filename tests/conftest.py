"""Shared fixtures: a real embedded broker for the session, a throwaway topic per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from infra.broker import EmbeddedBroker
from streams.config import KafkaSettings
from streams.topics import create_topics, delete_topics


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaSettings]:
    """Settings for a real Kafka-protocol broker: the user's cluster if
    ``KAFKA_BOOTSTRAP_SERVERS`` is set, else Tansu started on a free port for this session."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield KafkaSettings()
        return
    with EmbeddedBroker() as broker:
        yield broker.settings()


@pytest.fixture
def topic(kafka: KafkaSettings) -> Iterator[str]:
    """A uuid-named topic with 4 partitions, created for one test and deleted after it."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    create_topics(kafka, {name: 4})
    yield name
    delete_topics(kafka, [name])


@pytest.fixture
def kafka_topics(kafka: KafkaSettings) -> Iterator[KafkaSettings]:
    """Settings whose events and dead-letter topics are fresh uuid-named topics for one test."""
    suffix = uuid.uuid4().hex[:12]
    settings = kafka.model_copy(update={"events_topic": f"events-{suffix}",
                                        "dead_letter_topic": f"dlq-{suffix}"})
    create_topics(settings, {settings.events_topic: 4, settings.dead_letter_topic: 1})
    yield settings
    delete_topics(settings, [settings.events_topic, settings.dead_letter_topic])
