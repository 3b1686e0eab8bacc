"""A Marquee flow cluster on a network-namespace test bed: the durable broker, Redis with its
append-only file, two Bytewax members on hosts of their own, and a client host.

Everything that talks to a bed address runs inside a bed host (``TestBed.inside``): the
machine's own namespace has no route to them. The members share one data folder, as pods
would share a volume (the vocabulary and the recovery partitions live there); only the network
is split.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from infra.broker import EmbeddedBroker
from infra.netns import TestBed
from infra.redis_server import RedisServer
from infra.stack import DURABLE_FETCH_WAIT_MS
from streams.config import KafkaSettings
from streams.launch import Launch, Member, start_member
from streams.produce import ProduceReport, produce_events
from tests.streams.flow_runs import ROOT, consumed, flow_env, fresh_topics, snapshot_of

HOSTS = ("broker", "redis", "flow-a", "flow-b", "client")
MEMBERS = ("flow-a", "flow-b")
BYTEWAX_PORT = 2100  # each host has its own ports; a new one per start of the members


@dataclass
class FlowCluster:
    """The bed and its servers; ``db`` numbers keep each run's Redis rows apart."""

    bed: TestBed
    broker: EmbeddedBroker
    redis: RedisServer
    tmp: Path
    next_db: int = 1

    @property
    def kafka(self) -> KafkaSettings:
        """Settings for the broker (its address on the bed)."""
        return self.broker.settings()

    def topics(self) -> KafkaSettings:
        """Fresh events and dead-letter topics, made from the client host."""
        with self.bed.inside("client"):
            return fresh_topics(self.kafka)

    def produce(self, topics: KafkaSettings, records: list[bytes],
                rate: float | None = None) -> ProduceReport:
        """Produce from the client host (any thread: it enters the host itself)."""
        with self.bed.inside("client"):
            return produce_events(records, topics, rate=rate, progress=False)

    def produce_in_background(self, topics: KafkaSettings, records: list[bytes],
                              rate: float) -> tuple[threading.Thread, list[ProduceReport]]:
        """A thread producing ``records`` from the client at ``rate``; its report lands in
        the list when it ends.
        """
        reports: list[ProduceReport] = []
        thread = threading.Thread(
            target=lambda: reports.append(self.produce(topics, records, rate)), daemon=True)
        thread.start()
        return thread, reports

    def redis_url(self, db: int) -> str:
        """The Redis URL of database ``db`` (each run writes to one of its own)."""
        return self.redis.url.rsplit("/", 1)[0] + f"/{db}"

    def take_db(self) -> int:
        """A Redis database no run has used yet."""
        self.next_db += 1
        assert self.next_db < 16, "Redis has 16 databases; too many runs on one cluster"
        return self.next_db

    def start_redis(self) -> None:
        """Start Redis on its host (again, after a kill: same port, same folder)."""
        with self.bed.inside("redis"):
            self.redis.start()

    def snapshot(self, data: Path, events: list[dict], db: int) -> dict:
        """The run's rows (read from Redis, from the client), token log and vocabulary."""
        with self.bed.inside("client"):
            return snapshot_of(data, events, online="redis", redis_url=self.redis_url(db))


class Progress:
    """How far the flow got, as a lag tool sees it: the offsets its snapshots committed to
    the run's consumer group, read from the client host.
    """

    def __init__(self, cluster: FlowCluster, topics: KafkaSettings, group: str,
                 partitions: int = 4) -> None:
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
        from confluent_kafka.admin import AdminClient

        with cluster.bed.inside("client"):  # the client's threads stay on the client host
            self.admin = AdminClient(topics.client_config())
        self.request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(topics.events_topic, p) for p in range(partitions)])
        self.group = group

    def committed(self) -> int:
        """Records the flow has read and snapshotted, over all partitions."""
        try:
            answer = self.admin.list_consumer_group_offsets([self.request])[self.group]
            parts = answer.result(5).topic_partitions
        except Exception:  # the broker may be out of reach during a fault
            return -1
        return sum(max(tp.offset, 0) for tp in parts)

    def wait_for(self, count: int, timeout: float, what: str,
                 check: Callable[[], None] | None = None) -> float:
        """Wait until ``count`` records are committed; the time it took."""
        start = time.monotonic()
        while self.committed() < count:
            if check is not None:
                check()
            assert time.monotonic() - start < timeout, f"timed out waiting for {what}"
            time.sleep(0.1)
        return time.monotonic() - start


