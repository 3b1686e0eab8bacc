"""What one Redis gives the online store: user rows written and read per second, bytes each.

A ``redis-server`` is started for the run. User rows (``feature_repo.store.user_row``, the
flow's rows) go in through ``FeatureWriter`` in batches the size of a flush, and are read back
one user at a time through ``FeatureReader`` (one ranking reads one user row; item stats are
read once per TTL for every request). Beside each, the floor: redis-py pipelines of the same
hashes (same field count, same value sizes) written and read without Feast, from the same
client. Memory per row is Redis's ``used_memory`` growth over the rows, and the server's own
CPU per row written and per read (from ``/proc``) says what one Redis core can take, whatever
the client. These figures feed the capacity plan (``infra.capacity``).
"""

from __future__ import annotations

import json
import os
import random
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from feature_repo.store import FeatureReader, FeatureWriter, open_store, user_row
from infra.bench.procfs import stat
from infra.redis_server import RedisServer
from streams.contract.tokens import Token


@dataclass(frozen=True)
class OnlineStoreSpec:
    """The rows written: how many users, tokens per row, rows per write, reads timed."""

    users: int = 20_000
    tokens: int = 200
    batch: int = 500
    reads: int = 10_000
    persist: bool = False

    def __post_init__(self) -> None:
        if min(self.users, self.tokens, self.batch, self.reads) < 1:
            raise ValueError("--users, --tokens, --batch and --reads must be >= 1")


def _rows(spec: OnlineStoreSpec, seed: int = 7) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    rows = []
    for u in range(spec.users):
        uid = f"u{u:08d}"
        tokens = [Token(uid, 1_700_000_000_000 + i * 60_000, f"i{rnd.randrange(5000)}",
                        rnd.randrange(5000), rnd.randrange(8), rnd.randrange(16),
                        rnd.randrange(24), rnd.randrange(7), rnd.randrange(6),
                        rnd.randrange(8), rnd.randrange(12)) for i in range(spec.tokens)]
        rows.append(user_row(uid, tokens, tokens[-1].ts))
    return rows


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


class _ServerCpu:
    """CPU seconds the redis-server process spent since the last ``lap``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tick = os.sysconf("SC_CLK_TCK")
        self.last = stat(pid).cpu_ticks

    def lap(self) -> float:
        now = stat(self.pid).cpu_ticks
        spent, self.last = (now - self.last) / self.tick, now
        return spent


def _measure(write_batch: Callable[[list[Any]], None], read_one: Callable[[Any], None],
             keys: list[Any], spec: OnlineStoreSpec, client: Any,
             server: _ServerCpu) -> dict[str, float]:
    """Write ``keys`` in batches of ``spec.batch``, then read ``spec.reads`` of them one at a
    time: wall, this process's CPU and the server's, Redis memory grown, read latencies.
    """
    before = _used_memory(client)
    server.lap()
    wall, cpu = time.perf_counter(), _cpu()
    for i in range(0, len(keys), spec.batch):
        write_batch(keys[i:i + spec.batch])
    write_s, write_cpu, write_server = time.perf_counter() - wall, _cpu() - cpu, server.lap()
    grown = _used_memory(client) - before
    latencies = []
    server.lap()  # the INFO above is not a read's
    wall, cpu = time.perf_counter(), _cpu()
    for key in random.Random(1).choices(keys, k=spec.reads):
        start = time.perf_counter()
        read_one(key)
        latencies.append(time.perf_counter() - start)
    read_s, read_cpu, read_server = time.perf_counter() - wall, _cpu() - cpu, server.lap()
    latencies.sort()
    n, reads = len(keys), spec.reads
    return {"rows_per_s": n / write_s, "write_cpu_us_per_row": write_cpu / n * 1e6,
            "server_us_per_row": write_server / n * 1e6,
            "server_us_per_read": read_server / reads * 1e6,
            "bytes_per_row": grown / n, "reads_per_s": reads / read_s,
            "read_cpu_us": read_cpu / reads * 1e6,
            "read_p50_ms": latencies[len(latencies) // 2] * 1e3,
            "read_p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3}


def _feast_phase(store: Any, rows: list[dict[str, Any]], spec: OnlineStoreSpec,
                 client: Any, server: _ServerCpu) -> dict[str, float]:
    writer, reader = FeatureWriter(store), FeatureReader(store)

    def read_one(row: dict[str, Any]) -> None:
        uid = row["user_id"]
        got = reader.users([uid])
        if got[uid]["n_tokens"] != spec.tokens:
            raise AssertionError(f"{uid} read back {got[uid]['n_tokens']} tokens")

    return _measure(writer.write_users, read_one, rows, spec, client, server)


def _floor_phase(client: Any, shapes: dict[bytes, dict[bytes, bytes]],
                 spec: OnlineStoreSpec, server: _ServerCpu) -> dict[str, float]:
    """The same hashes through plain redis-py pipelines: what one Python client gets from
    Redis with no Feast encoding or decoding.
    """
    def write_batch(keys: list[bytes]) -> None:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hset(b"floor:" + key, mapping=shapes[key])
        pipe.execute()

    def read_one(key: bytes) -> None:
        if not client.hgetall(b"floor:" + key):
            raise AssertionError("floor row missing")

    return _measure(write_batch, read_one, list(shapes), spec, client, server)


def run_bench(spec: OnlineStoreSpec, out: Path | None = None) -> dict[str, Any]:
    """Feast's rows and the plain-pipeline floor against one fresh ``redis-server``; the
    figures are also written to ``out`` (JSON) when given.
    """
    import redis

    rows = _rows(spec)
    with tempfile.TemporaryDirectory(prefix="marquee-online-") as tmp:
        server = RedisServer(Path(tmp) / "redis", persist=spec.persist).start()
        try:
            client = redis.Redis(port=server.port)
            store = open_store(online="redis", data_dir=Path(tmp) / "data",
                               redis_url=server.url)
            cpu = _ServerCpu(server.pids()[0])
            feast = _feast_phase(store, rows, spec, client, cpu)
            # The floor writes hashes shaped exactly like the ones Feast stored.
            shapes = {key: client.hgetall(key) for key in client.scan_iter(count=1000)
                      if client.type(key) == b"hash"}
            floor = _floor_phase(client, shapes, spec, cpu)
            info = client.info("server")
        finally:
            server.stop()
    result = {"spec": asdict(spec), "feast": feast, "floor": floor, "hashes": len(shapes),
              "redis_version": info.get("redis_version", "?")}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result
