"""The ranking service: one Ray Serve deployment with a FastAPI ingress over ``Ranker``.

The deployment parses, times, counts and calls; the logic lives in ``serve.ranker``. ONNX
inference goes through ``@ray_serve.batch`` so concurrent requests share one model call; a
request alone in the replica calls the model directly (the queue's hop is latency only). The model
path and the experiment config are ``user_config``: changing either (``rollover``,
``set_experiment``) calls ``reconfigure`` on the running replicas, which load the new files
beside the old ones and swap, so no request is dropped. Every answered ranking is logged to
Kafka (``serve.rankings_log``) without waiting for the broker.

Library entry points (what the CLI and the demo call): ``build_app(settings)``,
``start(settings) -> url``, ``rollover(settings, model_path)``,
``set_experiment(settings, spec)`` and ``stop()``.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route signatures at runtime
# and a string annotation on a method of a Ray Serve ingress class would not resolve.
import asyncio
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Query
from fastapi.responses import JSONResponse, Response
from ray import serve as ray_serve  # `serve` is this package

from serve import http_guard, metrics, priority, rankings_log
from serve.config import ServeSettings
from serve.experiment_config import load_experiment, parse_experiment
from serve.replicas import APP, DEPLOYMENT
from serve.schemas import (
    ApiError,
    Check,
    Health,
    RankRequest,
    RankResponse,
    SimilarItem,
    SimilarResponse,
)
from streams.contract.listen import LOOPBACK, is_loopback, is_wildcard

log = logging.getLogger(__name__)
APP_NAME = APP  # the app and deployment names live in serve.replicas, which reads them
NOOP_APP_NAME = "marquee-noop"
EXPIRED = object()  # what ``infer`` gives a request whose deadline passed while it waited

api = FastAPI(title="Marquee ranking service", version="1",
              description="Session-aware rankings from an ONNX foundation model of user "
                          "behaviour, re-ranked to a goal stated with the request.")
http_guard.install(api)
api.add_middleware(metrics.CountRequests)  # outermost, so that 413s are counted too


@ray_serve.deployment(name=DEPLOYMENT, max_ongoing_requests=64)
@ray_serve.ingress(api)
class RankingService:
    """HTTP ingress + ranking in one replica (features, batched inference, re-rank)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from serve.ranker import Ranker

        self.settings = ServeSettings(**settings)
        logging.basicConfig(level=logging.INFO)
        log.info(self.settings.summary())
        store = None
        try:
            from feature_repo.store import open_store

            store = open_store(data_dir=self.settings.data_dir,
                               online=self.settings.online_store,
                               redis_timeout_s=self.settings.store_timeout_s)
        except Exception as exc:  # noqa: BLE001 - no store: serve degraded, say so
            log.warning("feature store unavailable at start (%s); serving degraded", exc)
        self.ranker = Ranker(self.settings, store, None)
        self.model_path: str | None = None
        self.experiment: dict[str, Any] | None = None  # as last configured
        self.rankings = self._rankings_log()
        self._ranking = 0  # requests between features and inference (batch when > 1)
        self._serving = False  # priority.take done (after the first configuration)
        self.infer.set_max_batch_size(self.settings.batch_max_size)
        self.infer.set_batch_wait_timeout_s(self.settings.batch_wait_s)
        api.state.model_version = self.ranker.version
        http_guard.publish_limits(api, self.settings.k_max, self.settings.max_body_bytes)

    def _rankings_log(self) -> rankings_log.RankingsLog | None:
        if not self.settings.rankings_log:
            return None
        try:
            return rankings_log.RankingsLog(self.settings.bootstrap_servers,
                                            self.settings.rankings_topic,
                                            self.settings.rankings_queue_max)
        except Exception as exc:  # noqa: BLE001 - a bad client config must not stop serving
            log.warning("rankings log off: %s", exc)
            return None

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Load ``user_config["model_path"]`` (a rollover) and ``user_config["experiment"]``
        (a new experiment config) without stopping service: requests keep the old model or
        experiment until the new one is loaded, then the next request gets the new one.
        """
        path = user_config.get("model_path")
        if path and path != self.model_path:
            version = await asyncio.to_thread(self.ranker.load_model, Path(path))
            self.model_path = path
            api.state.model_version = version
        experiment = user_config.get("experiment")
        if experiment != self.experiment:
            parsed = parse_experiment(experiment, "user_config.experiment")
            plan = await asyncio.to_thread(self.ranker.build_plan, parsed)
            self.ranker.plan = plan
            self.experiment = experiment
        if not self._serving:  # Serve configures a new replica once before routing to it
            self._serving = True
            log.info("serving at niceness %d", priority.take(self.settings.replica_niceness))

    @ray_serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def infer(self, prepared: list[Any]) -> list[Any]:
        """One ONNX call for every request that arrived within the batch window; requests
        whose deadline passed while they waited are left out (``EXPIRED``), not computed.
        """
        now = time.monotonic()
        live = [i for i, p in enumerate(prepared) if p.deadline is None or p.deadline > now]
        out: list[Any] = [EXPIRED] * len(prepared)
        if live:
            for i, result in zip(live, self.ranker.infer([prepared[i] for i in live]),
                                 strict=True):
                out[i] = result
        return out

    @api.post("/v1/rank", response_model=RankResponse, response_model_exclude_none=True,
              responses=http_guard.ERROR_RESPONSES)
    async def rank(self, req: RankRequest, x_request_timeout_ms: int | None = Header(
            None, ge=1, le=60_000, description="drop the request with 503 if it is not "
            "answered within this many ms of the replica taking it (default "
            "MARQUEE_REQUEST_TIMEOUT_MS)")) -> Any:
        """Rank for a user now: stored history + in-session events, then the goal re-rank."""
        answer = await self.ranking(req, x_request_timeout_ms)
        if isinstance(answer, Response):
            return answer
        # Serialized here, in pydantic's Rust encoder: FastAPI would validate the model again
        # against ``response_model`` and encode it through Python dicts.
        return Response(answer.model_dump_json(exclude_none=True), media_type="application/json")

    async def ranking(self, req: RankRequest, timeout_ms: int | None = None
                      ) -> RankResponse | Response:
        """The ranking itself (what ``/v1/rank`` answers; handle callers call this): a 503
        ``Response`` when the deadline passes first.
        """
        t0 = time.perf_counter()
        timeout_ms = timeout_ms or self.settings.request_timeout_ms
        deadline = time.monotonic() + timeout_ms / 1000
        try:
            prepared = self.ranker.prepare(req)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        prepared.deadline = deadline
        self._ranking += 1
        try:
            if time.monotonic() > deadline:
                inferred = EXPIRED
            elif self._ranking == 1:  # alone: the batch queue's hop would only add latency
                inferred = self.ranker.infer([prepared])[0]
            else:
                inferred = await self.infer(prepared)
        finally:
            self._ranking -= 1
        if inferred is EXPIRED:
            return self._expired(timeout_ms, t0)
        response = self.ranker.finish(prepared, inferred)
        if response.latency_ms is not None:
            response.latency_ms["total"] = (time.perf_counter() - t0) * 1e3
        metrics.REQUEST_SECONDS.labels("total", response.model_version).observe(
            time.perf_counter() - t0)
        if self.rankings is not None:
            self.rankings.produce(response.user_id, rankings_log.record(prepared, response))
        return response

    def _expired(self, timeout_ms: int, t0: float) -> Response:
        """503 for a request whose deadline passed before its ranking was computed."""
        metrics.SHED.labels("expired").inc()
        waited = (time.perf_counter() - t0) * 1000
        answer = http_guard.error_response(503, (
            f"not computed: the request's deadline of {timeout_ms} ms passed after "
            f"{waited:.0f} ms in the replica (the service is overloaded); retry after "
            f"{self.settings.retry_after_s} s, or allow more with X-Request-Timeout-Ms"))
        answer.headers["Retry-After"] = str(self.settings.retry_after_s)
        return answer

    @api.get("/v1/similar/{item_id}", response_model=SimilarResponse,
             responses={404: {"model": ApiError, "description": "unknown item"},
                        422: http_guard.ERROR_RESPONSES[422],
                        503: {"model": ApiError, "description": "no model"}})
    async def similar(self, item_id: str, k: int = Query(10, ge=1, le=100)) -> SimilarResponse:
        """Titles nearest to ``item_id`` in the model's item space."""
        try:
            items = self.ranker.similar(item_id, k)
        except KeyError:
            raise HTTPException(404, f"item {item_id!r} is not in the model's catalogue; "
                                     "use an item id the model was trained on") from None
        except LookupError as exc:
            raise HTTPException(503, f"{exc}; see /readyz") from None
        return SimilarResponse(item_id=item_id, model_version=self.ranker.version,
                               items=[SimilarItem(item_id=i, score=s) for i, s in items])

    @api.get("/healthz", response_model=Health)
    async def healthz(self) -> Health:
        """The process answers."""
        return Health(status="ok", model_version=self.ranker.version)

    @api.get("/readyz", response_model=Health, responses={503: {"model": Health}})
    async def readyz(self) -> Any:
        """Ready when every dependency answers: a model is loaded and the feature store
        answers a read (within ``readyz_timeout_s``). Otherwise 503 with each check, so an
        operator sees which one; ``/v1/rank`` still answers meanwhile, degraded.
        """
        try:
            checks = await asyncio.wait_for(asyncio.to_thread(self.ranker.checks),
                                            self.settings.readyz_timeout_s)
        except TimeoutError:
            checks = {"feature_store": Check(
                ok=False, detail=f"no answer within {self.settings.readyz_timeout_s} s")}
        failed = [name for name, c in checks.items() if not c.ok]
        health = Health(status="not ready" if failed else "ready",
                        model_version=self.ranker.version, checks=checks,
                        detail="; ".join(f"{n}: {checks[n].detail}" for n in failed))
        if failed:
            return JSONResponse(status_code=503, content=health.model_dump())
        return health

    @api.get("/metrics", response_class=Response)
    async def metrics(self) -> Response:
        """Prometheus exposition of every replica (multiprocess files)."""
        body, content_type = metrics.render()
        return Response(content=body, media_type=content_type)


