"""The broker and Redis on a host of a test bed: they listen on the host's address, and a
client on another host uses them."""

from __future__ import annotations

import shutil

import pytest

from infra import netns
from infra.broker import EmbeddedBroker
from infra.netns import TestBed
from infra.redis_server import RedisServer

UNAVAILABLE = netns.unavailable()
pytestmark = [pytest.mark.integration, pytest.mark.cluster,
              pytest.mark.skipif(bool(UNAVAILABLE), reason=str(UNAVAILABLE))]


def test_broker_and_redis_serve_other_hosts_on_their_addresses(tmp_path):
    import redis
    from confluent_kafka.admin import AdminClient

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (make system-deps)")
    with TestBed(["broker", "redis", "client"]) as bed:
        with bed.inside("broker"):
            broker = EmbeddedBroker(host=bed.address("broker")).start()
        with bed.inside("redis"):
            store = RedisServer(tmp_path / "redis", host=bed.address("redis"),
                                persist=True).start()
        assert broker.bootstrap == f"{bed.address('broker')}:{broker.port}"
        assert store.url == f"redis://{bed.address('redis')}:{store.port}/0"
        assert set(broker.pids()) <= set(bed.pids("broker"))
        assert store.pids() == bed.pids("redis")
        with bed.inside("client"):
            meta = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
            client = redis.Redis.from_url(store.url, socket_timeout=5)
            client.set("k", "v")
            assert client.get("k") == b"v"
            assert client.config_get("appendonly")["appendonly"] == "yes"
        # The broker advertises its host's address, so clients elsewhere can follow it.
        assert {f"{b.host}:{b.port}" for b in meta.brokers.values()} == {broker.bootstrap}
        broker.stop()
        store.stop()
