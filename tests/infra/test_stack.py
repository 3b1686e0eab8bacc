"""``marquee up`` as users run it, faults included: real processes, real SIGKILL.

The stack (``up --only stream``: broker, flow, Prometheus, supervised) takes events from a
producer sending at a fixed rate while the test SIGKILLs the flow, then the broker. It must
recover by itself, keep every acknowledged event once in the topic, and end with the token
log and online rows of a run that never saw a fault (the same messages, same partitions and
timestamps, through one clean flow). A flow that cannot start makes ``up`` exit non-zero,
naming the component and its log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from feature_repo.store import open_store, read_users
from infra.synthetic import SyntheticWorld, WorldConfig
from streams import launch
from streams.config import KafkaSettings
from streams.consume import read_all
from streams.launch import Launch, free_port
from streams.produce import produce_events
from streams.token_log import read_tokens

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MARQUEE = [sys.executable, "-m", "infra.cli"]
FAST_FLUSH = {"MARQUEE_FLOW_FLUSH_S": "0.05", "MARQUEE_FLOW_LOG_FLUSH_S": "0.3",
              "MARQUEE_ONLINE_STORE": "sqlite"}


def up(data: Path, ports: dict[str, int], *args: str, **env: str) -> subprocess.Popen:
    """``marquee up --only stream`` on its own ports and data folder."""
    base = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    cmd = [*MARQUEE, "up", "--only", "stream", "--data-dir", str(data),
           "--broker-port", str(ports["broker"]), "--flow-metrics-port", str(ports["flow"]),
           "--prometheus-port", str(ports["prometheus"]), *args]
    out = (data / "up.out").open("wb")
    return subprocess.Popen(cmd, cwd=ROOT, env={**base, **FAST_FLUSH, **env}, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> float:
    """Seconds until ``check`` holds."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"timed out waiting for {what}"
        time.sleep(0.1)
    return time.monotonic() - start


def state(data: Path) -> dict:
    path = data / "stack.json"
    return json.loads(path.read_text()) if path.exists() else {"components": {}}


