"""Prometheus metrics of the ranking service, defined once here.

Ray Serve runs each replica in its own process, so a plain registry would only show the
replica that happened to answer the scrape. The app sets ``PROMETHEUS_MULTIPROC_DIR`` for
every replica (``runtime_env``) before this module is imported there; each process then
writes its samples to files in that directory and ``GET /metrics`` on any replica merges them
with ``MultiProcessCollector``. Each host writes a folder of its own inside it (created here:
a ``serve deploy`` cluster has no ``marquee up`` to make it): hosts that share the data volume
would otherwise mix files of equal PIDs, and every host's ``/metrics`` would repeat the
others' samples. Without the variable (tests, one process) the default registry is used.
Labels are low-cardinality only: route, status code, stage, model version, reason,
constraint family; never a user or an item.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _host_folder() -> None:
    """Point ``MULTIPROC_ENV`` at this host's folder inside it, and make it (before any
    metric below opens its file there).
    """
    base = os.environ.get(MULTIPROC_ENV)
    if not base:
        return
    host = socket.gethostname() or "host"
    folder = base if os.path.basename(os.path.normpath(base)) == host else os.path.join(base,
                                                                                        host)
    os.makedirs(folder, exist_ok=True)
    os.environ[MULTIPROC_ENV] = folder


_host_folder()
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05,
                   0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter("marquee_requests_total", "HTTP requests by route, status and model version",
                   ["route", "code", "model_version"])
SHED = Counter("marquee_requests_shed_total",
               "requests answered 503 instead of computed, by reason (expired: the deadline "
               "passed while queued in the replica)", ["reason"])
REQUEST_SECONDS = Histogram("marquee_request_seconds", "time per ranking stage",
                            ["stage", "model_version"], buckets=LATENCY_BUCKETS)
BATCH_SIZE = Histogram("marquee_batch_size", "requests per ONNX inference batch",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128))
MODEL_INFO = Gauge("marquee_model_info", "1 for the model version a replica serves",
                   ["model_version"], multiprocess_mode="max")
RERANK_SOLVE_SECONDS = Histogram("marquee_rerank_solve_seconds", "goal re-ranker time",
                                 buckets=LATENCY_BUCKETS)
RERANK_INFEASIBLE = Counter("marquee_rerank_infeasible_total",
                            "re-ranks whose constraints could not all hold")
RERANK_RELAXATIONS = Counter("marquee_rerank_relaxations_total",
                             "constraints relaxed, by family", ["family"])
CONSTRAINTS = Counter("marquee_constraints_total",
                      "constraint outcomes per response: satisfied, binding or relaxed",
                      ["family", "outcome"])
FALLBACKS = Counter("marquee_fallbacks_total", "responses made by a fallback path", ["reason"])
DEGRADED = Counter("marquee_degraded_responses_total", "responses with degraded: true")
SHOWN = Counter("marquee_shown_items_total",
                "items returned; segment popular = over-exposed titles, new = new titles, "
                "cold = titles the model knows by metadata only; "
                "shares are ratios of these", ["segment"])
EXPERIMENT_REQUESTS = Counter(
    "marquee_experiment_requests_total", "rankings served per experiment variant (an "
    "interleaved list counts once under each of its two teams)", ["experiment", "variant"])
RANKINGS_LOGGED = Counter(
    "marquee_rankings_logged_total", "ranking records by outcome: delivered (acknowledged), "
    "failed (not acknowledged in time), dropped (the local queue was full)", ["result"])
COVERAGE = Gauge("marquee_catalogue_coverage_ratio",
                 "distinct titles shown since start / catalogue size (per replica; max merged)",
                 multiprocess_mode="max")


def render() -> tuple[bytes, str]:
    """The exposition text of every process (multiprocess) or of this one."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


class CountRequests:
    """ASGI middleware counting answers by route, status and model version.

    A plain ASGI class, not ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware``
    runs the app in a second task with memory streams between, a cost every request paid.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Pass the request on; count the status the app answered with."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "other")
            version = getattr(getattr(scope.get("app"), "state", None), "model_version", "none")
            REQUESTS.labels(route, str(status[0]), version).inc()
