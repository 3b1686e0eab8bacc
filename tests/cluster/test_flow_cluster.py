"""The flow across hosts: two Bytewax members on hosts ``flow-a`` and ``flow-b`` joined with
``-i/-a``, the durable broker and a persistent Redis on hosts of their own, events produced
from ``client``; the result must equal one process's run of the same stream, with and without
faults (a member host's processes SIGKILLed, a cable pulled, Redis SIGKILLed).

Each faulted run tails the stream while the client produces its second half, takes the fault a
third of the way in, is supervised (all members restart from recovery when one exits, as
Bytewax requires) until its snapshots have committed the whole topic, then runs to the end of
the topic as a replay does (every open token closed) so that the token log can be compared.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.stack import DURABLE_FETCH_WAIT_MS
from infra.synthetic import SyntheticWorld
from streams import launch
from streams.launch import Launch
from tests.cluster.flow_cluster import (
    FlowCluster,
    FlowMembers,
    Progress,
    diff,
    record,
)
from tests.streams.flow_runs import ROOT, flow_env, prepare, world_and_stream

RATE = 200.0  # events/s of the second half: 642 events, about 3.2 s
LINK_DOWN_S = 5.0
# Longer than redis-py's own retries (10, backoff capped at 1 s: at most about 4.3 s), so the
# flow's wait for its store (MARQUEE_FLOW_STORE_OUTAGE_S) is what carries the members through;
# MARQUEE_CLUSTER_REDIS_AWAY_S tries other outages.
REDIS_AWAY_S = float(os.environ.get("MARQUEE_CLUSTER_REDIS_AWAY_S", "8"))


@dataclass
class Reference:
    """The stream and what one process made of it, with no fault."""

    world: SyntheticWorld
    events: list[dict]
    first: list[bytes]
    rest: list[bytes]
    want: dict

    @property
    def total(self) -> int:
        """Records in the topic."""
        return len(self.first) + len(self.rest)


@pytest.fixture(scope="module")
def reference(flow_cluster: FlowCluster, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """One process on ``flow-a`` runs the whole stream; its rows are the expected ones."""
    world, events, first, rest = world_and_stream()
    topics = flow_cluster.topics()
    assert flow_cluster.produce(topics, first + rest).delivered == len(first) + len(rest)
    data = tmp_path_factory.mktemp("reference")
    db = flow_cluster.take_db()
    env = flow_env(topics, data, MARQUEE_ONLINE_STORE="redis",
                   MARQUEE_REDIS_URL=flow_cluster.redis_url(db),
                   MARQUEE_FLOW_FETCH_WAIT_MS=str(DURABLE_FETCH_WAIT_MS))
    with (data / "flow.err").open("wb") as log, flow_cluster.bed.inside("flow-a"):
        procs = launch.start(Launch(recovery_dir=prepare(data, world), snapshot_s=1), env,
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    assert launch.wait(procs, timeout=120) == 0, (data / "flow.err").read_text()[-3000:]
    want = flow_cluster.snapshot(data, events, db)
    assert len(want["tokens"]) > 100
    return Reference(world, events, first, rest, want)


def members_for(cluster: FlowCluster, ref: Reference, tmp: Path) -> FlowMembers:
    """Members of a new run: fresh topics, its own Redis database and consumer group."""
    members = FlowMembers(cluster, cluster.topics(), tmp / "run", cluster.take_db(),
                          group=f"cluster-{uuid.uuid4().hex[:8]}")
    prepare(members.data, ref.world)
    return members


def faulted_run(cluster: FlowCluster, ref: Reference, tmp: Path, fault: str,
                inject: Callable[[FlowMembers, Progress], dict]) -> dict:
    """Run the stream through both members with ``inject`` a third into its second half;
    the fault's cost, with the run's differences from the reference (all must be 0).
    """
    members = members_for(cluster, ref, tmp)
    assert cluster.produce(members.topics, ref.first).delivered == len(ref.first)
    progress = Progress(cluster, members.topics, members.group)
    members.start(tail=True)

    def healthy() -> None:
        assert not members.exited(), members.logs()

    progress.wait_for(len(ref.first), 60, "the first half", healthy)
    producer, reports = cluster.produce_in_background(members.topics, ref.rest, RATE)
    progress.wait_for(len(ref.first) + len(ref.rest) // 3, 60, "a third of the rest", healthy)
    fault_at = time.monotonic()
    seen = inject(members, progress)
    members.supervise(lambda: not producer.is_alive() and progress.committed() >= ref.total,
                      timeout=90)
    caught_up = time.monotonic()
    producer.join()
    assert reports and reports[0].delivered == len(ref.rest), reports
    # Read before the finishing run, whose start follows a SIGKILL of the tailing members.
    suspects = quarantined(members.data)["suspect_ranges"]
    members.finish()
    got = cluster.snapshot(members.data, ref.events, members.db)
    cost = {"fault": fault, **diff(got, ref.want), **quarantined(members.data),
            "suspect_ranges": suspects,
            "fault_to_topic_consumed_s": round(caught_up - fault_at, 2),
            "restarts": members.restarts,
            "exit_codes": sorted({code for _, code, _ in members.exits}),
            **seen}
    assert got == ref.want, cost
    return cost


def quarantined(data: Path) -> dict[str, int]:
    """What the flow's quarantine made of the crashes: message ranges it replayed one at a
    time (suspects) and messages it judged poison (dead-lettered, so missing from Feast).
    """
    def entries(name: str) -> int:
        return sum(len(json.loads(f.read_text())) for f in data.glob(f"quarantine/*/{name}"))

    return {"suspect_ranges": entries("suspects.json"), "poison": entries("poison.json")}


def test_events_from_the_client_land_in_redis_through_both_flow_hosts(
        flow_cluster: FlowCluster, reference: Reference, tmp_path: Path, costs: list[dict]):
    members = members_for(flow_cluster, reference, tmp_path)
    sent = flow_cluster.produce(members.topics, reference.first + reference.rest)
    assert sent.delivered == reference.total
    start = time.monotonic()
    members.start(tail=False)
    members.finish()  # nothing to stop: it runs to the end of the topic once
    took = time.monotonic() - start
    got = flow_cluster.snapshot(members.data, reference.events, members.db)
    # Both hosts did their share: each read its partitions (once), each wrote tokens.
    read = members.consumed()
    assert sum(read.values()) == reference.total and min(read.values()) > 0, read
    writers = {f.name.split("-")[0] for f in (members.data / "tokens").glob("*.parquet")}
    assert writers == {"w0", "w1"}, writers
    cost = {"fault": "none", **diff(got, reference.want), "run_s": round(took, 2),
            "consumed_by_host": read}
    assert got == reference.want, cost
    record(costs, **cost)


def test_flow_b_killed_mid_stream_restarts_with_nothing_lost_or_doubled(
        flow_cluster: FlowCluster, reference: Reference, tmp_path: Path, costs: list[dict]):
    def kill_flow_b(members: FlowMembers, _: Progress) -> dict:
        killed = flow_cluster.bed.kill("flow-b")
        assert members.procs["flow-b"].pid in killed
        start = time.monotonic()
        # What the surviving member does about its lost peer, before anyone restarts it.
        while members.procs["flow-a"].poll() is None and time.monotonic() - start < 10:
            time.sleep(0.05)
        code = members.procs["flow-a"].poll()
        return {"killed_pids": len(killed), "flow_a_exit": code,
                "flow_a_exit_after_s": round(time.monotonic() - start, 2)
                if code is not None else None}

    cost = faulted_run(flow_cluster, reference, tmp_path, "SIGKILL flow-b", kill_flow_b)
    assert members_exit_code(cost) and cost["restarts"] >= 1
    record(costs, **cost)


def members_exit_code(cost: dict) -> bool:
    """flow-b died of the SIGKILL (and nothing else happened to it)."""
    return -signal.SIGKILL in cost["exit_codes"]


def test_flow_a_cut_off_for_seconds_loses_and_doubles_nothing(
        flow_cluster: FlowCluster, reference: Reference, tmp_path: Path, costs: list[dict]):
    def pull_cable(members: FlowMembers, progress: Progress) -> dict:
        flow_cluster.bed.link_down("flow-a")
        time.sleep(1.5)  # a snapshot in flight when the cable went may still commit
        stalled_at = progress.committed()
        time.sleep(LINK_DOWN_S - 1.5)
        # No member can close an epoch without flow-a's progress: the snapshots stop.
        stalled = progress.committed() == stalled_at
        flow_cluster.bed.link_up("flow-a")
        return {"link_down_s": LINK_DOWN_S, "exited_while_down": members.exited(),
                "snapshots_stalled_while_down": stalled}

    cost = faulted_run(flow_cluster, reference, tmp_path, f"flow-a link down {LINK_DOWN_S:g} s",
                       pull_cable)
    record(costs, **cost)


def test_redis_killed_and_restarted_loses_no_row_and_the_flow_recovers(
        flow_cluster: FlowCluster, reference: Reference, tmp_path: Path, costs: list[dict]):
    import redis

    def kill_redis(members: FlowMembers, _: Progress) -> dict:
        url = flow_cluster.redis_url(members.db)
        with flow_cluster.bed.inside("client"):
            client = redis.Redis.from_url(url, socket_timeout=5)
            before = set(client.keys())
        killed = flow_cluster.bed.kill("redis")
        assert killed == [flow_cluster.redis.process.pid]
        down_at = time.monotonic()
        try:
            # Supervised while Redis is away: what the members do without their store.
            members.supervise(lambda: time.monotonic() - down_at > REDIS_AWAY_S,
                              timeout=REDIS_AWAY_S + 30)
            first_exit = min((t for _, _, t in members.exits), default=None)
            restarts_while_away = members.restarts
        finally:
            started = time.monotonic()
            flow_cluster.start_redis()
            redis_start_s = time.monotonic() - started
        with flow_cluster.bed.inside("client"):
            after = set(redis.Redis.from_url(url, socket_timeout=5).keys())
        lost_keys = len(before - after)
        assert before and not lost_keys, f"{lost_keys} of {len(before)} rows lost"
        return {"redis_away_s": REDIS_AWAY_S, "rows_before_kill": len(before),
                "rows_lost_by_redis": lost_keys, "redis_restart_s": round(redis_start_s, 2),
                "first_member_exit_after_s": round(first_exit - down_at, 2)
                if first_exit is not None else None,
                "restarts_while_redis_away": restarts_while_away}

    try:
        cost = faulted_run(flow_cluster, reference, tmp_path, "SIGKILL redis", kill_redis)
    finally:
        if not flow_cluster.redis.alive():
            flow_cluster.start_redis()
    record(costs, **cost)

