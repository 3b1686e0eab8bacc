"""Producers and admin clients get producer-side properties only: librdkafka warns (CONFWARN
on stderr) about every consumer property a producer or an admin client (a producer handle in
librdkafka) is given, which the benchmarks used to print for ``fetch.wait.max.ms``.
"""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient

from infra.bench.stream_sources import FloorKafkaSource
from streams.config import CONSUMER_ONLY, KafkaSettings, non_consumer
from streams.flow import consumer_config
from streams.kafka_batches import KafkaBatchSource
from streams.produce import PRODUCER_CONFIG, produce_events, producer_config
from streams.sinks import DeadLetterSink


def test_the_consumer_config_has_consumer_only_keys_and_non_consumer_drops_them():
    config = {"bootstrap.servers": "h:1", **consumer_config(50), "group.id": "g",
              "linger.ms": 5}
    assert {"fetch.wait.max.ms", "group.id"} <= CONSUMER_ONLY & set(config)
    assert non_consumer(config) == {"bootstrap.servers": "h:1", "linger.ms": 5}


def test_producer_and_admin_configs_we_build_have_no_consumer_only_keys():
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:9")
    built = {
        "PRODUCER_CONFIG": PRODUCER_CONFIG,
        "produce_events": producer_config(settings),
        "dead letters": DeadLetterSink({**settings.client_config(), **consumer_config()},
                                       "dlq").producer_config(),
        "flow source listing": KafkaBatchSource(["127.0.0.1:9"], ["t"],
                                                add_config=consumer_config()).admin_config(),
        "bench floor listing": FloorKafkaSource(["127.0.0.1:9"], ["t"],
                                                add_config=consumer_config()).admin_config,
    }
    for name, config in built.items():
        assert not CONSUMER_ONLY & set(config), f"{name}: {CONSUMER_ONLY & set(config)}"
        assert config.get("bootstrap.servers", "127.0.0.1:9") == "127.0.0.1:9", name


@pytest.mark.integration
def test_listing_producing_and_dead_lettering_print_no_config_warning(kafka, topic, capfd):
    # The check can see a warning: the consumer's config given whole to an admin client.
    AdminClient({"bootstrap.servers": kafka.bootstrap_servers, **consumer_config()})
    assert "CONFWARN" in capfd.readouterr().err

    servers = [kafka.bootstrap_servers]
    assert len(KafkaBatchSource(servers, [topic], add_config=consumer_config()).list_parts()) == 4
    assert len(FloorKafkaSource(servers, [topic], add_config=consumer_config()).list_parts()) == 4
    assert produce_events([b'{"user_id":"u"}'], kafka, topic=topic, progress=False).delivered == 1
    sink = DeadLetterSink({**kafka.client_config(), **consumer_config()}, topic)
    sink.build("dead_letters", 0, 1).close()
    err = capfd.readouterr().err
    assert "CONFWARN" not in err, err
