"""Shared fixtures: a real embedded broker for the session, a throwaway topic per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import settings

from infra.broker import EmbeddedBroker
from streams.config import KafkaSettings
from streams.topics import create_topics, delete_topics

# Property tests draw the same examples on every CI run (a red CI then means a change broke
# something, not that the dice found an old bug); `HYPOTHESIS_PROFILE=explore pytest` draws new
# examples each run, which is how to hunt for more.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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
    """Settings whose events, dead-letter and rankings topics are fresh uuid-named topics for
    one test."""
    suffix = uuid.uuid4().hex[:12]
    settings = kafka.model_copy(update={"events_topic": f"events-{suffix}",
                                        "dead_letter_topic": f"dlq-{suffix}",
                                        "rankings_topic": f"rankings-{suffix}"})
    create_topics(settings, {settings.events_topic: 4, settings.dead_letter_topic: 1,
                             settings.rankings_topic: 4})
    yield settings
    delete_topics(settings, [settings.events_topic, settings.dead_letter_topic,
                             settings.rankings_topic])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``redis-server`` (Debian package) on a free port, data in a temp dir, for the
    session; tests take their own db number or flush what they use."""
    import shutil

    from infra.redis_server import RedisServer

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (make system-deps installs it)")
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(params=["sqlite", "redis"])
def feature_store(request: pytest.FixtureRequest, tmp_path) -> object:
    """A real Feast store with Marquee's definitions applied, on SQLite and on Redis."""
    from feature_repo.store import open_store

    if request.param == "redis":
        import redis

        url = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).flushdb()
        return open_store(online="redis", data_dir=tmp_path, redis_url=url)
    return open_store(online="sqlite", data_dir=tmp_path)
