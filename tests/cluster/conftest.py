"""The cluster the multi-host tests share: hosts ``broker``, ``redis``, ``flow-a``, ``flow-b``
and ``client`` on a network-namespace test bed (``infra.netns``), the durable broker and a
persistent Redis started on their hosts. Each test prints what its fault cost; the session
ends with all of them in one table.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest

from infra import netns
from infra.broker import EmbeddedBroker
from infra.netns import TestBed
from infra.redis_server import RedisServer
from tests.cluster.flow_cluster import HOSTS, FlowCluster

COSTS: list[dict] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is a cluster test, and an integration test."""
    for item in items:
        if "tests/cluster/" in item.nodeid:
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's own type
    """The fault costs of this session, whether or not output was captured."""
    if COSTS:
        terminalreporter.section("cluster fault costs")
        for cost in COSTS:
            terminalreporter.write_line(json.dumps(cost))


@pytest.fixture(scope="session")
def costs() -> list[dict]:
    """Where tests record what their fault cost."""
    return COSTS


@pytest.fixture(scope="session")
def flow_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowCluster]:
    """The bed with the broker (durable) and Redis (append-only, fsync always) on it."""
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (make system-deps)")
    tmp = tmp_path_factory.mktemp("cluster")
    with TestBed(HOSTS) as bed:
        with bed.inside("broker"):
            broker = EmbeddedBroker(host=bed.address("broker"), data_dir=tmp / "broker",
                                    log_path=tmp / "broker.log").start()
        with bed.inside("redis"):
            redis = RedisServer(tmp / "redis", host=bed.address("redis"), persist=True,
                                log_path=tmp / "redis.log").start()
        try:
            yield FlowCluster(bed, broker, redis, tmp)
        finally:
            redis.stop()
            broker.stop()
