"""The admission front: HAProxy in front of Ray Serve's HTTP proxy, holding the ranking's
bounded queue.

Ray Serve sheds in its Python proxy (``max_queued_requests``), and the proxy's event loop is
what overload saturates: a request it should refuse at once waits behind the backlog it is
refusing, and the loop's time goes to requests that will be shed instead of to routing the
ones that will be answered (docs/design.md, "Admission front"). HAProxy (C, one thread) takes
the clients' connections instead. It lets at most ``inflight`` ``/v1/rank`` requests through to
Ray at once (what the replicas work on), holds at most ``queue`` more in its own queue, and
answers the rest at once with ``503``, ``Retry-After`` and the service's error body. Other
paths (``/readyz``, ``/metrics``, ``/docs``) pass unbounded, so probes and scrapes still answer
under overload.

On one machine the front routes ``/v1/rank`` past Ray's proxy, straight to each replica's own
HTTP port (Ray Serve direct ingress, ``MARQUEE_FRONT_DIRECT``): its backend holds ``slots``
server slots that ``infra.front_routes`` points at the running replicas as Ray starts and
replaces them, each taking at most a replica's share of ``inflight``, with Ray's proxy as the
backup server while no replica answers. A request whose replica dies before answering is sent
again to another (``retry-on conn-failure empty-response``; the body is read whole first,
``http-buffer-request``, without which a request already forwarded could not be sent again):
ranking has no side effect a repeat would double, except its line in the rankings log. Other
paths, and other apps' rankings (``/<prefix>/v1/rank``), go through Ray's proxy, which routes
by prefix.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.front_routes import FrontRoutes, Targets
from streams.contract.listen import ENV_FILE, address

FIX = "install HAProxy (`infra/install-system-deps.sh`, or apt-get install haproxy), or " \
      "turn the front off with MARQUEE_FRONT_ENABLED=false"


class FrontSettings(BaseSettings):
    """``MARQUEE_FRONT_*``: whether ``marquee up``/``serve`` put the front before Ray Serve,
    and its bounds (by default the service's own: ``MARQUEE_MAX_ONGOING_REQUESTS`` per replica
    in flight, ``MARQUEE_MAX_QUEUED_REQUESTS`` waiting).
    """

    model_config = SettingsConfigDict(env_prefix="MARQUEE_FRONT_", env_file=ENV_FILE,
                                      extra="ignore")

    enabled: bool = Field(True, description="HAProxy takes the service port and holds the "
                          "ranking's queue; Ray Serve's proxy listens on a free loopback port "
                          "behind it (false: Ray Serve takes the port itself)")
    inflight_per_replica: int | None = Field(
        None, ge=1, le=1024, description="ranking requests passed to Ray at once, per replica "
        "(default: MARQUEE_MAX_ONGOING_REQUESTS)")
    queue: int | None = Field(None, ge=0, le=100_000, description="ranking requests waiting "
                              "at the front; past this a 503 at once (default: "
                              "MARQUEE_MAX_QUEUED_REQUESTS)")
    direct: bool = Field(True, description="route to each replica's own port (Ray Serve "
                         "direct ingress), past Ray's proxy; false: through the proxy")


@dataclass(frozen=True)
class FrontConfig:
    """Where the front listens, what it forwards to, and how much it lets through."""

    listen_host: str
    listen_port: int
    backend_host: str
    backend_port: int
    inflight: int  # /v1/rank requests at Ray at once
    queue: int  # /v1/rank requests waiting at the front
    wait_ms: int = 5000  # the longest a queued request waits (the service's deadline)
    retry_after_s: int = 1
    slots: int = 0  # > 0: this many replica slots per backend (direct); 0: the proxy only
    replica_inflight: int = 1  # /v1/rank requests at one replica at once (direct)
    noop: bool = False  # a backend of its own for the no-op floor under /noop (direct)

    @classmethod
    def for_service(cls, serve: Any, front: FrontSettings, listen_port: int,
                    backend_port: int, noop: bool = False) -> FrontConfig:
        """The front of a service with ``serve`` settings (a ``ServeSettings``)."""
        per_replica = front.inflight_per_replica or serve.max_ongoing_requests
        queue = front.queue if front.queue is not None else max(serve.max_queued_requests, 0)
        # Room for a replacement beside every replica it replaces.
        slots = 2 * serve.replicas + 2 if front.direct else 0
        return cls(str(serve.host), listen_port, "127.0.0.1", backend_port,
                   per_replica * serve.replicas, queue, serve.request_timeout_ms,
                   serve.retry_after_s, slots, per_replica, noop and front.direct)

    def socket_path(self, folder: Path) -> Path:
        """HAProxy's runtime API socket (direct: how the slots are pointed at replicas)."""
        return folder / "admin.sock"


