"""The front routing to replicas' own ports (``infra.front_routes``): the runtime API commands,
and a real HAProxy front following a changing set of real HTTP servers, falling back to the
proxy while none is up, skipping one that stopped, and routed again after a SIGKILL.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from http.server import ThreadingHTTPServer

import httpx
import pytest

from infra.front import Front, FrontConfig, render
from infra.front_routes import commands
from streams.launch import free_port
from tests.infra.http_stub import serving


def test_commands_fill_slots_in_order_and_put_the_rest_in_maintenance():
    assert commands("rank", "r", 3, [("127.0.0.1", 30001), ("127.0.0.1", 30000)]) == [
        "set server rank/r1 addr 127.0.0.1 port 30001", "set server rank/r1 state ready",
        "set server rank/r2 addr 127.0.0.1 port 30000", "set server rank/r2 state ready",
        "set server rank/r3 state maint"]
    assert commands("other", "o", 1, []) == ["set server other/o1 state maint"]


def test_a_direct_front_needs_its_socket():
    cfg = FrontConfig("127.0.0.1", 1, "127.0.0.1", 2, inflight=4, queue=4, slots=2)
    with pytest.raises(ValueError, match="socket"):
        render(cfg)


@pytest.fixture
def servers() -> Iterator[dict[str, ThreadingHTTPServer]]:
    """Four servers answering with their own names: three replicas and Ray's proxy."""
    with ExitStack() as stack:
        yield {name: stack.enter_context(serving(name.encode()))
               for name in ("a", "b", "c", "proxy")}


def _who(url: str, n: int = 12) -> list[str]:
    """Who answered ``n`` rankings, each on a new connection (so the balancer picks anew)."""
    out = []
    for _ in range(n):
        r = httpx.post(f"{url}/v1/rank", json={}, timeout=10)
        assert r.status_code == 200, r.text
        out.append(r.text)
    return out


def test_the_front_follows_the_replicas(servers, tmp_path):
    def at(*names: str) -> list[tuple[str, int]]:
        return [("127.0.0.1", servers[n].server_address[1]) for n in names]

    replicas: dict[str, list[tuple[str, int]]] = {}
    cfg = FrontConfig("127.0.0.1", free_port(), "127.0.0.1", servers["proxy"].server_address[1],
                      inflight=8, queue=8, slots=3, replica_inflight=4)
    gate = Front(cfg, tmp_path, targets=lambda: replicas)
    gate.start()
    try:
        assert set(_who(gate.url)) == {"proxy"}  # no replica yet: Ray's proxy takes it
        replicas["/"] = at("a", "b")
        assert gate.routes is not None and gate.routes.sync()
        assert set(_who(gate.url)) == {"a", "b"}
        assert not gate.routes.sync()  # unchanged: nothing sent
        replicas["/"] = at("c")  # a and b replaced by c
        gate.routes.sync()
        assert set(_who(gate.url)) == {"c"}
        assert httpx.get(f"{gate.url}/readyz", timeout=10).text == "proxy"  # Ray routes those
        assert httpx.post(f"{gate.url}/other-app/v1/rank", timeout=10).text == "proxy"

        replicas["/"] = at("a", "c")
        gate.routes.sync()
        servers["a"].shutdown()
        servers["a"].server_close()  # a dies before Ray replaces it: sent on to c
        assert set(_who(gate.url)) == {"c"}

        (pid,) = gate.pids()
        os.kill(pid, signal.SIGKILL)
        gate.proc.wait(5)
        gate.start()  # as the supervisor does: a new HAProxy, its slots routed again
        assert set(_who(gate.url)) == {"c"}
    finally:
        gate.stop()


_SLOW_SERVER = """
import sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        print("taken", flush=True)
        time.sleep(30)
server = HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
print("up", flush=True)
server.serve_forever()
"""


def test_a_request_in_flight_on_a_sigkilled_replica_is_answered_by_another(servers, tmp_path):
    import subprocess
    import sys

    port = free_port()
    doomed = subprocess.Popen([sys.executable, "-c", _SLOW_SERVER, str(port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert doomed.stdout is not None and doomed.stdout.readline().strip() == "up"
        live = ("127.0.0.1", servers["b"].server_address[1])
        cfg = FrontConfig("127.0.0.1", free_port(), "127.0.0.1",
                          servers["proxy"].server_address[1], inflight=8, queue=8, slots=2,
                          replica_inflight=4)
        # the doomed replica first in its slot list; leastconn sends the first request there
        gate = Front(cfg, tmp_path, targets=lambda: {"/": [("127.0.0.1", port), live]})
        gate.start()
        try:
            answer: list[httpx.Response] = []
            call = threading.Thread(target=lambda: answer.append(
                httpx.post(f"{gate.url}/v1/rank", json={}, timeout=20)))
            call.start()
            assert doomed.stdout.readline().strip() == "taken"  # in flight on the doomed one
            os.kill(doomed.pid, signal.SIGKILL)
            call.join(20)
            assert answer and answer[0].status_code == 200 and answer[0].text == "b"
        finally:
            gate.stop()
    finally:
        doomed.kill()
        doomed.wait(5)
