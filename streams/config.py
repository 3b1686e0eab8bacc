"""Kafka settings shared by every client: one place reads KAFKA_BOOTSTRAP_SERVERS."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.contract.settings import ENV_FILE

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


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
                                   "topic when Marquee creates it")

    def client_config(self, **extra: object) -> dict[str, object]:
        """Base librdkafka config for this cluster, with ``extra`` merged over it."""
        return {"bootstrap.servers": self.bootstrap_servers, **extra}
