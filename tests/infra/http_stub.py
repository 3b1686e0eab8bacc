"""A real HTTP server for the front's tests: answers GET and POST with a fixed body, after a
delay (none for ``/readyz``), on a free loopback port.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from streams.launch import free_port


def handler(body: bytes, delay_s: float = 0.0) -> type[BaseHTTPRequestHandler]:
    """A keep-alive handler answering with ``body`` after ``delay_s``."""

    class Stub(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            if delay_s and not self.path.endswith("/readyz"):
                time.sleep(delay_s)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    return Stub


@contextmanager
def serving(body: bytes, delay_s: float = 0.0) -> Iterator[ThreadingHTTPServer]:
    """A running stub server (its port: ``server.server_address[1]``), shut down after."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler(body, delay_s))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
