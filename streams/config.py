"""Kafka settings shared by every client: one place reads KAFKA_BOOTSTRAP_SERVERS."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.contract.settings import ENV_FILE

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"

# librdkafka's consumer-only properties (the "C" rows of its CONFIGURATION.md, topic-level ones
# included). A producer ignores them with a CONFWARN line on stderr, and so does an admin
# client, which librdkafka builds on a producer handle.
CONSUMER_ONLY = frozenset({
    "group.id", "group.instance.id", "partition.assignment.strategy", "session.timeout.ms",
    "heartbeat.interval.ms", "group.protocol.type", "group.protocol", "group.remote.assignor",
    "coordinator.query.interval.ms", "max.poll.interval.ms", "enable.auto.commit",
    "auto.commit.interval.ms", "enable.auto.offset.store", "queued.min.messages",
    "queued.max.messages.kbytes", "fetch.wait.max.ms", "fetch.queue.backoff.ms",
    "fetch.message.max.bytes", "max.partition.fetch.bytes", "fetch.max.bytes", "fetch.min.bytes",
    "fetch.error.backoff.ms", "offset.store.method", "isolation.level", "consume_cb",
    "rebalance_cb", "offset_commit_cb", "on_commit", "enable.partition.eof", "check.crcs",
    "auto.commit.enable", "auto.offset.reset", "offset.store.path",
    "offset.store.sync.interval.ms", "consume.callback.max.messages",
})


def non_consumer(config: Mapping[str, object]) -> dict[str, object]:
    """``config`` without consumer-only properties: what a producer or an admin client built
    from a consumer's config should get.
    """
    return {k: v for k, v in config.items() if k not in CONSUMER_ONLY}


class KafkaSettings(BaseSettings):
    """Where the broker is and what Marquee's topics are called.

    Every field can be set by an environment variable: ``KAFKA_BOOTSTRAP_SERVERS`` for the
    address (so a user's own cluster replaces the embedded broker), ``MARQUEE_EVENTS_TOPIC``
    and so on for the rest.
    """

    model_config = SettingsConfigDict(env_prefix="MARQUEE_", env_file=ENV_FILE, extra="ignore")

    bootstrap_servers: str = Field(
        default=DEFAULT_BOOTSTRAP,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "bootstrap_servers"),
        description="host:port[,host:port...] of the Kafka-protocol broker",
    )
    events_topic: str = Field(default="marquee.events",
                              description="topic the producers write interaction events to")
    dead_letter_topic: str = Field(default="marquee.events.dlq",
                                   description="topic of rejected events, each with its reasons")
    events_partitions: int = Field(default=4, ge=1, description="partitions of the events "
                                   "topic when Marquee creates it (and of the rankings topic: "
                                   "both are keyed by user_id, so a user's events and rankings "
                                   "share a partition number)")
    rankings_topic: str = Field(default="marquee.rankings",
                                description="topic the ranking service logs every served "
                                "ranking to (request id, user, experiment, variants, items)")
    consumer_group: str = Field(default="marquee-tokenizer", min_length=1,
                                description="consumer group the flow commits its snapshot "
                                "offsets to, for lag tools (it resumes from its snapshots)")

    def client_config(self, **extra: object) -> dict[str, object]:
        """Base librdkafka config for this cluster, with ``extra`` merged over it."""
        return {"bootstrap.servers": self.bootstrap_servers, **extra}