@dataclass
class FlowMembers:
    """The two members of one run, started on their hosts through ``streams.launch``.

    ``supervise`` does what a supervisor (Kubernetes, systemd) does for a Bytewax cluster:
    when a member exits, the others are stopped and all restart from recovery together, since
    a cluster missing a member cannot go on.
    """

    cluster: FlowCluster
    topics: KafkaSettings
    data: Path
    db: int
    group: str
    snapshot_s: int = 1
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    starts: int = 0
    restarts: int = 0
    exits: list[tuple[str, int | None, float]] = field(default_factory=list)  # host, code, when

    @property
    def launch(self) -> Launch:
        """Two processes, one per member host; recovery in the shared data folder."""
        return Launch(processes=len(MEMBERS), recovery_dir=self.data / "recovery",
                      snapshot_s=self.snapshot_s)

    def metrics_dir(self, host: str) -> Path:
        """Where a member's metrics samples go (``consumed`` reads them)."""
        return self.data / f"metrics-{host}"

    def env(self, host: str, tail: bool) -> dict[str, str]:
        """A member's environment: the bed's broker and Redis, the run's group."""
        folder = self.metrics_dir(host)
        folder.mkdir(parents=True, exist_ok=True)
        return flow_env(self.topics, self.data, MARQUEE_ONLINE_STORE="redis",
                        MARQUEE_REDIS_URL=self.cluster.redis_url(self.db),
                        MARQUEE_CONSUMER_GROUP=self.group,
                        MARQUEE_FLOW_TAIL=str(tail).lower(),
                        MARQUEE_FLOW_FINISH_AT_EOF=str(not tail).lower(),
                        MARQUEE_FLOW_FETCH_WAIT_MS=str(DURABLE_FETCH_WAIT_MS),
                        PROMETHEUS_MULTIPROC_DIR=str(folder))

    def start(self, tail: bool) -> None:
        """Start every member on its host (Bytewax's ``-i/-a`` over the bed's addresses)."""
        self.starts += 1
        bed = self.cluster.bed
        addresses = tuple(f"{bed.address(h)}:{BYTEWAX_PORT + self.starts}" for h in MEMBERS)
        for i, host in enumerate(MEMBERS):
            with (self.data / f"{host}.{self.starts}.err").open("wb") as log, \
                    bed.inside(host):
                self.procs[host] = start_member(self.launch, Member(i, addresses),
                                                self.env(host, tail), cwd=ROOT,
                                                stdout=subprocess.DEVNULL, stderr=log,
                                                start_new_session=True)

    def stop(self) -> None:
        """SIGKILL every member's processes (their hosts' processes)."""
        for host in MEMBERS:
            self.cluster.bed.kill(host)
        for proc in self.procs.values():
            proc.wait(10)

    def exited(self) -> list[str]:
        """Members whose process has ended."""
        return [h for h, p in self.procs.items() if p.poll() is not None]

    def supervise(self, done: Callable[[], bool], timeout: float,
                  backoff: float = 0.5) -> None:
        """Restart all members whenever one exits, until ``done()``."""
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"not done after {timeout}s: {self.logs()}"
            if self.exited():
                now = time.monotonic()
                self.exits += [(h, p.poll(), now) for h, p in self.procs.items()
                               if p.poll() is not None]
                self.stop()
                self.restarts += 1
                time.sleep(backoff)
                self.start(tail=True)
            time.sleep(0.1)

    def finish(self, timeout: float = 120) -> None:
        """Stop the tailing members and run them to the end of the topic (a replay's end:
        every open token closed), from recovery.
        """
        self.stop()
        self.start(tail=False)
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in self.procs.values()):
            assert time.monotonic() < deadline, f"the finishing run hangs: {self.logs()}"
            assert all(p.poll() in (None, 0) for p in self.procs.values()), self.logs()
            time.sleep(0.1)
        assert [p.returncode for p in self.procs.values()] == [0, 0], self.logs()

    def consumed(self) -> dict[str, int]:
        """Messages each member host read, over all its starts."""
        return {h: consumed(self.metrics_dir(h)) for h in MEMBERS}

    def logs(self) -> str:
        """The end of the latest start's stderr of each member."""
        return "\n".join(f"--- {h}: {(self.data / f'{h}.{self.starts}.err').read_text()[-1500:]}"
                         for h in MEMBERS)


def diff(got: dict, want: dict) -> dict[str, int]:
    """What a run lost and doubled against the run without faults: tokens missing or extra
    (as multisets of whole records), and feature rows and vocabulary tables that differ.
    """
    def counts(tokens: list[dict]) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in tokens:
            key = json.dumps(t, sort_keys=True, default=str)
            out[key] = out.get(key, 0) + 1
        return out

    g, w = counts(got["tokens"]), counts(want["tokens"])
    lost = sum(max(n - g.get(k, 0), 0) for k, n in w.items())
    doubled = sum(max(n - w.get(k, 0), 0) for k, n in g.items())
    users = sum(got["users"].get(u) != row for u, row in want["users"].items())
    items = sum(got["items"].get(i) != row for i, row in want["items"].items())
    return {"tokens_lost": lost, "tokens_doubled": doubled, "user_rows_differ": users,
            "item_rows_differ": items, "vocab_differs": int(got["vocab"] != want["vocab"])}


def record(costs: list[dict], **cost: object) -> None:
    """Keep a fault's cost for the session summary (and ``MARQUEE_CLUSTER_COSTS``, a JSON
    lines file, when set)."""
    costs.append(cost)
    path = os.environ.get("MARQUEE_CLUSTER_COSTS")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps(cost) + "\n")
    print(json.dumps(cost))