noop_api = FastAPI(title="no-op")


@ray_serve.deployment(name="NoOp", max_ongoing_requests=64)
@ray_serve.ingress(noop_api)
class NoOp:
    """The framework's floor for ``marquee bench serve``: parses the same body, does nothing."""

    @noop_api.post("/v1/rank")
    async def rank(self, req: RankRequest) -> dict[str, str]:
        """Echo the user id."""
        return {"user_id": req.user_id}


def deployment_options(settings: ServeSettings) -> dict[str, Any]:
    """The ranking deployment's Ray Serve options as plain data: what ``build_app`` passes to
    ``.options`` and what a ``serve deploy`` config file lists (one source for both).
    """
    env = {"PROMETHEUS_MULTIPROC_DIR": str(_multiproc_dir(settings))}
    experiment = load_experiment(settings.experiments)  # refused here, before any deploy
    return {
        "num_replicas": settings.replicas,
        "user_config": {"model_path": str(settings.model_path) if settings.model_path else None,
                        "experiment": experiment.model_dump(mode="json", exclude_none=True)
                        if experiment is not None else None},
        "health_check_period_s": settings.health_check_period_s,
        "max_ongoing_requests": settings.max_ongoing_requests,
        "max_queued_requests": settings.max_queued_requests,
        "backpressure_config": {"status_code": 503, "retry_after_s": settings.retry_after_s},
        "request_router_config": {"initial_backoff_s": min(0.001, settings.route_retry_max_s),
                                  "max_backoff_s": settings.route_retry_max_s},
        "ray_actor_options": {"num_cpus": 0, "runtime_env": {"env_vars": env}},
    }


