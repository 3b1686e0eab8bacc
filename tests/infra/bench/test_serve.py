"""The serve benchmark's load generators against a tiny local HTTP server (no Ray): counts,
stage parsing, and saturation that stops offering instead of queueing forever."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from infra.bench.serve import closed_loop, open_loop


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # headers and body in one write (no Nagle stall)
    delay_s = 0.0

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.delay_s)
        body = json.dumps({"latency_ms": {"total": 1.5}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}/v1/rank", handler
    srv.shutdown()


def test_closed_loop_counts_every_answer_and_reads_the_stages(server) -> None:
    url, _ = server
    got = closed_loop(url, [{"user_id": "u1"}], clients=2, seconds=0.5)
    assert got["errors"] == 0 and got["n"] == len(got["_samples"]) > 10
    assert got["stages"]["total"]["p50_ms"] == pytest.approx(1.5)


def test_open_loop_keeps_up_below_capacity(server) -> None:
    url, _ = server
    got = open_loop(url, [{"user_id": "u1"}], rate=40, seconds=0.5)
    assert not got["saturated"] and got["unfinished"] == 0 and got["errors"] == 0
    assert got["n"] == got["offered"] > 5


def test_open_loop_over_capacity_stops_offering_and_says_so(server) -> None:
    url, handler = server
    handler.delay_s = 0.05  # 2 connections -> at most 40 answers/s
    got = open_loop(url, [{"user_id": "u1"}], rate=2000, seconds=5.0, max_outstanding=10,
                    connections=2)
    assert got["saturated"]
    assert got["offered"] < 2000 * 5 / 10  # stopped long before the schedule ended


def test_overload_tells_answered_from_shed_and_from_failed(server) -> None:
    url, handler = server
    count = [0]
    lock = threading.Lock()

    def do_post(self) -> None:  # every third request is shed, every fifth fails
        self.rfile.read(int(self.headers["Content-Length"]))
        with lock:
            count[0] += 1
            n = count[0]
        status = 503 if n % 3 == 0 else 500 if n % 5 == 0 else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
        self.wfile.flush()

    handler.do_POST = do_post
    from infra.bench.serve import overload

    got = overload(url, [{"user_id": "u1"}], rate=200, seconds=0.5, connections=8)
    n = got["offered"]
    assert got["answered"]["n"] + got["shed"]["n"] + got["other_errors"] == n == count[0]
    assert got["shed"]["n"] == n // 3
    assert got["other_errors"] == n // 5 - n // 15
