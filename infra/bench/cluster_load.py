"""Steady ranking load from one host of a network-namespace bed: what the Ray cluster tests
and ``marquee bench cluster`` send while they kill things.

Each client thread enters the host's namespace (``TestBed.inside``), keeps one keep-alive
connection, and sends a request every ``period_s`` (at once when the last answer came late),
so the offered load stays the same whatever the service does; every call is recorded with
its wall-clock send and answer times, its status (-1: no answer within ``timeout_s``) and
whether the answer said ``degraded``.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from infra.netns import TestBed


@dataclass(frozen=True)
class Call:
    """One request: wall-clock times (s), HTTP status (-1: none), ``degraded`` if answered."""

    sent: float
    done: float
    status: int
    degraded: bool | None = None


class SteadyLoad:
    """``clients`` threads on ``host``, each POSTing one of ``bodies`` every ``period_s``."""

    def __init__(self, bed: TestBed, host: str, url: str, bodies: list[dict],
                 clients: int = 4, period_s: float = 0.2, timeout_s: float = 5.0) -> None:
        self.bed, self.host, self.url = bed, host, url
        self.payloads = [json.dumps(b).encode() for b in bodies]
        self.clients, self.period_s, self.timeout_s = clients, period_s, timeout_s
        self.calls: list[Call] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> SteadyLoad:
        """Start the client threads."""
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True)
                         for i in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> list[Call]:
        """Stop sending, wait for the last answers; every call, in send order."""
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout_s + 5)
        return sorted(self.calls, key=lambda c: c.sent)

    def _client(self, i: int) -> None:
        parts = urlsplit(self.url)
        with self.bed.inside(self.host):
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout_s)
            next_at = time.monotonic() + self.period_s * i / self.clients  # spread the clients
            while not self._stop.is_set():
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at = max(next_at + self.period_s, time.monotonic())
                payload = self.payloads[i % len(self.payloads)]
                i += self.clients
                sent = time.time()
                status, degraded = -1, None
                try:
                    conn.request("POST", parts.path, body=payload,
                                 headers={"Content-Type": "application/json"})
                    answer = conn.getresponse()
                    body = answer.read()
                    status = answer.status
                    if status == 200:
                        degraded = bool(json.loads(body).get("degraded"))
                except (OSError, http.client.HTTPException):
                    conn.close()  # a fresh connection for the next request
                    conn = http.client.HTTPConnection(parts.hostname, parts.port,
                                                      timeout=self.timeout_s)
                self.calls.append(Call(sent, time.time(), status, degraded))
            conn.close()


def failures(calls: list[Call]) -> list[Call]:
    """Calls not answered 200 (5xx, 503 shed, or no answer)."""
    return [c for c in calls if c.status != 200]