def build_app(settings: ServeSettings) -> Any:
    """The bound application; the model path travels as ``user_config`` (rollover-able)."""
    # The model and the experiment travel as user_config (reconfigure); a change to the rest
    # of the settings starts new replicas.
    init = settings.model_dump(mode="json", exclude={"model_path", "experiments"})
    return RankingService.options(**deployment_options(settings)).bind(init)


def app_builder(args: dict[str, Any]) -> Any:
    """Ray Serve application builder (``import_path: serve.app:app_builder`` in a config file
    for ``serve deploy``/``serve run``): ``args`` are ``ServeSettings`` fields, on top of the
    ``MARQUEE_*`` environment of the process that builds it.
    """
    return build_app(ServeSettings(**args))


def noop_builder(args: dict[str, Any]) -> Any:
    """The no-op floor as a Serve application builder (``import_path:
    serve.app:noop_builder``), for benchmarks that deploy from a config file; ``args`` unused.
    """
    return NoOp.options(ray_actor_options={"num_cpus": 0}).bind()


def _multiproc_dir(settings: ServeSettings) -> Path:
    return (settings.data_dir / "prometheus-multiproc").resolve()


# Processes started by ``ray.init`` inherit this environment, so the controller, the proxy and
# the replicas read these; set them to override.
# - Ray Serve kills an HTTP proxy that is not ready 5 s after it starts, and ``serve.start``
#   then fails: on a busy 2-core machine importing the proxy takes longer.
# - Ray Serve's throughput preset: user code and the router on their process's main event
#   loop (a second thread per process fought the first for the GIL), proxy -> replica over
#   gRPC, buffered request logs, GC frozen after start. Its direct ingress (each replica
#   answering HTTP on its own port) is off here and turned on by ``start(direct_ingress=True)``
#   on one machine, where the admission front routes to those ports (``DIRECT_INGRESS_ENV``).
# - On a cluster, a proxy routes to replicas on every node, not first to its own node's: with
#   Ray's preference, clients entering through one proxy left another node's replica idle
#   until the local one had max_ongoing_requests in flight (docs/design.md). No effect on one
#   node.
RAY_ENV_DEFAULTS = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
                    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
                    "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0"}


