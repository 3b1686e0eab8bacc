"""``marquee bench cluster``: the ranking service on a Ray cluster of network-namespace hosts
(``infra.netns``), with its two replicas on one Ray node and then spread over two, each beside
the no-op Serve floor deployed with the same replicas in the same places.

Hosts: ``ray-head`` (GCS, Serve controller, the HTTP proxy the client calls), ``ray-worker``
(joined for the second topology), ``redis`` (the online store) and ``client`` (the load:
closed loop, ``infra.bench.serve.closed_loop``). All hosts share this machine's cores, so a
second node adds no CPU: what the two-node figures show is the cost of a replica behind the
network (proxy -> replica across hosts), not a speed-up.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from infra.netns import TestBed

HOSTS = ["ray-head", "ray-worker", "redis", "client"]
HTTP_PORT = 8000
REDIS_PORT = 6379


def redis_world(bed: TestBed, root: Path, users: int = 30) -> tuple[Any, str]:
    """``redis-server`` on the ``redis`` host (append-only file on) and a sample world whose
    features are written there from ``client``: (the world, its Redis URL).
    """
    from feature_repo.store import FeatureWriter, open_store
    from infra.bench.sample_world import SampleWorld
    from infra.redis_server import RedisServer

    with bed.inside("redis"):
        server = RedisServer(root / "redis", port=REDIS_PORT, host=bed.address("redis"),
                             persist=True).start()
    world = SampleWorld(root / "world", n_users=users)
    with bed.inside("client"):
        world.write_features(FeatureWriter(open_store(online="redis", data_dir=root / "writer",
                                                      redis_url=server.url)))
    return world, server.url


def _measure(bed: TestBed, base: str, users: list[str], clients: tuple[int, ...],
             seconds: float) -> dict[str, list[dict[str, Any]]]:
    from infra.bench.serve import closed_loop

    bodies = [{"user_id": u, "k": 20} for u in users]
    out: dict[str, list[dict[str, Any]]] = {}
    with bed.inside("client"):  # closed_loop's threads start here, so they are on `client`
        for name, path in (("noop", "/noop/v1/rank"), ("rank", "/v1/rank")):
            closed_loop(base + path, bodies, 1, 1.0)  # warm-up
            out[name] = []
            for c in clients:
                print(f"{name}: {c} client(s), {seconds:g} s", file=sys.stderr, flush=True)
                run = closed_loop(base + path, bodies, c, seconds)
                run.pop("_samples")
                run.pop("stages")
                out[name].append(run)
    return out


def run_bench(seconds: float = 5.0, clients: tuple[int, ...] = (1, 16), users: int = 30,
              out: Path | None = None) -> dict[str, Any]:
    """Both topologies, each measured beside its no-op floor; the report (written to ``out``)."""
    report: dict[str, Any] = {"seconds": seconds, "clients": list(clients), "replicas": 2}
    root = Path(tempfile.mkdtemp(prefix="mqbench-", dir="/tmp"))  # Ray's socket paths
    try:
        _run(report, root, seconds, clients, users)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _run(report: dict[str, Any], root: Path, seconds: float, clients: tuple[int, ...],
         users: int) -> None:
    from infra.ray_cluster import NOOP_APP, RayCluster
    from serve.replicas import APP

    with TestBed(HOSTS) as bed:
        world, redis_url = redis_world(bed, root, users)
        head, worker = bed.address("ray-head"), bed.address("ray-worker")
        cluster = RayCluster(bed, root / "ray", num_cpus=2)
        settings = world.settings(online_store="redis", replicas=2, host="0.0.0.0",
                                  port=HTTP_PORT)
        env = {"MARQUEE_REDIS_URL": redis_url}
        base = f"http://{head}:{HTTP_PORT}"
        cluster.start_node("ray-head")
        watch = cluster.watch(apps=(APP, NOOP_APP))
        try:
            for name, places, spread in (("1 node", [head, head], False),
                                         ("2 nodes", sorted([head, worker]), True)):
                if spread:
                    cluster.start_node("ray-worker")
                t0 = time.monotonic()
                cluster.deploy(settings, spread=spread, env=env, noop=True)
                watch.wait(lambda o, places=places: all(
                    a["running"] == 2 and a["replicas"] == places
                    for a in o["apps"].values()), 300, since=time.time())
                print(f"{name}: replicas on {places} after {time.monotonic() - t0:.1f} s",
                      file=sys.stderr, flush=True)
                report[name] = {"replica_nodes": places,
                                **_measure(bed, base, world.users, clients, seconds)}
        finally:
            watch.close()


def print_report(report: dict[str, Any]) -> None:
    """One row per topology and client count: the ranking beside its no-op floor."""
    print(f"{'topology':<9} {'clients':>7} {'rank req/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'errors':>6} | {'noop req/s':>10} {'p50 ms':>7} {'p99 ms':>7}")
    for name in ("1 node", "2 nodes"):
        if name not in report:
            continue
        for r, n in zip(report[name]["rank"], report[name]["noop"], strict=True):
            print(f"{name:<9} {r['clients']:>7} {r['rps']:>10.1f} {r.get('p50_ms', 0):>7.1f} "
                  f"{r.get('p99_ms', 0):>7.1f} {r['errors']:>6} | {n['rps']:>10.1f} "
                  f"{n.get('p50_ms', 0):>7.1f} {n.get('p99_ms', 0):>7.1f}")
