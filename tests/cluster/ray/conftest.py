"""One Ray cluster per module on network-namespace hosts: ``ray-head`` and ``ray-worker``
(each ``ray start``-ed on its own address), ``redis`` (the online store, with its append-only
file) and ``client``; the ranking app deployed from the generated Serve config with two
replicas, one on each node, its HTTP proxy reached at the head's address.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra import netns
from infra.bench.cluster import HOSTS, HTTP_PORT, REDIS_PORT


@dataclass
class RayBed:
    """The running cluster and what the tests need of it."""

    bed: netns.TestBed
    cluster: object  # infra.ray_cluster.RayCluster
    watch: object  # infra.ray_cluster.Watch
    world: object  # infra.bench.sample_world.SampleWorld
    redis_dir: Path
    redis_url: str

    @property
    def url(self) -> str:
        """``/v1/rank`` at the head's address."""
        return f"http://{self.bed.address('ray-head')}:{HTTP_PORT}/v1/rank"

    def start_redis(self) -> None:
        """``redis-server`` on the ``redis`` host, on its folder (persistence on)."""
        from infra.redis_server import RedisServer

        with self.bed.inside("redis"):
            RedisServer(self.redis_dir, port=REDIS_PORT, host=self.bed.address("redis"),
                        persist=True).start()


@pytest.fixture(scope="module")
def ray_bed() -> Iterator[RayBed]:
    """The cluster, started once for the module and torn down (namespaces and every process
    in them) even when a test fails.
    """
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (make system-deps)")
    from infra.bench.cluster import redis_world
    from infra.ray_cluster import RayCluster

    # Short: Ray's unix sockets live under each node's temp folder (108-byte path limit).
    root = Path(tempfile.mkdtemp(prefix="mqray-", dir="/tmp"))
    try:
        with netns.TestBed(HOSTS) as bed:
            world, redis_url = redis_world(bed, root)
            rb = RayBed(bed, None, None, world, root / "redis", redis_url)
            rb.cluster = RayCluster(bed, root / "ray").start()
            settings = world.settings(online_store="redis", replicas=2, host="0.0.0.0",
                                      port=HTTP_PORT)
            rb.cluster.deploy(settings, spread=True, env={"MARQUEE_REDIS_URL": redis_url})
            rb.watch = rb.cluster.watch()
            both = sorted([bed.address("ray-head"), bed.address("ray-worker")])
            try:
                rb.watch.wait(lambda o: o["running"] == 2 and o["replicas"] == both, 180)
                yield rb
            finally:
                rb.watch.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