def flow_metric(port: int, name: str) -> float | None:
    """A sample of the running flow's /metrics (None when it does not answer)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
    except httpx.HTTPError:
        return None
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(name) and not line.startswith("#")]
    return sum(values) if values else None


def caught_up(port: int) -> bool:
    return (flow_metric(port, "marquee_broker_up") == 1
            and flow_metric(port, "marquee_consumer_lag_messages") == 0)


def test_sigkill_of_flow_then_broker_loses_and_doubles_nothing(kafka_topics, tmp_path):
    world = SyntheticWorld(WorldConfig(n_users=150, days=3))
    events = list(world.events())[:6000]  # 30 s at 200/s: both faults land mid-stream
    data = tmp_path / "stack"
    data.mkdir()
    world.write_catalogue(data / "catalogue.jsonl")
    ports = {"broker": free_port(), "flow": free_port(), "prometheus": free_port()}
    proc = up(data, ports)
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{ports['broker']}")
    report: list = []
    figures: dict[str, float] = {}
    try:
        until(lambda: {"broker", "flow", "prometheus"} <= set(state(data)["components"]),
              "the stack to start", 90)
        until(lambda: caught_up(ports["flow"]), "the flow to report its lag")
        producer = threading.Thread(target=lambda: report.append(produce_events(
            events, kafka, rate=200, progress=False, track=True)))
        producer.start()

        time.sleep(3)
        (flow_pid,) = state(data)["components"]["flow"]["pids"]
        os.kill(flow_pid, signal.SIGKILL)
        figures["flow_recovered_s"] = until(
            lambda: (state(data)["components"]["flow"]["restarts"] == 1
                     and (flow_metric(ports["flow"], "marquee_events_consumed_total") or 0) > 0),
            "the restarted flow to read again")
        assert producer.is_alive(), "the producer ended before the broker fault"
        for pid in state(data)["components"]["broker"]["pids"]:
            os.kill(pid, signal.SIGKILL)
        figures["broker_recovered_s"] = until(
            lambda: (state(data)["components"]["broker"]["restarts"] == 1
                     and flow_metric(ports["flow"], "marquee_broker_up") == 1),
            "the restarted broker to answer the flow")

        producer.join(120)
        assert report, "the producer did not finish"
        sent = report[0]
        until(lambda: caught_up(ports["flow"]), "the flow to catch up", 120)
        time.sleep(1.5)  # the last row and token-log flushes (0.05 s and 0.3 s grids)
        assert proc.poll() is None, (data / "up.out").read_text()[-3000:]

        # Every acknowledged event is in the topic once, in the partition the broker named.
        # The offset in an acknowledgement is not checked: for a batch in flight across the
        # broker's restart Tansu has answered offset 0 or none (2 of 6,000 in one run), while
        # the record sat once at another offset of the same partition.
        records = read_all(kafka, kafka.events_topic)
        assert sent.delivered == len(sent.acked) >= len(events) * 0.98
        where = {(r.partition, r.value) for r in records}
        at = {(r.partition, r.offset): r.value for r in records}
        misplaced = [(p, o) for p, o, value in sent.acked if at.get((p, o)) != value]
        lost = [(p, o) for p, o, value in sent.acked if (p, value) not in where]
        assert not lost, (len(lost), lost[:5], len(misplaced), misplaced[:5], len(records))
        figures["acks_with_another_offset"] = len(misplaced)
        assert len({r.value for r in records}) == len(records) == sent.delivered
        assert not read_all(kafka, kafka.dead_letter_topic)  # nothing refused, nothing doubled

        users = sorted({e["user_id"] for e in events})
        got = {"tokens": read_tokens(data / "tokens").to_dict("records"),
               "users": read_users(open_store(online="sqlite", data_dir=data), users)}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, (data / "up.out").read_text()[-3000:]
    out = (data / "up.out").read_text()
    assert "supervisor: flow exited" in out and "supervisor: broker exited" in out

    # The same messages (partitions, order, timestamps) through one flow that never crashed.
    from confluent_kafka import Producer

    copy = Producer(kafka_topics.client_config())
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        copy.produce(kafka_topics.events_topic, value=r.value, key=r.key,
                     partition=r.partition, timestamp=r.timestamp)
    assert copy.flush(30) == 0
    clean = tmp_path / "clean"
    clean.mkdir()
    world.write_catalogue(clean / "catalogue.jsonl")
    env = {**os.environ, **FAST_FLUSH, "KAFKA_BOOTSTRAP_SERVERS": kafka_topics.bootstrap_servers,
           "MARQUEE_EVENTS_TOPIC": kafka_topics.events_topic,
           "MARQUEE_DEAD_LETTER_TOPIC": kafka_topics.dead_letter_topic,
           "MARQUEE_FLOW_DATA_DIR": str(clean), "MARQUEE_FLOW_TAIL": "false"}
    assert launch.run(Launch(), env, timeout=120, cwd=ROOT, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL) == 0
    want = {"tokens": read_tokens(clean / "tokens").to_dict("records"),
            "users": read_users(open_store(online="sqlite", data_dir=clean), users)}
    assert len(want["tokens"]) > 500
    assert got["tokens"] == want["tokens"]
    for user in users:
        mine, theirs = got["users"][user], want["users"][user]
        mine.pop("event_timestamp", None), theirs.pop("event_timestamp", None)
        assert mine == theirs, user
    print(json.dumps({"acknowledged": sent.delivered, "tokens": len(got["tokens"]),
                      **{k: round(v, 2) for k, v in figures.items()}}))


def test_a_crash_loop_stops_up_with_a_non_zero_exit_naming_the_flow(tmp_path):
    data = tmp_path / "loop"
    data.mkdir()
    ports = {"broker": free_port(), "flow": free_port(), "prometheus": free_port()}
    proc = up(data, ports, "--max-restarts", "3", "--restart-backoff-s", "0.2",
              MARQUEE_FLOW_SHARDS="0")  # an invalid setting: the flow exits at start
    try:
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = (data / "up.out").read_text()
    assert code == 1, out[-3000:]
    assert "flow exited 3 times" in out and str(data / "flow.log") in out
    assert "shards" in (data / "flow.log").read_text()  # the log says why
    assert state(data)["stopped"] is True


def test_a_second_up_resumes_and_up_fresh_starts_from_nothing(tmp_path):
    """Stop ``up`` (SIGTERM) and start it again on the same folder: the broker still holds
    every acknowledged event, the flow reads none of them again, the rows stay; ``--fresh``
    forgets them all."""
    world = SyntheticWorld(WorldConfig(n_users=40, days=2))
    events = list(world.events())
    first, second = events[:800], events[800:1200]
    data = tmp_path / "resume"
    data.mkdir()
    world.write_catalogue(data / "catalogue.jsonl")
    ports = {"broker": free_port(), "flow": free_port(), "prometheus": free_port()}
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{ports['broker']}")
    users = sorted({e["user_id"] for e in first})

    def run_up(*args: str, produce: list[dict]) -> tuple[int, float, dict]:
        """Start up, count what the topic holds, send ``produce``, wait until it is read;
        returns (held at start, what this flow process consumed, user rows), then stops up."""
        proc = up(data, ports, *args)
        try:
            until(lambda: caught_up(ports["flow"]), "the stack to start", 90)
            held = len(read_all(kafka, kafka.events_topic))
            if produce:
                assert produce_events(produce, kafka, progress=False).delivered == len(produce)
            until(lambda: (flow_metric(ports["flow"], "marquee_events_consumed_total") or 0)
                  >= len(produce) and caught_up(ports["flow"]), "the flow to read it all")
            time.sleep(5.5)  # a recovery snapshot (every 5 s in up) after the last read
            consumed = flow_metric(ports["flow"], "marquee_events_consumed_total") or 0
            rows = read_users(open_store(online="sqlite", data_dir=data), users)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            assert proc.wait(60) == 0, (data / "up.out").read_text()[-3000:]
        return held, consumed, rows

    held, consumed, rows = run_up(produce=first)
    assert held == 0 and consumed == len(first) and all(rows[u]["n_tokens"] for u in users)
    held, consumed, again = run_up(produce=second)
    assert held == len(first)  # the broker kept every acknowledged event
    assert consumed == len(second)  # the flow resumed where it stopped: none read again
    assert all(again[u]["n_tokens"] >= rows[u]["n_tokens"] for u in users)
    held, consumed, fresh = run_up("--fresh", produce=[])
    assert held == 0 and consumed == 0 and not any(fresh[u]["n_tokens"] for u in users)
