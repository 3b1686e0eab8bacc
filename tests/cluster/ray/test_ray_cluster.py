"""The ranking service on a two-node Ray cluster across network-namespace hosts: replicas
on both nodes, a ``ray-worker`` SIGKILLed under load, a Redis outage under load.
"""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

import pytest

from infra.bench.cluster_load import SteadyLoad, failures
from tests.cluster.flow_cluster import record

pytestmark = [pytest.mark.cluster, pytest.mark.integration]
DOWN_S = 3.0  # how long the worker host stays down before `ray start` runs there again
REDIS_DOWN_S = 3.0


def _post(url: str, body: dict, timeout: float = 10) -> tuple[int, dict]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("POST", parts.path, body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        conn.close()


def _bodies(world) -> list[dict]:
    return [{"user_id": u, "k": 10} for u in world.users[:8]]


def _ips(seen: dict) -> list[str]:
    return sorted(ip for ip, _ in seen["nodes"])


def _answered_by_pid(world) -> dict[int, float]:
    """``/v1/rank`` requests each replica process counted (its Prometheus multiprocess file;
    the hosts share the file system, and the files are named by pid).
    """
    from prometheus_client.mmap_dict import MmapedDict

    out = {}
    for path in (world.data_dir / "prometheus-multiproc").glob("*/counter_*.db"):
        values = MmapedDict(str(path), read_mode=True)
        try:
            out[int(path.stem.split("_")[1])] = sum(
                v for key, v, *_ in values.read_all_values()
                if '"marquee_requests_total"' in key and "/v1/rank" in key)
        finally:
            values.close()
    return out


def _longest_silence(calls, start: float, end: float) -> float:
    """The longest stretch in [start, end] with no request answered 200 (s)."""
    done = sorted([start, *(c.done for c in calls if c.status == 200 and start < c.done < end),
                   end])
    return max(b - a for a, b in zip(done, done[1:], strict=False))


def test_replicas_run_on_both_nodes_and_the_client_ranks_through_the_head(ray_bed):
    bed = ray_bed.bed
    seen = ray_bed.watch.seen[-1]
    assert _ips(seen) == sorted([bed.address("ray-head"), bed.address("ray-worker")])
    assert seen["replicas"] == _ips(seen) and seen["running"] == 2
    user = ray_bed.world.users[0]
    with bed.inside("client"):
        status, got = _post(ray_bed.url, {"user_id": user, "k": 8})
    assert status == 200, got
    assert len(got["items"]) == 8 and got["degraded"] is False and got["model_version"] == "fm-a"


def test_a_redis_outage_under_load_degrades_without_errors_and_ends_by_itself(ray_bed, costs):
    import redis

    bed = ray_bed.bed
    with bed.inside("client"):
        keys_before = redis.Redis.from_url(ray_bed.redis_url).dbsize()
    load = SteadyLoad(bed, "client", ray_bed.url, _bodies(ray_bed.world)).start()
    time.sleep(1.5)
    kill_at = time.time()
    bed.kill("redis")
    time.sleep(REDIS_DOWN_S)
    restart_at = time.time()
    ray_bed.start_redis()
    up_at = time.time()
    time.sleep(3)
    calls = load.stop()
    with bed.inside("client"):
        keys_after = redis.Redis.from_url(ray_bed.redis_url).dbsize()

    before = [c for c in calls if c.done < kill_at]
    during = [c for c in calls if kill_at + 0.2 < c.sent and c.done < restart_at]
    after = [c for c in calls if c.sent > up_at + 1.5]
    recovered = min((c.done for c in calls if c.sent > up_at and c.degraded is False),
                    default=None)
    slowest = max(c.done - c.sent for c in calls if c.sent > kill_at)
    record(costs, fault="redis SIGKILL under ranking load", **{
                      "calls": len(calls), "failed": len(failures(calls)),
                      "sent_in_outage": len([c for c in calls
                                             if kill_at < c.sent < restart_at]),
                      "answered_degraded_in_outage": len(during),
                      "recovered_after_restart_s": recovered and round(recovered - up_at, 3),
                      "redis_start_s": round(up_at - restart_at, 3),
                      "slowest_ms": round(slowest * 1e3, 1)})
    assert failures(calls) == [], [(round(c.sent - kill_at, 2), c.status)
                                   for c in failures(calls)]
    assert before and not any(c.degraded for c in before)
    assert during and all(c.degraded for c in during)  # the store is away: session events
    assert after and not any(c.degraded for c in after)  # back by itself, no restart
    assert slowest < 1.0, slowest  # a read fails fast; none waits on redis-py's retries
    assert keys_after == keys_before > 0  # the append-only file brought every row back


def test_killing_the_worker_host_under_load_leaves_the_head_answering(ray_bed, costs):
    bed, watch, cluster = ray_bed.bed, ray_bed.watch, ray_bed.cluster
    head, worker = bed.address("ray-head"), bed.address("ray-worker")
    old_node = next(i for ip, i in watch.seen[-1]["nodes"] if ip == worker)
    placed = dict((ip, pid) for ip, pid in watch.seen[-1]["placed"])
    counted = _answered_by_pid(ray_bed.world)
    load = SteadyLoad(bed, "client", ray_bed.url, _bodies(ray_bed.world)).start()
    time.sleep(3)
    served = {ip: _answered_by_pid(ray_bed.world).get(pid, 0) - counted.get(pid, 0)
              for ip, pid in placed.items()}
    kill_at = time.time()
    killed = set(bed.kill("ray-worker"))
    time.sleep(DOWN_S)
    restart_at = time.time()
    start_s = cluster.start_node("ray-worker")
    joined = watch.wait(lambda o: any(ip == worker and i != old_node for ip, i in o["nodes"]),
                        60, since=restart_at)
    full = watch.wait(lambda o: o["running"] == 2 and o["replicas"] == sorted([head, worker])
                      and not killed & set(o["pids"]), 120, since=restart_at)
    time.sleep(2)
    calls = load.stop()

    failed = failures(calls)
    in_flight = [c for c in calls if c.sent < kill_at < c.done]
    # The head's proxy spreads requests over both nodes (Ray's default would keep them on the
    # head's replica, and this kill would cost nothing): the worker's replica had its share.
    assert served[worker] >= 0.2 * sum(served.values()) > 0, served
    # Only requests on the worker's replica when it died may fail; none sent afterwards.
    assert len(failed) <= len(in_flight), failed
    assert all(c.sent < kill_at for c in failed), [(c.sent - kill_at, c.status) for c in failed]
    # The head's replica answers through the whole gap (the client keeps 20 requests/s).
    assert _longest_silence(calls, kill_at, full["t"]) < 3.0
    gone = [o for o in watch.seen if o["t"] > kill_at
            and not any(i == old_node for _, i in o["nodes"])]
    record(costs, fault="ray-worker SIGKILL under ranking load", **{
        "calls": len(calls), "failed": [c.status for c in failed],
        "in_flight_at_kill": len(in_flight),
        "answered_before_kill": {"head": served[head], "worker": served[worker]},
        "ray_start_s": round(start_s, 2), "joined_after_restart_s": round(
            joined["t"] - restart_at, 2),
        "full_after_restart_s": round(full["t"] - restart_at, 2),
        "full_after_kill_s": round(full["t"] - kill_at, 2),
        "dead_node_noticed_s": round(gone[0]["t"] - kill_at, 2) if gone else None,
        "slowest_ms": round(max(c.done - c.sent for c in calls) * 1e3, 1)})
    assert full["t"] - restart_at < 60