# Direct ingress on one machine: each ingress replica also answers HTTP on a port of its own
# (30000-31000, on the service's host), which the admission front routes to (``infra.front``),
# so a request skips Ray's proxy and its hop to the replica: at one client 1.8-1.9 against
# 8.6 ms at p50, at 32 clients 3x the requests/s (docs/results.md). Ray's proxy still listens on the
# service port. A stopping replica waits this long for the front to stop routing to it (the
# front follows the replicas every 0.5 s; Ray's default of 30 s is sized for cloud balancers).
DIRECT_INGRESS_ENV = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
                      "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}


def init_ray(num_cpus: int | None = None, bind_host: str = LOOPBACK,
             direct_ingress: bool = False) -> None:
    """Start a local Ray instance (if none is running) with Marquee's Serve defaults, its
    ports on ``bind_host`` (``MARQUEE_BIND_HOST``); ``direct_ingress`` adds
    ``DIRECT_INGRESS_ENV`` (read when Ray starts: an instance already running keeps its mode,
    and a process that started one in that mode starts later ones in it too).
    """
    import ray

    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if direct_ingress and not ray.is_initialized():
        os.environ.update(DIRECT_INGRESS_ENV)  # the front asked for it (MARQUEE_FRONT_DIRECT)
    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus or max(2, os.cpu_count() or 2), include_dashboard=False,
                 log_to_driver=False, configure_logging=False, **_ray_bind(bind_host))
        node_ip = ray.util.get_node_ip_address()
        if is_loopback(bind_host) and not is_loopback(node_ip):
            ray.shutdown()
            raise RuntimeError(f"Ray started on {node_ip}, not loopback, although "
                               f"MARQUEE_BIND_HOST={bind_host}: this Ray version ignores "
                               f"{RAY_LOOPBACK_VARIABLE}=0; pin the ray version in "
                               "pyproject.toml or set MARQUEE_BIND_HOST to that address")


