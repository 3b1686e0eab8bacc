"""The admission front (``infra.front``): its configuration as HAProxy reads it, the queue
bound against a real slow backend, and a SIGKILLed front started again by the supervisor."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.front import Front, FrontConfig, FrontSettings, render, write
from infra.supervisor import RestartPolicy, Supervisor
from serve.config import ServeSettings
from streams.launch import free_port
from tests.infra.http_stub import serving


@pytest.fixture
def backend() -> Iterator[int]:
    """A backend answering every request after 0.3 s (``/readyz`` at once)."""
    with serving(b'{"ok": true}', delay_s=0.3) as server:
        yield server.server_address[1]


def test_the_bounds_follow_the_service_settings_and_haproxy_accepts_the_config(tmp_path):
    serve = ServeSettings(replicas=3, max_ongoing_requests=8, max_queued_requests=20,
                          request_timeout_ms=4000, retry_after_s=2)
    cfg = FrontConfig.for_service(serve, FrontSettings(), 8123, 9000)
    assert (cfg.inflight, cfg.queue, cfg.wait_ms, cfg.retry_after_s) == (24, 20, 4000, 2)
    mine = FrontConfig.for_service(serve, FrontSettings(inflight_per_replica=2, queue=0),
                                   8123, 9000)
    assert (mine.inflight, mine.queue) == (6, 0)
    text = render(cfg, tmp_path / "admin.sock")  # direct: a slot per replica, 8 in flight each
    assert "server-template r 1-8 " in text and "maxconn 8\n" in text and "maxconn 24" in text
    assert "queue(rank) ge 20" in text and "Retry-After 2" in text
    assert write(cfg, tmp_path).exists()  # `haproxy -c` passed
    proxied = FrontConfig.for_service(serve, FrontSettings(direct=False), 8123, 9000)
    text = render(proxied)  # through Ray's proxy: one server, the whole bound
    assert "server-template" not in text and "server ray 127.0.0.1:9000 maxconn 24" in text
    assert write(proxied, tmp_path).exists()


def test_past_its_queue_the_front_answers_503_at_once(backend, tmp_path):
    gate = Front(FrontConfig("127.0.0.1", free_port(), "127.0.0.1", backend, inflight=1,
                             queue=2), tmp_path)
    gate.start()
    try:
        results: list[tuple[int, float, httpx.Response]] = []
        clients = [httpx.Client(timeout=30) for _ in range(12)]  # made before the clock runs

        def call(client: httpx.Client) -> None:
            t0 = time.perf_counter()
            r = client.post(f"{gate.url}/v1/rank", json={})
            results.append((r.status_code, time.perf_counter() - t0, r))

        threads = [threading.Thread(target=call, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        time.sleep(0.1)
        probe = time.perf_counter()
        assert httpx.get(f"{gate.url}/readyz", timeout=5).status_code == 200
        probe = time.perf_counter() - probe
        for t in threads:
            t.join()
    finally:
        gate.stop()
    codes = sorted(r[0] for r in results)
    answered = [r for r in results if r[0] == 200]
    shed = [r for r in results if r[0] == 503]
    # one at a time at 0.3 s each: the one in flight and the two queued are answered, maybe
    # one more that arrived after a slot freed; the rest are refused
    assert 3 <= len(answered) <= 5 and len(shed) == 12 - len(answered), codes
    assert max(s for _, s, _ in shed) < 0.25, shed  # not held for a slot
    assert all(r.headers["retry-after"] == "1" and "retry after 1 s" in r.json()["detail"]
               for *_, r in shed)
    assert probe < 0.25  # other paths are not queued behind the rankings


def test_a_sigkilled_front_is_started_again_by_the_supervisor(backend, tmp_path: Path):
    gate = Front(FrontConfig("127.0.0.1", free_port(), "127.0.0.1", backend, inflight=4,
                             queue=4), tmp_path)
    sup = Supervisor(RestartPolicy(backoff_s=0.1), state_file=tmp_path / "stack.json")
    sup.add("front", gate, tmp_path / "haproxy.log")
    try:
        assert httpx.get(f"{gate.url}/readyz", timeout=5).status_code == 200
        (pid,) = gate.pids()
        os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + 10
        while time.monotonic() < end and (not gate.alive() or gate.pids() == [pid]):
            sup.check()
            time.sleep(0.05)
        assert gate.alive() and gate.pids() != [pid]
        assert httpx.post(f"{gate.url}/v1/rank", json={}, timeout=5).status_code == 200
    finally:
        sup.stop_all()
    assert not gate.alive()


def test_with_the_service_away_the_front_says_so_in_json(tmp_path):
    gate = Front(FrontConfig("127.0.0.1", free_port(), "127.0.0.1", free_port(), inflight=4,
                             queue=4), tmp_path)  # nothing listens on the backend port
    gate.start()
    try:
        r = httpx.post(f"{gate.url}/v1/rank", json={}, timeout=30)
    finally:
        gate.stop()
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "/readyz" in r.json()["detail"]
