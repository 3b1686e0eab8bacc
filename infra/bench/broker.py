"""``marquee bench broker``: the durable embedded broker against the memory one, same run.

Figures: acknowledged events/s for a bulk idempotent produce, the acknowledgement latency of
one event at a time (linger 0), restart time after a SIGKILL (kill to answering metadata
again, with the stored events still there), and disk use per event.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

import orjson
from confluent_kafka import Producer

from infra.broker import EmbeddedBroker
from streams.consume import read_all
from streams.produce import PRODUCER_CONFIG, produce_events
from streams.topics import create_topics

TOPIC = "bench"


def _events(n: int) -> list[bytes]:
    return [orjson.dumps({"user_id": f"u{i % 500}", "n": i}) for i in range(n)]


def _ack_latency_ms(broker: EmbeddedBroker, n: int) -> list[float]:
    """Milliseconds from produce to acknowledgement, one event in flight at a time."""
    producer = Producer(broker.settings().client_config(**{**PRODUCER_CONFIG, "linger.ms": 0}))
    latencies = []
    for value in _events(n):
        start = time.perf_counter()
        producer.produce(TOPIC, value=value, key=b"u1")
        producer.flush(10)
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def _disk(folder: Path) -> tuple[int, int, int]:
    """Bytes written, bytes allocated (whole file-system blocks), and files under ``folder``."""
    stats = [p.stat() for p in folder.rglob("*") if p.is_file()]
    return sum(s.st_size for s in stats), sum(s.st_blocks * 512 for s in stats), len(stats)


def _restart_s(broker: EmbeddedBroker, kill_store: bool) -> float:
    """Seconds from SIGKILL to a broker that answers metadata again."""
    start = time.perf_counter()
    os.kill(broker.process.pid, signal.SIGKILL)
    if kill_store:
        broker.store.kill()
    broker.process.wait(5)
    broker.start()
    return time.perf_counter() - start


def measure(durable: bool, n: int, singles: int, folder: Path) -> dict[str, float]:
    """Figures for one storage engine."""
    figures: dict[str, float] = {}
    start = time.perf_counter()
    broker = EmbeddedBroker(data_dir=folder if durable else None).start()
    figures["start_s"] = time.perf_counter() - start
    try:
        create_topics(broker.settings(), {TOPIC: 4})
        report = produce_events(_events(n), broker.settings(), topic=TOPIC, progress=False)
        assert report.delivered == n, report.summary()
        figures["bulk_acked_eps"] = report.rate
        latencies = sorted(_ack_latency_ms(broker, singles))
        figures["single_ack_p50_ms"] = statistics.median(latencies)
        figures["single_ack_p99_ms"] = latencies[int(len(latencies) * 0.99)]
        figures["events_acked"] = n + singles
        if durable:
            size, allocated, files = _disk(folder)
            figures["disk_bytes_per_event"] = size / (n + singles)
            figures["disk_allocated_bytes_per_event"] = allocated / (n + singles)
            figures["files"] = files
            figures["restart_after_tansu_kill_s"] = _restart_s(broker, kill_store=False)
            figures["restart_after_both_killed_s"] = _restart_s(broker, kill_store=True)
            # expected=: Tansu's answer for the latest offset is wrong on S3 storage (see
            # tests/infra/test_durable_broker.py), so read_all cannot stop at the watermarks.
            figures["read_back_after_restarts"] = len(
                read_all(broker.settings(), TOPIC, expected=n + singles, timeout=60))
    finally:
        broker.stop()
    return figures


def run_bench(n: int = 100_000, singles: int = 300,
              out: Path = Path("var/bench/broker.json")) -> dict[str, dict[str, float]]:
    """Measure, print and write the figures of both engines."""
    with tempfile.TemporaryDirectory() as tmp:
        figures = {"memory": measure(False, n, singles, Path(tmp) / "memory"),
                   "durable": measure(True, n, singles, Path(tmp) / "durable")}
    figures["durable"]["bulk_ratio_vs_memory"] = (
        figures["durable"]["bulk_acked_eps"] / figures["memory"]["bulk_acked_eps"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    for engine, values in figures.items():
        for key, value in values.items():
            print(f"{engine:8s} {key:30s} {value:14,.3f}")
    print(f"(written to {out})")
    return figures