def render(cfg: FrontConfig, socket_path: Path | None = None) -> str:
    """The HAProxy configuration (``socket_path``: the runtime API socket, for direct slots)."""
    detail = (f"overloaded: {cfg.inflight} ranking requests in progress and {cfg.queue} "
              f"waiting, the most this service takes; retry after {cfg.retry_after_s} s "
              "(Retry-After), or add replicas (MARQUEE_REPLICAS)")
    body = _json_string(detail)
    retry = f"hdr Retry-After {cfg.retry_after_s}"
    reply = f'status 503 content-type application/json string "{body}" {retry}'
    down = _json_string("the ranking service behind the front did not take the request in "
                        "time or did not answer (it may be starting or restarting); retry, "
                        "and see /readyz and the service log")
    server = address(cfg.backend_host, cfg.backend_port)
    resolvers = ""
    if not _is_ip(cfg.backend_host):  # a DNS name (a Kubernetes Service): resolved while up
        server += " resolvers dns init-addr last,libc,none"
        resolvers = "\nresolvers dns\n    parse-resolv-conf\n    hold valid 10s\n"
    stats = ""
    if cfg.slots:
        if socket_path is None:
            raise ValueError("a front with replica slots needs its runtime API socket path")
        stats = f"\n    stats socket {socket_path} mode 600 level admin"
    other = f"""
backend other
    http-reuse always
    server ray {server}
"""
    if cfg.slots:  # /v1/rank (and /noop/...) to the replicas; other apps' rankings via Ray
        admit = ("    acl direct path /v1/rank\n"
                 f"    http-request return {reply} if direct {{ queue(rank) ge {cfg.queue} }}\n")
        routes = "    use_backend rank if direct\n"
        if cfg.noop:
            admit += (f"    acl noop path_beg {NOOP_PREFIX}/\n"
                      f"    http-request return {reply} if rank noop "
                      f"{{ queue(noop) ge {cfg.queue} }}\n")
            routes += "    use_backend noop if noop\n"
        admit += (f"    http-request return {reply} if rank !direct{' !noop' if cfg.noop else ''} "
                  f"{{ queue(proxied) ge {cfg.queue} }}\n")
        routes += "    use_backend proxied if rank\n"
        backends = "".join(_slots_backend(name, cfg, server) for name in BACKENDS
                           if name != "noop" or cfg.noop) + f"""
backend proxied
    http-reuse always
    server ray {server} maxconn {cfg.inflight}
""" + other
    else:
        admit = f"    http-request return {reply} if rank {{ queue(rank) ge {cfg.queue} }}\n"
        routes = "    use_backend rank if rank\n"
        backends = f"""
backend rank
    http-reuse always
    server ray {server} maxconn {cfg.inflight}
""" + other
    return f"""# Generated by infra/front.py: the admission front of the ranking service.
global
    maxconn 4096
    nbthread 1
    log stderr format raw local0 warning{stats}

defaults
    mode http
    log global
    option http-keep-alive
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s
    timeout queue {cfg.wait_ms}ms
    http-error status 502 content-type application/json string "{down}"
    http-error status 503 content-type application/json string "{down}" {retry}
    http-error status 504 content-type application/json string "{down}"

frontend ranking
    bind {address(cfg.listen_host, cfg.listen_port)}
    acl rank path_end /v1/rank
{admit}{routes}    default_backend other
{backends}{resolvers}"""


# backend -> (its slots' name prefix, the route prefix of the app whose replicas fill them)
BACKENDS = {"rank": ("r", "/"), "noop": ("n", "/noop")}
NOOP_PREFIX = BACKENDS["noop"][1]


def _slots_backend(name: str, cfg: FrontConfig, proxy: str) -> str:
    """A backend of ``cfg.slots`` replica slots (in maintenance until ``infra.front_routes``
    points them at a replica), Ray's proxy as the backup while none is up.
    """
    return f"""
backend {name}
    http-reuse always
    balance leastconn
    option redispatch 1
    option http-buffer-request
    retries 2
    retry-on conn-failure empty-response
    default-server check inter 1s fall 1 rise 1 maxconn {cfg.replica_inflight}
    server-template {BACKENDS[name][0]} 1-{cfg.slots} 127.0.0.1:9 disabled
    server proxy {proxy} backup maxconn {cfg.inflight}
"""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _json_string(detail: str) -> str:
    """``{"detail": ...}`` quoted for an HAProxy ``string`` argument."""
    return json.dumps({"detail": detail}).replace("\\", "\\\\").replace('"', '\\"')


