"""The flow commits each snapshot's offsets to its consumer group, so Kafka's lag tools see its
progress, and still starts from its snapshot: a real broker, a real ``marquee flow`` process.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from feature_repo.store import open_store, read_users
from infra.synthetic import SyntheticWorld, WorldConfig
from streams import launch
from streams.launch import Launch
from streams.produce import produce_events

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def group_offsets(kafka, group: str, topic: str, partitions: int) -> dict[int, int]:
    admin = AdminClient(kafka.client_config())
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p)
                                                   for p in range(partitions)])
    answer = admin.list_consumer_group_offsets([request])[group].result(30)
    return {tp.partition: tp.offset for tp in answer.topic_partitions}


def commit(kafka, group: str, offsets: dict[int, int], topic: str) -> None:
    from confluent_kafka import Consumer

    consumer = Consumer(kafka.client_config(**{"group.id": group}))
    consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()],
                    asynchronous=False)
    consumer.close()


def test_flow_commits_its_snapshot_offsets_and_starts_from_its_snapshot(kafka_topics, tmp_path):
    world = SyntheticWorld(WorldConfig(n_users=30, days=1))
    world.write_catalogue(tmp_path / "catalogue.jsonl")
    events = list(world.events(limit=1200))
    report = produce_events([json.dumps(e).encode() for e in events], kafka_topics,
                            progress=False, track=True)
    assert report.delivered == len(events)
    ends = {p: max(o for q, o, _ in report.acked if q == p) + 1
            for p in Counter(q for q, _, _ in report.acked)}
    assert sum(ends.values()) == len(events) and len(ends) == 4
    topic = kafka_topics.events_topic
    group = f"test-group-{uuid.uuid4().hex[:8]}"
    # Offsets committed past the end: a flow that started from them would read nothing.
    commit(kafka_topics, group, {p: end + 1000 for p, end in ends.items()}, topic)
    assert group_offsets(kafka_topics, group, topic, 4) == {p: e + 1000 for p, e in ends.items()}

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_topics.bootstrap_servers,
           "MARQUEE_EVENTS_TOPIC": topic,
           "MARQUEE_DEAD_LETTER_TOPIC": kafka_topics.dead_letter_topic,
           "MARQUEE_CONSUMER_GROUP": group, "MARQUEE_FLOW_DATA_DIR": str(tmp_path),
           "MARQUEE_FLOW_TAIL": "false", "MARQUEE_ONLINE_STORE": "sqlite",
           "PYTHONPATH": str(ROOT)}
    err = tmp_path / "flow.err"
    with err.open("wb") as log:
        # One epoch (30 s) outlasts the run: only the snapshot at the end commits.
        code = launch.run(Launch(recovery_dir=tmp_path / "recovery", snapshot_s=30), env,
                          timeout=120, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    assert code == 0, err.read_text()[-3000:]
    users = read_users(open_store(online="sqlite", data_dir=tmp_path),
                       sorted({e["user_id"] for e in events}))
    assert all(row["n_tokens"] > 0 for row in users.values()), "it did not read from offset 0"

    assert group_offsets(kafka_topics, group, topic, 4) == ends


def test_commits_to_a_closed_port_neither_block_the_source_nor_stop_it(caplog):
    import time

    from streams import metrics
    from streams.group_offsets import GroupOffsets
    from streams.kafka_batches import KafkaBatchSource
    from streams.launch import free_port

    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    part = KafkaBatchSource([dead], ["t"], group_id="g").build_part("s", "0-t", 5)
    start = time.perf_counter()
    assert part.snapshot() == 5 and part.next_batch() == []
    assert time.perf_counter() - start < 0.5
    part.close()
    assert time.perf_counter() - start < 4  # close waits at most 2 s for the commit

    failed = metrics.OFFSET_COMMITS.labels("failed")
    before = failed._value.get()
    offsets = GroupOffsets({"bootstrap.servers": dead}, "g", timeout_s=1.0)
    offsets.commit("t", 0, 7)
    offsets.commit("t", 0, 8)  # one in flight per partition: skipped
    offsets.flush(5.0)
    assert failed._value.get() == before + 1
    assert "committing offset 7 of t[0] to consumer group 'g' failed" in caplog.text
