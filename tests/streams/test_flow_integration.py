"""The flow as ``marquee flow`` runs it: a real broker, a real Feast store, real processes.

The crash test kills the flow with SIGKILL while it reads, restarts it on the same recovery
directory and checks that the restart resumed from a snapshot (it reads fewer messages than the
topic holds, by the flow's own ``marquee_events_consumed_total``) and that Feast, the token log
and the vocabulary equal those of a run that never crashed: every accepted event's token
present once, nothing lost, nothing doubled.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import pytest

from streams import launch
from streams.config import KafkaSettings
from streams.consume import read_all
from streams.launch import Launch
from streams.produce import produce_events
from tests.streams.flow_runs import (
    ROOT,
    consumed,
    counted_by,
    flow_env,
    fresh_topics,
    prepare,
    produce,
    run_flow,
    snapshot_of,
    wait_until,
    world_and_stream,
)

pytestmark = pytest.mark.integration


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

    # The same stream on its own topic. A tailing flow (it never ends by itself) reads the
    # first half; the second half is produced while it runs, and the flow is killed when its
    # consumed counter shows it two thirds through it (about two 1 s snapshots after the first
    # half). A restart on the same recovery directory reads on to the end.
    topics = fresh_topics(kafka)
    _, _, first, rest = world_and_stream()
    total = len(first) + len(rest)
    produce(topics, first)
    crashed = tmp_path / "crashed"
    recovery = prepare(crashed, world)
    killed_metrics = crashed / "metrics-killed"
    (proc,) = launch.start(Launch(recovery_dir=recovery, snapshot_s=1),
                           flow_env(topics, crashed, MARQUEE_FLOW_BATCH_SIZE="20",
                                    MARQUEE_FLOW_TAIL="true", **counted_by(killed_metrics)),
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: consumed(killed_metrics) >= len(first), "the first half", proc)
        sent: list = []
        producer = threading.Thread(target=lambda: sent.append(
            produce_events(rest, topics, rate=200, progress=False)))
        producer.start()
        partway = len(first) + 2 * len(rest) // 3
        wait_until(lambda: consumed(killed_metrics) >= partway, "partway through", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    producer.join(60)
    assert sent and sent[0].delivered == len(rest)
    at_kill = consumed(killed_metrics)
    assert len(first) < at_kill < total, "not killed partway through the second half"
    assert len(read_all(topics, topics.events_topic)) == total

    restart_metrics = crashed / "metrics-restart"
    run_flow(topics, crashed, recovery, **counted_by(restart_metrics))
    reread = consumed(restart_metrics)
    # Resumed from a snapshot, not replayed: the restart reads at least what the killed flow
    # had not read, and not the first half, which the snapshots taken since cover.
    assert total - at_kill <= reread <= total - len(first), (reread, total, at_kill)
    got = snapshot_of(crashed, events)

    assert got["tokens"] == want["tokens"]  # every token once (duplicates dropped on read)
    assert got["users"] == want["users"]
    assert got["items"] == want["items"]
    assert got["vocab"] == want["vocab"]

    # Dead letters carry their reasons (at least once: the restart may repeat some).
    dlq = [json.loads(r.value) for r in read_all(topics, topics.dead_letter_topic)]
    assert {d["reason"] for d in dlq} == {"invalid_event", "invalid_device", "duplicate"}


def test_redis_killed_mid_stream_the_flow_waits_and_goes_on_when_it_is_back(clean_run, kafka,
                                                                           tmp_path):
    """Redis (append-only, fsync always) is SIGKILLed while the flow writes to it and started
    again once the flow retries: the same flow process waits, then reads on to the end, and
    the rows equal those of a run on SQLite that never lost its store."""
    from infra.redis_server import RedisServer

    _, events, world, want = clean_run
    topics = fresh_topics(kafka)
    _, _, first, rest = world_and_stream()
    total = len(first) + len(rest)
    produce(topics, first)
    data = tmp_path / "outage"
    recovery = prepare(data, world)
    counts = data / "metrics"
    redis = RedisServer(tmp_path / "redis", persist=True).start()
    store = {"MARQUEE_ONLINE_STORE": "redis", "MARQUEE_REDIS_URL": redis.url}
    (proc,) = launch.start(Launch(recovery_dir=recovery, snapshot_s=1),
                           flow_env(topics, data, MARQUEE_FLOW_BATCH_SIZE="20",
                                    MARQUEE_FLOW_TAIL="true", **store, **counted_by(counts)),
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: consumed(counts) >= len(first) // 2, "a quarter of the stream",
                   proc)
        redis.kill()
        produce(topics, rest)
        # redis-py retries a few seconds by itself (10 tries, up to 1 s apart) before the
        # flow sees the error and retries in turn.
        wait_until(lambda: consumed(counts, "marquee_online_store_retries_total") >= 2,
                   "the flow's retries of a write", proc, timeout=60)
        assert proc.poll() is None, "the flow exited while Redis was away"
        assert consumed(counts) < total, "the flow read the whole topic without its store"
        redis.start()
        wait_until(lambda: consumed(counts) >= total, "the end of the topic", proc)
        # Let the last rows reach Redis; the tailing flow never ends by itself.
        time.sleep(1.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    try:
        # A finishing run closes the still-open tokens, as the reference run did at its end.
        run_flow(topics, data, recovery, **store)
        got = snapshot_of(data, events, online="redis", redis_url=redis.url)
    finally:
        redis.stop()
    assert got["tokens"] == want["tokens"]
    assert got["users"] == want["users"]
    assert got["items"] == want["items"]


def test_dead_letters_name_their_source_partition_offset_and_problems(clean_run):
    topics, _, _, _ = clean_run
    _, _, first, _ = world_and_stream()
    broken, bad_device, duplicate = first[-3:]
    where: dict[bytes, list[tuple[int, int]]] = {}
    for r in read_all(topics, topics.events_topic):
        where.setdefault(r.value, []).append((r.partition, r.offset))
    letters = [json.loads(r.value) for r in read_all(topics, topics.dead_letter_topic)]
    dlq = {(d["partition"], d["offset"]): d for d in letters}
    assert len(dlq) == len(letters)  # without a crash, one letter per refused message

    def letter(raw: bytes, at: tuple[int, int]) -> dict:
        assert at in dlq, f"no dead letter for {raw[:40]!r} at partition/offset {at}"
        assert dlq[at]["raw"].encode() == raw
        return dlq[at]

    (at,) = where[broken]
    got = letter(broken, at)
    assert got["reason"] == "invalid_event"
    assert len(got["problems"]) == 1 and got["problems"][0].startswith("event: not JSON")
    (at,) = where[bad_device]
    got = letter(bad_device, at)
    assert got["reason"] == "invalid_device"
    assert len(got["problems"]) == 1 and got["problems"][0].startswith("device: ")
    # The copy is refused, not the original: same key, same partition, the later offset.
    original, copy = sorted(where[duplicate])
    assert original[0] == copy[0]
    assert letter(duplicate, copy)["reason"] == "duplicate" and original not in dlq


def test_two_worker_processes_give_the_same_results_as_one(clean_run, tmp_path):
    kafka_topics, events, world, b = clean_run
    two = tmp_path / "two"
    run_flow(kafka_topics, two, prepare(two, world), processes=2)
    a = snapshot_of(two, events)
    diff = {k: (a["items"][k], b["items"][k]) for k in a["items"] if a["items"][k] != b["items"][k]}
    assert a == b, list(diff.items())[:3]


def test_a_message_that_crashes_the_flow_ends_as_one_poison_dead_letter(clean_run, kafka,
                                                                        tmp_path):
    _, events, world, want = clean_run
    # The stream of the clean run plus two events the fault drill fails on: the tokenize step
    # raises on one and SIGKILLs its own process on the other (a bug, then a segfault).
    _, _, first, rest = world_and_stream()
    raises = {**events[400], "event_id": "drill-raise"}
    kills = {**events[1200], "event_id": "drill-kill"}
    faulty = [json.dumps(raises).encode(), json.dumps(kills).encode()]
    topics = fresh_topics(kafka)
    produce(topics, first[:700] + faulty[:1] + first[700:1300] + faulty[1:] + first[1300:]
            + rest)
    data = tmp_path / "drill"
    recovery = prepare(data, world)
    env = flow_env(topics, data, MARQUEE_FLOW_FAULT="drill-raise:raise,drill-kill:kill")

    # Restarted on the same recovery directory as a supervisor would, until it ends.
    codes: list[int] = []
    while not codes or codes[-1] != 0:
        assert len(codes) < 6, f"still crashing after {len(codes)} starts: {codes}"
        with (data / "flow.err").open("wb") as err:
            codes.append(launch.run(Launch(recovery_dir=recovery, snapshot_s=1), env,
                                    timeout=120, cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=err))
    # Each faulty message crashes it at most twice: in a batch (unless the other one's crash
    # made its batch suspect already), then alone; from then on it is known.
    assert codes[-1] == 0 and 3 <= len(codes) - 1 <= 4, codes
    assert -signal.SIGKILL in codes and 1 in codes, codes

    letters = [json.loads(r.value) for r in read_all(topics, topics.dead_letter_topic)]
    poison = {(d["partition"], d["offset"]): d for d in letters if d["reason"] == "poison"}
    by_id = {json.loads(d["raw"])["event_id"]: d for d in poison.values()}
    assert len(poison) == 2 and set(by_id) == {"drill-raise", "drill-kill"}
    assert json.loads(by_id["drill-raise"]["raw"]) == raises
    raised, advice = by_id["drill-raise"]["problems"]
    assert raised.startswith("step tokenize: RuntimeError: fault drill: event drill-raise")
    assert "crashed the flow 2 times" in advice
    killed, advice = by_id["drill-kill"]["problems"]
    assert killed.startswith("step tokenize: no exception: the process died")
    assert "crashed the flow 2 times" in advice
    assert {d["reason"] for d in letters} == {"invalid_event", "invalid_device", "duplicate",
                                             "poison"}

    # Every other event went through once: the same results as the run without them.
    got = snapshot_of(data, events)
    assert got["tokens"] == want["tokens"]
    assert got["users"] == want["users"]
    assert got["items"] == want["items"]
    assert got["vocab"] == want["vocab"]
