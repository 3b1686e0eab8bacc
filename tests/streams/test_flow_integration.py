"""The flow as ``marquee flow`` runs it: a real broker, a real Feast store, real processes.

The crash test kills the flow with SIGKILL mid-stream, restarts it on the same recovery
directory and checks that Feast, the token log and the vocabulary equal those of a run that
never crashed: every accepted event's token present once, nothing lost, nothing doubled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from feature_repo.store import open_store, read_items, read_users
from infra.synthetic import SyntheticWorld, WorldConfig
from streams import launch
from streams.config import KafkaSettings
from streams.consume import read_all
from streams.launch import Launch
from streams.produce import produce_events
from streams.token_log import read_tokens

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def world_and_stream() -> tuple[SyntheticWorld, list[dict], list[bytes], list[bytes]]:
    """The world, its events, and the stream as two halves: the first 1500 events plus
    three bad records, then the rest."""
    world = SyntheticWorld(WorldConfig(n_users=40, days=3))
    events = list(world.events())
    noise = [b"{broken", json.dumps({**events[0], "event_id": "bad-1", "device": ""}).encode(),
             json.dumps(events[10]).encode()]  # a duplicate
    first = [json.dumps(e).encode() for e in events[:1500]] + noise
    return world, events, first, [json.dumps(e).encode() for e in events[1500:]]


def produce(kafka: KafkaSettings, records: list[bytes]) -> None:
    report = produce_events(records, kafka, progress=False)
    assert report.delivered == len(records)


def fresh_topics(kafka: KafkaSettings) -> KafkaSettings:
    import uuid

    from streams.topics import create_topics

    suffix = uuid.uuid4().hex[:12]
    topics = kafka.model_copy(update={"events_topic": f"events-{suffix}",
                                      "dead_letter_topic": f"dlq-{suffix}"})
    create_topics(topics, {topics.events_topic: 4, topics.dead_letter_topic: 1})
    return topics


def flow_env(kafka: KafkaSettings, data: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "MARQUEE_EVENTS_TOPIC": kafka.events_topic,
            "MARQUEE_DEAD_LETTER_TOPIC": kafka.dead_letter_topic,
            "MARQUEE_FLOW_DATA_DIR": str(data), "MARQUEE_FLOW_TAIL": "false",
            "MARQUEE_FLOW_FINISH_AT_EOF": "true", "MARQUEE_FLOW_FLUSH_S": "0.05",
            "MARQUEE_FLOW_LOG_FLUSH_S": "0.2",
            "MARQUEE_ONLINE_STORE": "sqlite", "PYTHONPATH": str(ROOT), **extra}


def prepare(data: Path, world: SyntheticWorld) -> Path:
    """The catalogue in ``data``; the recovery directory the flow's launch creates there
    (one partition per worker) on its first start."""
    world.write_catalogue(data / "catalogue.jsonl")
    return data / "recovery"


def run_flow(kafka, data, recovery, timeout=120, processes=1, **extra) -> None:
    err = data / "flow.err"
    with err.open("wb") as log:
        code = launch.run(Launch(processes=processes, recovery_dir=recovery, snapshot_s=1),
                          flow_env(kafka, data, **extra), timeout=timeout, cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=log)
    assert code == 0, err.read_text()[-3000:]


def snapshot_of(data: Path, events: list[dict]) -> dict:
    store = open_store(online="sqlite", data_dir=data)
    users = sorted({e["user_id"] for e in events})
    items = sorted({e["item_id"] for e in events if e["item_id"]})
    tokens = read_tokens(data / "tokens")
    return {"users": read_users(store, users), "items": read_items(store, items),
            "tokens": tokens.to_dict("records"), "vocab": json.loads(
                (data / "vocab.json").read_text())}


@pytest.fixture(scope="module")
def clean_run(kafka: KafkaSettings, tmp_path_factory: pytest.TempPathFactory):
    """The stream and the results of one worker that never crashed, shared by both tests
    (each would otherwise produce and run it again)."""
    from streams.topics import delete_topics

    topics = fresh_topics(kafka)
    tmp = tmp_path_factory.mktemp("clean")
    world, events, first, rest = world_and_stream()
    produce(topics, first + rest)
    run_flow(topics, tmp / "clean", prepare(tmp / "clean", world))
    yield topics, events, world, snapshot_of(tmp / "clean", events)
    delete_topics(topics, [topics.events_topic, topics.dead_letter_topic])


def test_sigkill_mid_stream_then_restart_equals_a_run_without_crash(clean_run, kafka, tmp_path):
    _, events, world, want = clean_run
    assert len(want["tokens"]) > 100
    assert sum(r["n_tokens"] or 0 for r in want["users"].values()) > 100

    # The same stream on its own topic. Only its first half is there while a tailing flow
    # (it never ends by itself, however fast the machine) runs past its first snapshot and is
    # killed; the second half arrives while it is down, and a restart reads to the end.
    topics = fresh_topics(kafka)
    _, _, first, rest = world_and_stream()
    produce(topics, first)
    crashed = tmp_path / "crashed"
    recovery = prepare(crashed, world)
    (proc,) = launch.start(Launch(recovery_dir=recovery, snapshot_s=1),
                           flow_env(topics, crashed, MARQUEE_FLOW_BATCH_SIZE="20",
                                    MARQUEE_FLOW_TAIL="true"),
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while not list((crashed / "tokens").glob("*.parquet")) and time.monotonic() < deadline:
        assert proc.poll() is None, "the tailing flow died"
        time.sleep(0.02)
    time.sleep(1.2)  # past the first 1 s snapshot: the restart resumes from it
    assert proc.poll() is None, "the tailing flow died"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert len(list((crashed / "tokens").glob("*.parquet"))) >= 1
    produce(topics, rest)
    run_flow(topics, crashed, recovery)
    got = snapshot_of(crashed, events)

    assert got["tokens"] == want["tokens"]  # every token once (duplicates dropped on read)
    assert got["users"] == want["users"]
    assert got["items"] == want["items"]
    assert got["vocab"] == want["vocab"]

    # Dead letters carry their reasons (at least once: the restart may repeat some).
    dlq = [json.loads(r.value) for r in read_all(topics, topics.dead_letter_topic)]
    assert {d["reason"] for d in dlq} == {"invalid_event", "invalid_device", "duplicate"}


def test_two_worker_processes_give_the_same_results_as_one(clean_run, tmp_path):
    kafka_topics, events, world, b = clean_run
    two = tmp_path / "two"
    run_flow(kafka_topics, two, prepare(two, world), processes=2)
    a = snapshot_of(two, events)
    diff = {k: (a["items"][k], b["items"][k]) for k in a["items"] if a["items"][k] != b["items"][k]}
    assert a == b, list(diff.items())[:3]
