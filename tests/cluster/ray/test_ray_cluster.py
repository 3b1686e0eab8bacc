"""The ranking service on a two-node Ray cluster across network-namespace hosts: replicas
on both nodes, a ``ray-worker`` SIGKILLed under load, a Redis outage under load.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.integration]


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


def test_replicas_run_on_both_nodes_and_the_client_ranks_through_the_head(ray_bed):
    bed = ray_bed.bed
    seen = ray_bed.watch.seen[-1]
    assert seen["nodes"] == sorted([bed.address("ray-head"), bed.address("ray-worker")])
    assert seen["replicas"] == seen["nodes"] and seen["running"] == 2
    user = ray_bed.world.users[0]
    with bed.inside("client"):
        status, got = _post(ray_bed.url, {"user_id": user, "k": 8})
    assert status == 200, got
    assert len(got["items"]) == 8 and got["degraded"] is False and got["model_version"] == "fm-a"
