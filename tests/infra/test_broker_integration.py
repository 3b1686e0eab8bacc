"""Against the real embedded broker: produce, read back, cross-check with kcat, enforce schema."""

import json
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Producer

from infra.broker import SCHEMA_DIR, EmbeddedBroker
from infra.cli import main
from infra.synthetic import SyntheticWorld, WorldConfig
from streams.config import KafkaSettings
from streams.consume import read_all
from streams.contract.files import read_sasrec
from streams.launch import free_port
from streams.produce import produce_events
from streams.topics import create_topics

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]


def test_n_produced_events_are_read_back_all_in_per_user_order(kafka, topic):
    n = 5000
    events = list(SyntheticWorld(WorldConfig(seed=11, n_users=200)).events(limit=n))
    report = produce_events(events, kafka, topic=topic, progress=False)
    assert report.delivered == n and report.undelivered == 0

    records = read_all(kafka, topic, expected=n)
    assert len(records) == n
    partition_of = {}
    per_user = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        value = json.loads(record.value)
        assert record.key == value["user_id"].encode()
        assert partition_of.setdefault(value["user_id"], record.partition) == record.partition
        per_user[value["user_id"]].append(value["event_id"])
    expected = defaultdict(list)
    for e in events:
        expected[e["user_id"]].append(e["event_id"])
    assert per_user == expected


@pytest.mark.skipif(shutil.which("kcat") is None, reason="Debian kcat not installed")
def test_kcat_reads_back_what_marquee_produce_delivered(kafka, topic, monkeypatch, capsys):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    status = main(["produce", "--synthetic", "--limit", "3000", "--topic", topic,
                   "--users", "100", "--no-progress"])
    assert status == 0
    assert "delivered 3,000 of 3,000 events" in capsys.readouterr().out
    out = subprocess.run(
        [str(ROOT / "infra" / "kcat"), "-b", kafka.bootstrap_servers, "-t", topic, "-C", "-e",
         "-q", "-f", "%k\n"], capture_output=True, text=True, timeout=60, check=True).stdout
    keys = out.split()
    assert len(keys) == 3000 and all(k.startswith("u") for k in keys)


def test_undelivered_events_are_counted_and_fail_the_command(monkeypatch, capsys):
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    events = list(SyntheticWorld(WorldConfig(n_users=5)).events(limit=10))
    report = produce_events(events, KafkaSettings(bootstrap_servers=dead), progress=False,
                            delivery_timeout=1.0)
    assert report.attempted == 10 and report.delivered == 0 and report.undelivered == 10
    assert "10 NOT delivered" in report.summary()
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", dead)
    monkeypatch.setattr("streams.produce.DEFAULT_DELIVERY_TIMEOUT", 1.0)
    assert main(["produce", "--synthetic", "--limit", "3", "--no-progress"]) == 1
    assert "NOT delivered" in capsys.readouterr().out


def test_sasrec_file_is_produced_in_line_order(kafka, topic, tmp_path):
    path = tmp_path / "seq.txt"
    path.write_text("".join(f"{u} {i}\n" for u in (1, 2) for i in range(50)))
    report = produce_events(read_sasrec(path), kafka, topic=topic, progress=False)
    assert report.delivered == 100
    by_user = defaultdict(list)
    for r in sorted(read_all(kafka, topic, expected=100), key=lambda r: r.offset):
        v = json.loads(r.value)
        by_user[v["user_id"]].append(int(v["item_id"]))
    assert by_user == {"1": list(range(50)), "2": list(range(50))}


def test_broker_enforces_the_schema_when_asked():
    with EmbeddedBroker(schema_dir=SCHEMA_DIR) as broker:
        settings = broker.settings()
        create_topics(settings, {settings.events_topic: 1})
        good = {"event_id": "a", "user_id": "u1", "item_id": "m1", "action": "play",
                "ts": "2026-01-01T00:00:00Z", "device": "tv", "surface": "home"}
        results = {}
        producer = Producer(settings.client_config(acks="all", **{"linger.ms": 0}))
        for name, event in [("good", good), ("bad", {**good, "action": "dance"}),
                            ("missing_ts", {k: v for k, v in good.items() if k != "ts"})]:
            producer.produce(settings.events_topic, key=b"u1", value=json.dumps(event).encode(),
                             on_delivery=lambda err, _m, name=name: results.update({name: err}))
            producer.flush(10)
        assert results["good"] is None
        assert results["bad"] is not None and "INVALID_RECORD" in str(results["bad"])
        assert results["missing_ts"] is not None
