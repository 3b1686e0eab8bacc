"""A Ray cluster started the way a team runs one on its own machines, on network-namespace
hosts (``infra.netns``): ``ray start --head`` on one host, ``ray start --address`` on the
others, and the ranking app deployed with ``serve run CONFIG`` from the file ``marquee deploy
serve-config`` generates. What the Ray cluster tests and ``marquee bench cluster`` start.

Each node is minimal, for a 2-core machine: a CPU count given (replicas take 1 CPU each, so
placement follows it), no dashboard, no log monitor, a small object store, a temp folder of
its own (nodes share the file system, as the data folder and the model file need).
Observing the cluster takes a Ray driver, which must run on a host of the cluster: ``Watch``
runs one on the head (``python -m infra.ray_cluster watch``) that prints the nodes and
replicas it sees a few times a second, as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from infra.netns import TestBed
from serve.app import NOOP_APP_NAME as NOOP_APP
from serve.app import RAY_ENV_DEFAULTS
from serve.config import ServeSettings
from serve.replicas import APP, DEPLOYMENT

GCS_PORT = 6379
NOOP_DEPLOYMENT = "NoOp"
REPO = Path(__file__).resolve().parents[1]
# Ray allows no less than this per node (bytes); the service passes no large objects.
OBJECT_STORE_BYTES = 80 * 1024 * 1024


def _bin(name: str) -> str:
    """A console script of this interpreter's environment (``ray``, ``serve``)."""
    return str(Path(sys.executable).with_name(name))


@dataclass(frozen=True)
class RayNode:
    """One ``ray start``: the head when ``head`` is None, else a worker joining ``head``."""

    ip: str
    temp_dir: Path
    head: str | None = None
    num_cpus: int = 1

    def argv(self) -> list[str]:
        """The ``ray start`` command line (returns once the node runs)."""
        argv = [_bin("ray"), "start", "--node-ip-address", self.ip,
                "--temp-dir", str(self.temp_dir), "--num-cpus", str(self.num_cpus),
                "--object-store-memory", str(OBJECT_STORE_BYTES), "--disable-usage-stats",
                "--include-log-monitor", "false"]
        if self.head is None:
            return [*argv, "--head", "--port", str(GCS_PORT), "--include-dashboard", "false"]
        return [*argv, "--address", f"{self.head}:{GCS_PORT}"]