# Ray keeps a single-node instance on loopback only in the mode it uses on macOS and Windows
# (this variable = 0): then the GCS, raylet, object manager, workers, dashboard agent (with
# the metrics export port) and runtime-env agent all bind 127.0.0.1. ``ray.init`` swaps a
# loopback ``_node_ip_address`` for the machine's address, so that alone is not enough.
RAY_LOOPBACK_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _ray_bind(host: str) -> dict[str, str]:
    """``ray.init`` arguments (and environment) that put Ray's ports on ``host``."""
    if is_loopback(host):
        from ray._private import ray_constants

        os.environ[RAY_LOOPBACK_VARIABLE] = "0"  # read by every process Ray starts
        ray_constants.ENABLE_RAY_CLUSTER = False  # this process read it at import
        return {}
    if is_wildcard(host):
        return {}  # Ray's default: the machine's address, gRPC servers on every interface
    return {"_node_ip_address": host}


def start(settings: ServeSettings, noop: bool = False, direct_ingress: bool = False) -> str:
    """Start Ray Serve (if needed) and the app on ``settings.host:port``; returns the URL.

    ``noop=True`` also deploys the no-op baseline under ``/noop``; ``direct_ingress=True``
    starts Ray with its replicas answering on their own ports too (``replica_targets``).
    """
    init_ray(bind_host=settings.host, direct_ingress=direct_ingress)
    mp = _multiproc_dir(settings)
    shutil.rmtree(mp, ignore_errors=True)
    mp.mkdir(parents=True, exist_ok=True)
    ray_serve.start(http_options={"host": settings.host, "port": settings.port})
    ray_serve.run(build_app(settings), name=APP_NAME, route_prefix="/")
    if noop:
        ray_serve.run(NoOp.options(ray_actor_options={"num_cpus": 0}).bind(),
                      name=NOOP_APP_NAME, route_prefix="/noop")
    return f"http://{settings.host}:{settings.port}"


def rollover(settings: ServeSettings, model_path: Path, name: str = APP_NAME,
             route_prefix: str = "/") -> None:
    """Serve ``model_path`` from now on: an in-place ``user_config`` update (``reconfigure``)."""
    ray_serve.run(build_app(settings.model_copy(update={"model_path": model_path})),
                  name=name, route_prefix=route_prefix)


def set_experiment(settings: ServeSettings, spec: str | Path | None, name: str = APP_NAME,
                   route_prefix: str = "/") -> None:
    """Run the experiment of ``spec`` (a config file, a JSON object, or None to end it) from
    now on: validated here (``ExperimentConfigError`` naming the fix, nothing deployed), then
    an in-place ``user_config`` update like ``rollover``.
    """
    spec = None if spec is None else str(spec)
    load_experiment(spec)
    ray_serve.run(build_app(settings.model_copy(update={"experiments": spec})),
                  name=name, route_prefix=route_prefix)


_CONTROLLER: dict[str, Any] = {}  # the Serve controller's handle, once looked up


def replica_targets(timeout_s: float = 5.0) -> dict[str, list[tuple[str, int]]]:
    """Route prefix -> (host, port) of each running ingress replica's own HTTP server, for
    the apps whose replicas answer directly (direct ingress); apps served only through Ray's
    proxy are left out. Read from the Serve controller, which allocates those ports.
    """
    import ray
    from ray.serve._private.common import RequestProtocol
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    controller = _CONTROLLER.get("handle")
    if controller is None:  # looked up once: the front asks every 0.5 s
        controller = _CONTROLLER["handle"] = ray.get_actor(SERVE_CONTROLLER_NAME,
                                                           namespace=SERVE_NAMESPACE)
    try:
        groups = ray.get(controller.get_target_groups.remote(), timeout=timeout_s)
    except Exception:
        _CONTROLLER.clear()  # a new controller (Serve restarted) is looked up next time
        raise
    return {g.route_prefix: sorted((t.ip, t.port) for t in g.targets) for g in groups
            if g.app_name and g.protocol == RequestProtocol.HTTP}


def handle() -> Any:
    """A handle on the running ranking deployment (for in-process callers and tests)."""
    return ray_serve.get_app_handle(APP_NAME)


def stop() -> None:
    """Tear the apps and Ray Serve down."""
    _CONTROLLER.clear()
    ray_serve.shutdown()