def executable() -> str:
    """HAProxy's path, or an error that names the fix."""
    exe = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None)
    if exe is None:
        raise RuntimeError(f"HAProxy not found: {FIX}")
    return exe


def write(cfg: FrontConfig, folder: Path) -> Path:
    """Write and check the configuration; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "haproxy.cfg"
    path.write_text(render(cfg, cfg.socket_path(folder) if cfg.slots else None))
    check = subprocess.run([executable(), "-c", "-q", "-f", str(path)], capture_output=True,
                           text=True, check=False)
    if check.returncode:
        raise RuntimeError(f"HAProxy rejected {path}: {(check.stderr or check.stdout).strip()}")
    return path


def start(cfg: FrontConfig, folder: Path) -> subprocess.Popen:
    """Start HAProxy in the foreground (the caller owns the process); returns once it
    listens.
    """
    path = write(cfg, folder)
    with (folder / "haproxy.log").open("ab") as log:
        proc = subprocess.Popen([executable(), "-db", "-f", str(path)], stdout=log,
                                stderr=subprocess.STDOUT)
    wait_listening(cfg.listen_host, cfg.listen_port, proc)
    return proc


def wait_listening(host: str, port: int, proc: subprocess.Popen, timeout_s: float = 10.0
                   ) -> None:
    """Return once ``host:port`` accepts; raise if ``proc`` exits first or it never does."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"HAProxy exited with {proc.returncode}; see haproxy.log")
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"HAProxy did not listen on {address(host, port)} within {timeout_s:g} s")


class Front:
    """The front as a supervised component (``infra.supervisor.Child``): started again with
    the same configuration after it exits.
    """

    def __init__(self, cfg: FrontConfig, folder: Path,
                 targets: Callable[[], Targets] | None = None) -> None:
        """``targets``: the replicas to route to (direct, ``cfg.slots`` > 0)."""
        self.cfg, self.folder = cfg, folder
        self.proc: subprocess.Popen | None = None
        self.routes: FrontRoutes | None = None
        if cfg.slots:
            if targets is None:
                raise ValueError("a front with replica slots needs a source of replicas")
            used = {b: v for b, v in BACKENDS.items() if b != "noop" or cfg.noop}
            self.routes = FrontRoutes(cfg.socket_path(folder), cfg.slots, used, targets)

    @property
    def url(self) -> str:
        """Where clients call the service."""
        return f"http://{address(self.cfg.listen_host, self.cfg.listen_port)}"

    def start(self) -> None:
        """Start HAProxy unless it runs already."""
        if not self.alive():
            self.proc = start(self.cfg, self.folder)
            if self.routes is not None:  # a new HAProxy has its slots in maintenance
                self.routes.start()

    def alive(self) -> bool:
        """HAProxy runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM (HAProxy stops at once), SIGKILL after 5 s."""
        if self.routes is not None:
            self.routes.stop()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def pids(self) -> list[int]:
        """HAProxy's pid while it runs."""
        return [self.proc.pid] if self.alive() and self.proc is not None else []

    def exit_code(self) -> int | None:
        """How HAProxy ended, if it did."""
        return None if self.proc is None else self.proc.poll()


def serve(settings: Any, folder: Path, noop: bool = False,
          front: FrontSettings | None = None) -> tuple[str, Front | None]:
    """Start the ranking app (``serve.app.start``) behind the front when it is enabled: Ray
    Serve's proxy on a free loopback port (and, direct, each replica on its own), HAProxy on
    ``settings.host:port``. Returns the URL clients call and the front (None when it is off;
    the caller stops it).
    """
    from serve import app
    from streams.launch import free_port

    front = front or FrontSettings()
    if not front.enabled:
        return app.start(settings, noop=noop), None
    executable()  # fail before Ray starts when HAProxy is missing
    backend = free_port()
    app.start(settings.model_copy(update={"host": "127.0.0.1", "port": backend}), noop=noop,
              direct_ingress=front.direct)
    gate = Front(FrontConfig.for_service(settings, front, settings.port, backend, noop),
                 folder, app.replica_targets)
    gate.start()
    return gate.url, gate