def node_env(token: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every Ray process on a node, and of the drivers: Serve's process
    defaults (read by the controller and proxies, as the generated config's header says),
    Ray's token authentication with ``token`` (without an explicit mode, Ray turns token auth
    on for a head when ``~/.ray/auth_token`` exists, and a driver without the token is then
    refused: the cluster must not depend on what a home folder holds), and this checkout first
    on ``PYTHONPATH`` so that replicas import the same code as the caller.
    """
    env = dict(os.environ)
    env.update(RAY_ENV_DEFAULTS)
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
                "RAY_USAGE_STATS_ENABLED": "0"})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def cluster_config(settings: ServeSettings, spread: bool,
                   env: Mapping[str, str] | None = None, noop: bool = False) -> dict[str, Any]:
    """The ``serve run`` config: what ``marquee deploy serve-config`` writes, one CPU per
    replica, at most one replica per node when ``spread``, and ``env`` (e.g.
    ``MARQUEE_REDIS_URL``) added to the app's runtime environment. ``noop`` adds the no-op
    floor (``NOOP_APP`` at ``/noop``) with as many replicas, placed the same way.
    """
    from infra.deploy.serve_config import ClusterShape, serve_config

    shape = ClusterShape(num_cpus=1.0, max_replicas_per_node=1 if spread else None)
    config = serve_config(settings, shape)
    app = config["applications"][0]
    app["runtime_env"]["env_vars"].update(env or {})
    if noop:
        floor = {"name": NOOP_DEPLOYMENT, "num_replicas": settings.replicas,
                 "ray_actor_options": {"num_cpus": 0}}
        if spread:
            floor["max_replicas_per_node"] = 1
        config["applications"].append({
            "name": NOOP_APP, "route_prefix": "/noop", "import_path": "serve.app:noop_builder",
            "runtime_env": app["runtime_env"], "deployments": [floor]})
    return config


@dataclass
class Watch:
    """What a driver on the head sees, a few times a second: alive nodes (address, id), Serve's
    RUNNING replica count, the alive replica actors' node addresses and pids, and both as
    pairs (JSON lines on the driver's stdout, kept here with their wall-clock time).
    """

    process: subprocess.Popen
    seen: list[dict[str, Any]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.seen.append(item)
                self._cond.notify_all()

    def wait(self, ok: Callable[[dict[str, Any]], bool], timeout: float,
             since: float = 0.0) -> dict[str, Any]:
        """The first observation at or after ``since`` (wall clock) that ``ok`` accepts;
        TimeoutError naming the last one seen.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self.seen:
                    if item["t"] >= since and ok(item):
                        return item
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    last = self.seen[-1] if self.seen else None
                    raise TimeoutError(f"not seen within {timeout} s; last: {last}")
                self._cond.wait(min(left, 0.5))

    def close(self) -> None:
        """Stop the driver."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


class RayCluster:
    """Ray on ``head`` and ``workers`` of a TestBed, and the ranking app on it."""

    def __init__(self, bed: TestBed, root: Path, head: str = "ray-head",
                 workers: Sequence[str] = ("ray-worker",), num_cpus: int = 1) -> None:
        self.bed, self.root, self.head, self.workers = bed, root, head, list(workers)
        self.num_cpus = num_cpus
        self.env = node_env(secrets.token_hex(32))  # one token per cluster

    @property
    def gcs(self) -> str:
        """The head's GCS address (what ``ray start --address`` and drivers connect to)."""
        return f"{self.bed.address(self.head)}:{GCS_PORT}"

    def node(self, host: str) -> RayNode:
        """The ``ray start`` of ``host``."""
        head = None if host == self.head else self.bed.address(self.head)
        return RayNode(self.bed.address(host), self.root / host, head, self.num_cpus)

    def start_node(self, host: str, timeout: float = 120) -> float:
        """``ray start`` on ``host``; the seconds it took."""
        t0 = time.monotonic()
        self._call(host, self.node(host).argv(), timeout)
        return time.monotonic() - t0

    def start(self) -> RayCluster:
        """The head, then each worker."""
        for host in [self.head, *self.workers]:
            self.start_node(host)
        return self

    def deploy(self, settings: ServeSettings, spread: bool = True,
               env: Mapping[str, str] | None = None, noop: bool = False,
               name: str = "serve.yaml") -> Path:
        """``serve run --non-blocking`` of the generated config (``cluster_config``), from the
        head; the file.
        """
        path = self.root / name
        path.write_text(yaml.safe_dump(cluster_config(settings, spread, env, noop),
                                       sort_keys=False))
        self._call(self.head, [_bin("serve"), "run", "--address", self.gcs, "--non-blocking",
                               str(path)], timeout=180)
        return path

    def watch(self, apps: Sequence[str] = (APP,), every_s: float = 0.2) -> Watch:
        """A driver on the head reporting nodes and replicas (see ``Watch``)."""
        argv = [sys.executable, "-m", "infra.ray_cluster", "watch", "--address", self.gcs,
                "--every", str(every_s)]
        for app in apps:
            argv += ["--app", app]
        process = self.bed.background(self.head, argv, env=self.env, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)
        return Watch(process)

    def _call(self, host: str, argv: list[str], timeout: float) -> None:
        proc = self.bed.run(host, argv, env=self.env, capture_output=True, text=True,
                            timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:3])} on {host} exited {proc.returncode}: "
                               f"{(proc.stdout + proc.stderr)[-3000:]}")


DEPLOYMENTS = {APP: DEPLOYMENT, NOOP_APP: NOOP_DEPLOYMENT}


def _replicas(app: str) -> dict[str, Any]:
    from serve.replicas import replicas, running

    deployment = DEPLOYMENTS.get(app, DEPLOYMENT)
    try:
        count = running(app, deployment)
    except Exception:  # noqa: BLE001 - the controller may be restarting; say 0
        count = 0
    alive = replicas(app, deployment)
    return {"running": count, "replicas": sorted(r.node_ip for r in alive),
            "pids": sorted(r.pid for r in alive),
            "placed": sorted([r.node_ip, r.pid] for r in alive)}


def observe(apps: Sequence[str]) -> dict[str, Any]:
    """One observation (in a driver connected to the cluster): the first app's replicas at
    the top level, every app's under ``apps``.
    """
    import ray

    nodes = sorted([n["NodeManagerAddress"], n["NodeID"]] for n in ray.nodes() if n["Alive"])
    each = {app: _replicas(app) for app in apps}
    return {"t": time.time(), "nodes": nodes, **each[apps[0]], "apps": each}


def _watch(address: str, apps: Sequence[str], every_s: float) -> None:
    import ray

    ray.init(address=address, log_to_driver=False, configure_logging=False)
    while True:
        print(json.dumps(observe(apps)), flush=True)
        time.sleep(every_s)


def main(argv: list[str] | None = None) -> None:
    """``python -m infra.ray_cluster watch --address HEAD:6379``: JSON lines until killed."""
    parser = argparse.ArgumentParser(prog="python -m infra.ray_cluster")
    sub = parser.add_subparsers(dest="command", required=True)
    watch = sub.add_parser("watch", help="print nodes and replicas as JSON lines")
    watch.add_argument("--address", required=True)
    watch.add_argument("--app", action="append", help="a Serve app (repeat; default: the "
                       "ranking app)")
    watch.add_argument("--every", type=float, default=0.2)
    args = parser.parse_args(argv)
    _watch(args.address, args.app or [APP], args.every)


if __name__ == "__main__":
    main()
