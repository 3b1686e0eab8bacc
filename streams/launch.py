"""Start the flow as Bytewax worker processes: one way to do it for the CLI, the demo and tests.

Scale-out is several processes of ``python -m bytewax.run`` joined into one cluster with
``-i/-a`` (state is keyed by user shard, so any number of workers gives the results of one).
Recovery needs one partition per worker, created before the first start.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
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

        Safe when several cluster members start at once on a shared volume: each that finds
        no partitions builds a full set in a directory of its own beside the target and
        renames it into place; ``rename`` is atomic, so one set wins and the others are
        discarded, and no member ever sees a half-made directory.
        """
        if self.recovery_dir is None:
            return
        expected = self.processes * self.workers
        if not _partitions(self.recovery_dir):
            _build_aside(self.recovery_dir, expected)
        parts = _partitions(self.recovery_dir)
        if parts != expected:
            raise ValueError(
                f"recovery directory {self.recovery_dir} was made for {parts} workers; this "
                f"launch has {expected} (processes x workers). Start "
                "with the same --processes/--workers, or give a new --recovery-dir")

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


def _partitions(folder: Path) -> int:
    return len(list(folder.glob("part-*.sqlite3"))) if folder.is_dir() else 0


def _build_aside(folder: Path, count: int) -> None:
    """Initialise ``count`` partitions in a sibling directory, then rename it to ``folder``
    (replacing a missing or empty one; a full one made meanwhile by another member wins).
    """
    from bytewax.recovery import init_db_dir  # in-process: a subprocess costs seconds

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        init_db_dir(staging, count)
        try:
            os.rename(staging, folder)  # atomic; fails if folder is a non-empty directory
        except OSError as exc:
            if not _partitions(folder):
                raise ValueError(f"recovery directory {folder} holds other files and no "
                                 "partitions: give an empty or a new --recovery-dir") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def parse_addresses(text: str) -> list[str]:
    """``host:port`` of every cluster member, in process-id order, from a comma- (or
    Bytewax's semicolon-) separated list.
    """
    addresses = [a.strip() for a in text.replace(";", ",").split(",") if a.strip()]
    bad = [a for a in addresses if not a.rpartition(":")[2].isdigit()]
    if not addresses or bad:
        raise ValueError(f"--addresses {text!r}: give host:port of every member, "
                         "comma-separated, in process-id order (e.g. flow-0.flow:2101,"
                         "flow-1.flow:2101)")
    return addresses


@dataclass(frozen=True)
class Member:
    """One process of a flow cluster whose members start on different hosts (a pod each):
    its id and the address of every member, its own included.
    """

    process_id: int
    addresses: tuple[str, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.process_id < len(self.addresses):
            raise ValueError(f"--process-id {self.process_id}: the cluster has "
                             f"{len(self.addresses)} addresses, so give 0.."
                             f"{len(self.addresses) - 1}")

    def command(self, launch: Launch) -> tuple[list[str], dict[str, str]]:
        """The member's argv and environment. Its metrics port is ``launch.metrics_port``
        itself (each member is on a host of its own).
        """
        if launch.processes != len(self.addresses):
            raise ValueError(f"{len(self.addresses)} addresses for {launch.processes} "
                             "processes")
        single = replace(launch, metrics_port=None)
        argv, env = single.commands(";".join(self.addresses))[self.process_id]
        if launch.metrics_port:
            env["MARQUEE_FLOW_METRICS_PORT"] = str(launch.metrics_port)
        return argv, env


def start_member(launch: Launch, member: Member, env: Mapping[str, str],
                 **popen: Any) -> subprocess.Popen:
    """Start one member of a multi-host cluster (recovery created once, whichever member
    gets there first); the others are started the same way on their own hosts.
    """
    launch.ensure_recovery()
    argv, extra = member.command(launch)
    return subprocess.Popen(argv, env={**env, **extra}, **popen)


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
