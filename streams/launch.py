"""Start the flow as Bytewax worker processes: one way to do it for the CLI, the demo and tests.

Scale-out is several processes of ``python -m bytewax.run`` joined into one cluster with
``-i/-a`` (state is keyed by user shard, so any number of workers gives the results of one).
Recovery needs one partition per worker, created before the first start.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FLOW = "streams.flow:from_env()"
STATE_SUBDIR = "users"  # the user shards' state stores, inside the recovery directory


@dataclass(frozen=True)
class Launch:
    """How many processes and threads, and where recovery snapshots go."""

    processes: int = 1
    workers: int = 1  # worker threads per process
    recovery_dir: Path | None = None
    snapshot_s: int = 10  # recovery snapshot interval (seconds)
    metrics_port: int | None = None  # process i serves /metrics on metrics_port + i

    def __post_init__(self) -> None:
        if self.processes < 1 or self.workers < 1:
            raise ValueError("processes and workers must be >= 1")

    def ensure_recovery(self) -> None:
        """Create and initialise the recovery directory (one partition per worker) once; an
        existing one must have been made for as many workers as this launch has.
        """
        if self.recovery_dir is None:
            return
        if self.recovery_dir.exists():
            parts = len(list(self.recovery_dir.glob("part-*.sqlite3")))
            if parts and parts != self.processes * self.workers:
                raise ValueError(
                    f"recovery directory {self.recovery_dir} was made for {parts} workers; this "
                    f"launch has {self.processes * self.workers} (processes x workers). Start "
                    "with the same --processes/--workers, or give a new --recovery-dir")
            return
        from bytewax.recovery import init_db_dir  # in-process: a subprocess costs seconds

        self.recovery_dir.mkdir(parents=True)
        init_db_dir(self.recovery_dir, self.processes * self.workers)

    def commands(self, addresses: str | None = None) -> list[tuple[list[str], dict[str, str]]]:
        """Each process's argv and the environment it adds (``addresses``: ``host:port;...``
        of every process, required with more than one).
        """
        base = [sys.executable, "-m", "bytewax.run", FLOW, "-w", str(self.workers)]
        if self.recovery_dir is not None:
            base += ["-r", str(self.recovery_dir), "-s", str(self.snapshot_s), "-b", "0"]
        else:  # no recovery: Bytewax would still snapshot every 10 s epoch, for nothing
            base += ["-s", "3600"]
        out = []
        for i in range(self.processes):
            env = {}
            if self.recovery_dir is not None:
                env["MARQUEE_FLOW_STATE_DIR"] = str(self.recovery_dir / STATE_SUBDIR)
            if self.metrics_port:
                env["MARQUEE_FLOW_METRICS_PORT"] = str(self.metrics_port + i)
            argv = list(base)
            if self.processes > 1:
                if not addresses:
                    raise ValueError("several processes need the cluster's addresses")
                argv += ["-i", str(i), "-a", addresses]
            out.append((argv, env))
        return out


# Ports handed out for listeners: below Linux's ephemeral range (32768-60999), which the
# kernel gives to outgoing connections, and above Ray's worker ports (10002-19999). A port from
# the ephemeral range can be taken by some process's outgoing connection between the moment it
# is chosen and the moment its server binds it (seen with Ray Serve's proxy).
LISTEN_PORTS = range(20_000, 32_768)


def free_port() -> int:
    """A TCP port on loopback that nothing uses right now, from ``LISTEN_PORTS``."""
    for port in random.sample(LISTEN_PORTS, 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port among 200 tried in {LISTEN_PORTS}; free some ports")


def start(launch: Launch, env: Mapping[str, str], **popen: Any) -> list[subprocess.Popen]:
    """Start every process of the flow (recovery initialised first)."""
    launch.ensure_recovery()
    addresses = (";".join(f"127.0.0.1:{free_port()}" for _ in range(launch.processes))
                 if launch.processes > 1 else None)
    return [subprocess.Popen(argv, env={**env, **extra}, **popen)
            for argv, extra in launch.commands(addresses)]


def wait(procs: list[subprocess.Popen], timeout: float | None = None) -> int:
    """Wait for all processes; the first failure (or the timeout) stops the rest, since a
    cluster missing a member would wait for it forever. Returns the worst exit code.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs):
                break
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(procs[0].args, timeout or 0)
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    return max((p.returncode for p in procs), key=abs)


def run(launch: Launch, env: Mapping[str, str], timeout: float | None = None,
        **popen: Any) -> int:
    """Run the flow to its end (or until one process fails); the worst exit code."""
    return wait(start(launch, env, **popen), timeout)
