"""``marquee bench stream``: the flow's throughput into Feast, its CPU, memory, scale-out and
freshness, each beside a floor measured in the same run.

1. Generate N synthetic events from U users (each user's first N/U events, merged in time
   order) and produce them to a fresh topic (embedded broker unless
   ``KAFKA_BOOTSTRAP_SERVERS`` is set); the events of the first U/2 users go to a second.
2. Floors: a do-nothing Bytewax flow over the topic, one worker, to its end markers: with
   Bytewax's ``KafkaSource`` (one item per message: "the framework's floor") and with the
   flow's own ``KafkaBatchSource`` (one item per poll: where the flow starts from).
3. Full flow, one worker, Feast SQLite (or ``--online redis``) in a temp dir: events/s, CPU
   us per event, resident memory when the input ended and each user's pickled state (what
   Bytewax snapshots). Redis is the one at ``MARQUEE_REDIS_URL`` when that is set, else a
   ``redis-server`` started for the run (``infra.redis_server``).
4. Growth: the same flow over the U/2-user topic (same events per user); memory per 100,000
   more users is the difference. Beside it, one user's state as their history grows.
5. Scale-out: the flow as ``--processes`` Bytewax processes (one cluster over loopback) over
   the topic's partitions; aggregate events/s and the ratio to one process.
6. Freshness: the flow tailing a topic while events are produced at ``--fresh-rate``; p50/p99
   of (online write - producer timestamp), unless the flow fell behind (then it says it was
   over capacity). Beside it, the same produce read by a do-nothing flow: the broker's share.

Every flow runs in a process of its own (``infra.bench.stream_child``), so its CPU and memory
are its own; each phase also says how busy the machine and the broker were meanwhile.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infra.bench import procfs
from infra.bench.stream_child import Job, Phase, run_jobs
from infra.bench.stream_flows import floor_flow, latency_flow, measured_flow
from infra.bench.stream_memory import history_curve
from infra.bench.stream_report import Measured, build_report
from infra.bench.stream_sources import end_markers
from infra.synthetic import SyntheticWorld, WorldConfig
from streams import compiled
from streams.config import KafkaSettings
from streams.contract.files import key_of
from streams.produce import ProduceReport, produce_events
from streams.topics import create_topics, delete_topics

HISTORY = (100, 1_000, 5_000, 20_000)  # one user's events at which their state is weighed


class Progress:
    """One line per phase on stderr, with the seconds since the start."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        """Say what starts now."""
        if self.enabled:
            print(f"[bench stream {time.perf_counter() - self.start:6.0f} s] {message}",
                  file=sys.stderr, flush=True)


def generate(n_events: int, users: int, seed: int = 7) -> list[bytes]:
    """``n_events`` events from ``users`` users, every user with their first
    ``ceil(n_events / users)`` events, as the JSON the producers send.
    """
    if not 1 <= users <= n_events:
        raise ValueError(f"{users:,} users for {n_events:,} events: give --users between 1 "
                         "and --events (each user needs at least one event)")
    world = SyntheticWorld(WorldConfig(seed=seed, n_users=users))
    per_user = -(-n_events // users)
    return [json.dumps(e, separators=(",", ":")).encode()
            for e in world.events(n_events, per_user=per_user)]


def first_users(events: list[bytes], users: int) -> list[bytes]:
    """The events of synthetic users ``u000000`` .. ``u{users-1}``: with the same events per
    user, the world of ``users`` users.
    """
    return [e for e in events if int((key_of(e) or b"u0")[1:]) < users]


def _produce(kafka: KafkaSettings, topic: str, events: list[bytes],
             rate: float | None) -> ProduceReport:
    report = produce_events(events, kafka, topic=topic, rate=rate, progress=False)
    if report.undelivered:
        raise RuntimeError(f"bench stream: {report.summary()}")
    return report


def _feed(kafka: KafkaSettings, topic: str, events: list[bytes],
          rate: float | None) -> tuple[ProduceReport, float]:
    """Produce ``events`` (at ``rate``), note when the last was acknowledged, then end every
    partition with an end marker.
    """
    report = _produce(kafka, topic, events, rate)
    acked_at = time.time()
    end_markers(kafka, topic, kafka.events_partitions)
    return report, acked_at


def _watched() -> dict[int, str]:
    """The processes beside the measured flows: this one (``bench``: the producer in the
    freshness phases) and the broker and Redis when it started them (its children that are
    not the benchmark's own Python processes).
    """
    names = {"tansu": "broker", "redis-server": "redis"}
    out = {os.getpid(): "bench"}
    for pid, comm in procfs.children(os.getpid()).items():
        if not comm.startswith("python"):
            out[pid] = next((v for k, v in names.items() if comm.startswith(k)), comm)
    return out


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


class Bench:
    """One run's broker, store, folders and settings: the phases are its methods."""

    def __init__(self, kafka: KafkaSettings, root: Path, world: SyntheticWorld, online: str,
                 redis_url: str | None, batch_size: int, flush_s: float) -> None:
        self.kafka, self.root, self.world = kafka, root, world
        self.online, self.redis_url = online, redis_url
        self.batch_size, self.flush_s = batch_size, flush_s
        self.watch = _watched()
        self.topics: list[str] = []  # deleted at the end

    def topic(self) -> str:
        """A fresh topic with the events topic's partitions."""
        name = f"bench-{uuid.uuid4().hex[:8]}"
        create_topics(self.kafka, {name: self.kafka.events_partitions})
        self.topics.append(name)
        return name

    def data(self, name: str) -> Path:
        """A fresh data folder for one flow run, with the catalogue the flow reads."""
        self.world.write_catalogue(self.root / name / "catalogue.jsonl")
        return self.root / name

    def floor(self, topic: str, batched: bool) -> Phase:
        """A do-nothing flow over ``topic``."""
        return run_jobs([Job("batch floor" if batched else "floor", floor_flow, {
            "kafka": self.kafka, "topic": topic, "batch_size": self.batch_size,
            "batched": batched})], watch=self.watch)

    def flow_jobs(self, topic: str, data: Path, name: str, processes: int = 1,
                  **extra: Any) -> list[Job]:
        """The full flow as ``processes`` processes (one cluster over loopback)."""
        from streams.launch import free_port

        kwargs = {"kafka": self.kafka, "topic": topic, "data": data, "online": self.online,
                  "batch_size": self.batch_size, "flush_s": self.flush_s,
                  "redis_url": self.redis_url, **extra}
        if processes == 1:
            return [Job(name, measured_flow, kwargs)]
        addresses = tuple(f"127.0.0.1:{free_port()}" for _ in range(processes))
        return [Job(f"{name} {i}", measured_flow, kwargs, addresses, i)
                for i in range(processes)]

    def flow(self, topic: str, data: Path, name: str, processes: int = 1,
             **extra: Any) -> Phase:
        """The full flow over ``topic`` to its end markers."""
        return run_jobs(self.flow_jobs(topic, data, name, processes, **extra), watch=self.watch)

    def fresh(self, events: list[bytes], rate: float, floor: bool) -> Phase:
        """The full flow (or, ``floor``, the latency floor) tailing a new topic while
        ``events`` are produced at ``rate``.
        """
        topic = self.topic()
        if floor:
            jobs = [Job("latency floor", latency_flow, {
                "kafka": self.kafka, "topic": topic, "batch_size": self.batch_size})]
        else:
            jobs = self.flow_jobs(topic, self.data("fresh"), "freshness", freshness=True)
        return run_jobs(jobs, lambda: _feed(self.kafka, topic, events, rate), self.watch)

    def run(self, events: list[bytes], users: int, processes: int, fresh_rate: float,
            fresh_seconds: float, say: Progress) -> Measured:
        """Every phase, in order; ``events`` is emptied once produced."""
        half = users // 2
        small = first_users(events, half) if half else []
        fresh_events = events[:int(fresh_rate * fresh_seconds)]
        n = len(events)
        say(f"producing {n:,} events (and {len(small):,} of {half:,} users)")
        main, growth = self.topic(), self.topic()
        produce_s = _feed(self.kafka, main, events, None)[0].seconds
        if small:
            _feed(self.kafka, growth, small, None)
        events.clear()  # the children hold their own state; this list is not needed now
        phases: dict[str, Phase] = {}
        say("floor: Bytewax KafkaSource, read and drop")
        phases["floor"] = self.floor(main, batched=False)
        say("floor: the flow's batch source, read and drop")
        phases["batch_floor"] = self.floor(main, batched=True)
        say("flow into Feast, 1 process")
        phases["flow"] = self.flow(main, self.data("flow"), "flow", state=True)
        if small:
            say(f"flow into Feast over {half:,} users (memory growth)")
            phases["growth"] = self.flow(growth, self.data("growth"), "growth", state=True)
        if processes > 1:
            say(f"flow into Feast, {processes} processes")
            phases["scale_out"] = self.flow(main, self.data("cluster"), "flow", processes)
        say(f"freshness: flow tailing {len(fresh_events):,} events at {fresh_rate:,.0f}/s")
        phases["freshness"] = fresh = self.fresh(fresh_events, fresh_rate, floor=False)
        say("freshness floor: do-nothing flow, same produce")
        phases["freshness_floor"] = self.fresh(fresh_events, fresh_rate, floor=True)
        grown, cluster = phases.get("growth"), phases.get("scale_out")
        return Measured(
            events=n, users=users, online=self.online, redis_url=self.redis_url,
            batch_size=self.batch_size, flush_s=self.flush_s,
            partitions=self.kafka.events_partitions, generate_s=0.0, produce_s=produce_s,
            floor=phases["floor"].runs[0], batch_floor=phases["batch_floor"].runs[0],
            flow=phases["flow"].runs[0], fresh=fresh.runs[0],
            fresh_floor=phases["freshness_floor"].runs[0], fresh_rate=fresh_rate,
            fresh_produced_rate=fresh.got[0].rate, fresh_produced_at=fresh.got[1],
            growth=grown.runs[0] if grown else None, growth_users=half,
            growth_events=len(small), cluster=cluster.runs if cluster else [],
            cores={name: phase.cores for name, phase in phases.items()},
            hot_modules=compiled.describe())


def run_bench(n_events: int = 1_000_000, online: str = "sqlite", batch_size: int = 5000,
              flush_s: float = 0.1, fresh_rate: float = 20_000.0, fresh_seconds: float = 8.0,
              out: Path | None = None, *, users: int = 100_000, processes: int = 2,
              progress: bool = True) -> dict[str, Any]:
    """Run the benchmark; returns (and optionally writes) the figures."""
    from infra.broker import broker_for

    if online not in ("sqlite", "redis"):
        raise ValueError(f"online store {online!r}: choose sqlite or redis")
    partitions = KafkaSettings().events_partitions
    if not 1 <= processes <= partitions:
        raise ValueError(f"--processes {processes}: give 1 to {partitions} (the topic's "
                         "partitions; set MARQUEE_EVENTS_PARTITIONS for more)")
    say = Progress(progress)
    say(f"generating {n_events:,} events from {users:,} users")
    start = time.perf_counter()
    events = generate(n_events, users)
    generate_s = time.perf_counter() - start
    with broker_for() as kafka, _online(online) as redis_url, \
            tempfile.TemporaryDirectory() as tmp:
        bench = Bench(kafka, Path(tmp), SyntheticWorld(WorldConfig(n_users=users)), online,
                      redis_url, batch_size, flush_s)
        try:
            measured = bench.run(events, users, processes, fresh_rate, fresh_seconds, say)
        finally:
            delete_topics(kafka, bench.topics)
    measured.generate_s = generate_s
    say("one user's state as their history grows")
    measured.history = history_curve(_long_history(max(HISTORY)), HISTORY)
    result = build_report(measured)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _long_history(n: int) -> Iterator[bytes]:
    """One synthetic user's first ``n`` events (over as many days as that takes)."""
    world = SyntheticWorld(WorldConfig(n_users=1, days=max(n // 10, 30)))
    for event in world.events(n):
        yield json.dumps(event, separators=(",", ":")).encode()
