"""``marquee bench stream``: the flow's throughput into Feast and its freshness, beside the
framework's floor (a Bytewax flow that reads the same topic and does nothing), same run.

1. Produce N synthetic events to a fresh topic (embedded broker unless
   ``KAFKA_BOOTSTRAP_SERVERS`` is set).
2. Floors: a do-nothing Bytewax flow over the topic, one worker, to its end: with Bytewax's
   ``KafkaSource`` (one item per message: "the framework's floor", as first measured) and
   with the flow's own ``KafkaBatchSource`` (one item per poll: where the flow starts from).
3. Full flow, one worker, to the end of the topic, Feast SQLite (or ``--online redis``) in a
   temp dir: events/s per worker and CPU us per event. Feast is opened before the clock.
   Redis is the one at ``MARQUEE_REDIS_URL`` when that is set, else a ``redis-server``
   started for the run on a free port (``infra.redis_server``).
4. Freshness: the full flow tailing a second topic while events are produced at a fixed rate
   below capacity; p50/p99 of (online write - producer timestamp) over every event. Beside
   it, the same produce at the same rate into a third topic read by a do-nothing flow: the
   broker's and clients' share of freshness (its floor), same run.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

from infra.synthetic import SyntheticWorld, WorldConfig
from streams import compiled, metrics
from streams.config import KafkaSettings, non_consumer
from streams.flow import consumer_config
from streams.kafka_batches import KafkaBatchSource, partition_names
from streams.produce import produce_events
from streams.topics import create_topics, delete_topics

END = b"__marquee_bench_end__"


class _Null(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        pass


class NullSink(DynamicSink[Any]):
    """Drops everything (the floor flow's sink)."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Null:
        """A partition that does nothing."""
        return _Null()


class _UntilEnd(StatefulSourcePartition[Any, Any]):
    def __init__(self, inner: StatefulSourcePartition[Any, Any], batched: bool) -> None:
        self.inner = inner
        self.batched = batched
        self.done = False

    def next_batch(self) -> list[Any]:
        if self.done:
            raise StopIteration
        batch = self.inner.next_batch()
        msgs = batch[0] if self.batched and batch else batch
        for i, msg in enumerate(msgs):
            value = msg.value() if self.batched else getattr(msg, "value", None)
            if value == END:
                self.done = True
                if self.batched:
                    return [msgs[:i]] if i else []
                return batch[:i]
        return batch

    def next_awake(self) -> Any:
        return self.inner.next_awake()

    def snapshot(self) -> Any:
        return self.inner.snapshot()

    def close(self) -> None:
        self.inner.close()


class FloorKafkaSource(KafkaSource):
    """Bytewax's ``KafkaSource``, except that its partition listing's admin client gets no
    consumer-only properties (Bytewax hands it ``add_config`` whole, and librdkafka warns
    about each).
    """

    def __init__(self, brokers: list[str], topics: list[str], **kwargs: Any) -> None:
        super().__init__(brokers, topics, **kwargs)
        self.admin_config = non_consumer({"bootstrap.servers": ",".join(brokers),
                                          **kwargs.get("add_config", {})})
        self.topic_names = list(topics)

    def list_parts(self) -> list[str]:
        """The Kafka partitions, named as ``KafkaSource`` names them."""
        return partition_names(self.admin_config, self.topic_names)


class UntilEndSource(FixedPartitionedSource[Any, Any]):
    """A tailing Kafka source whose partitions stop at an end marker (for timed runs); wraps
    Bytewax's ``KafkaSource`` (one item per message) or ``KafkaBatchSource`` (one per poll).
    """

    def __init__(self, inner: FloorKafkaSource | KafkaBatchSource) -> None:
        self.inner = inner
        self.batched = isinstance(inner, KafkaBatchSource)

    def list_parts(self) -> list[str]:
        """The Kafka partitions."""
        return self.inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _UntilEnd:
        """Wrap the Kafka partition."""
        return _UntilEnd(self.inner.build_part(step_id, for_part, resume_state), self.batched)


def _end_markers(kafka: KafkaSettings, topic: str, partitions: int) -> None:
    from confluent_kafka import Producer

    producer = Producer(kafka.client_config())
    for p in range(partitions):
        producer.produce(topic, value=END, partition=p)
    producer.flush(30)


def _produce(kafka: KafkaSettings, topic: str, events: list[bytes], rate: float | None) -> float:
    report = produce_events(events, kafka, topic=topic, rate=rate, progress=False)
    if report.undelivered:
        raise RuntimeError(f"bench: {report.summary()}")
    _end_markers(kafka, topic, kafka.events_partitions)
    return report.seconds


def _source(kafka: KafkaSettings, topic: str, batch_size: int,
            batched: bool = False) -> UntilEndSource:
    if batched:
        return UntilEndSource(KafkaBatchSource([kafka.bootstrap_servers], [topic], tail=True,
                                               batch_size=batch_size,
                                               add_config=consumer_config()))
    return UntilEndSource(FloorKafkaSource([kafka.bootstrap_servers], [topic], tail=True,
                                           batch_size=batch_size, add_config=consumer_config()))


def floor_seconds(kafka: KafkaSettings, topic: str, batch_size: int,
                  batched: bool = False) -> tuple[float, float]:
    """Wall and CPU seconds for a do-nothing Bytewax flow to read the topic to its end
    markers: Bytewax's own ``KafkaSource`` (one item per message) or, ``batched``, the flow's
    ``KafkaBatchSource`` (one item per poll).
    """
    flow = Dataflow("floor")
    stream = op.input("in", flow, _source(kafka, topic, batch_size, batched))
    size = (lambda poll: len(poll)) if batched else (lambda m: len(m.value or b""))
    op.output("out", op.map("len", stream, size), NullSink())
    return _timed(flow)


EPOCH = timedelta(seconds=10)  # Bytewax's default: state is snapshotted this often


def _timed(flow: Dataflow) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    run_main(flow, epoch_interval=EPOCH)
    return time.perf_counter() - start, time.process_time() - cpu


def kafka_latency(kafka: KafkaSettings, topic: str, events: list[bytes], rate: float,
                  batch_size: int) -> list[float]:
    """Producer timestamp -> consumed by a do-nothing flow (seconds), while ``events`` are
    produced at ``rate``: the part of freshness that is the broker's and the clients'.
    """
    seen: list[float] = []

    def note(poll: list[Any]) -> int:
        now = time.time() * 1000
        seen.extend((now - m.timestamp()[1]) / 1000 for m in poll)
        return len(poll)

    flow = Dataflow("latency")
    stream = op.input("in", flow, _source(kafka, topic, batch_size, batched=True))
    op.output("out", op.map("note", stream, note), NullSink())
    producer = threading.Thread(target=_produce, args=(kafka, topic, events, rate))
    producer.start()
    run_main(flow, epoch_interval=EPOCH)
    producer.join()
    return seen


def full_flow(kafka: KafkaSettings, topic: str, data: Path, online: str, batch_size: int,
              flush_s: float, redis_url: str | None = None) -> tuple[Dataflow, Any]:
    """The production flow over ``topic`` with Feast opened already (outside the clock)."""
    from feature_repo.store import FeatureWriter, open_store
    from streams.flow import FlowSettings, build_flow, load_shared
    from streams.sinks import DeadLetterSink, OutputSink, shared_writer

    settings = FlowSettings(data_dir=data, flush_s=flush_s, batch_size=batch_size)
    shared = load_shared(settings)
    key = f"bench-{data}"
    writer = shared_writer(key, lambda: FeatureWriter(open_store(online=online, data_dir=data,
                                                                 redis_url=redis_url)))
    sink = OutputSink(lambda: writer, data / "tokens", key=key)
    dead = DeadLetterSink(kafka.client_config(), kafka.dead_letter_topic)
    return build_flow(_source(kafka, topic, batch_size, batched=True), sink, dead, shared,
                      "bench"), writer


def _write_stats() -> dict[str, float]:
    """user_tokens flushes, rows and seconds spent writing them, so far (from the metrics)."""
    hist = {s.name: s.value for s in metrics.FEAST_WRITE_SECONDS.collect()[0].samples
            if s.labels.get("feature_view") == "user_tokens"}
    rows = [s.value for s in metrics.FEAST_ROWS.collect()[0].samples
            if s.labels.get("feature_view") == "user_tokens" and s.name.endswith("_total")]
    return {"flushes": hist.get("marquee_feast_write_seconds_count", 0.0),
            "seconds": hist.get("marquee_feast_write_seconds_sum", 0.0),
            "rows": rows[0] if rows else 0.0}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else float("nan")


@contextmanager
def _online(online: str) -> Iterator[str | None]:
    """The Redis URL the run writes to (one started for it unless MARQUEE_REDIS_URL is set),
    or None on SQLite.
    """
    if online != "redis":
        yield None
        return
    from infra.redis_server import redis_for

    with redis_for() as url:
        yield url


def run_bench(n_events: int = 200_000, online: str = "sqlite", batch_size: int = 5000,
              flush_s: float = 0.1, fresh_rate: float = 5000.0, fresh_seconds: float = 8.0,
              out: Path | None = None) -> dict[str, Any]:
    """Run the benchmark; returns (and optionally writes) the figures."""
    from infra.broker import broker_for

    if online not in ("sqlite", "redis"):
        raise ValueError(f"online store {online!r}: choose sqlite or redis")
    world = SyntheticWorld(WorldConfig(n_users=2000))
    events = [json.dumps(e, separators=(",", ":")).encode() for e in world.events(n_events)]
    n = len(events)
    with broker_for() as kafka, _online(online) as redis_url, \
            tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        for sub in ("a", "b"):
            world.write_catalogue(data / sub / "catalogue.jsonl")
        topics = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(3)]
        create_topics(kafka, {t: kafka.events_partitions for t in topics})
        try:
            produce_s = _produce(kafka, topics[0], events, None)
            floor, floor_cpu = floor_seconds(kafka, topics[0], batch_size)
            bfloor, bfloor_cpu = floor_seconds(kafka, topics[0], batch_size, batched=True)
            flow, _ = full_flow(kafka, topics[0], data / "a", online, batch_size, flush_s,
                                redis_url)
            full, full_cpu = _timed(flow)

            # Freshness: produce at a fixed rate while the flow tails the second topic.
            metrics.FRESHNESS_SAMPLES = []
            fresh_events = events[:int(fresh_rate * fresh_seconds)]
            flow2, _ = full_flow(kafka, topics[1], data / "b", online, batch_size, flush_s,
                                 redis_url)
            producer = threading.Thread(target=_produce,
                                        args=(kafka, topics[1], fresh_events, fresh_rate))
            before = _write_stats()
            producer.start()
            run_main(flow2, epoch_interval=EPOCH)
            producer.join()
            writes = {k: v - before[k] for k, v in _write_stats().items()}
            samples, metrics.FRESHNESS_SAMPLES = metrics.FRESHNESS_SAMPLES, None
            kafka_only = kafka_latency(kafka, topics[2], fresh_events, fresh_rate, batch_size)
        finally:
            delete_topics(kafka, topics)
    result = {
        "events": n, "online_store": online, "redis_url": redis_url, "workers": 1,
        "batch_size": batch_size,
        "hot_modules": compiled.describe(),
        "flush_s": flush_s, "produce_events_per_s": n / produce_s,
        "floor_events_per_s": n / floor, "floor_cpu_us_per_event": floor_cpu / n * 1e6,
        "batch_floor_events_per_s": n / bfloor,
        "batch_floor_cpu_us_per_event": bfloor_cpu / n * 1e6,
        "flow_events_per_s_per_worker": n / full, "flow_cpu_us_per_event": full_cpu / n * 1e6,
        "flow_vs_floor": floor / full, "flow_vs_batch_floor": bfloor / full,
        "freshness_rate_events_per_s": fresh_rate,
        "freshness_events": len(samples), "freshness_p50_s": _pct(samples, 0.5),
        "freshness_p99_s": _pct(samples, 0.99),
        "freshness_floor_p50_s": _pct(kafka_only, 0.5),
        "freshness_floor_p99_s": _pct(kafka_only, 0.99), "epoch_s": EPOCH.total_seconds(),
        "freshness_user_flushes": writes["flushes"], "freshness_user_rows": writes["rows"],
        "freshness_user_write_s": writes["seconds"],
        "targets": {"events_per_s_per_worker": 50_000, "freshness_p99_s": 1.0},
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result
