"""Running the flow as ``marquee flow`` runs it, and reading what a run left: shared by the
flow's integration tests and the multi-host cluster tests, which compare their results with a
single-process run of the same stream.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from feature_repo.store import open_store, read_items, read_users
from infra.synthetic import SyntheticWorld, WorldConfig
from streams import launch
from streams.config import KafkaSettings
from streams.contract.tokens import Vocab
from streams.launch import Launch
from streams.produce import produce_events
from streams.token_log import read_tokens

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


def snapshot_of(data: Path, events: list[dict], online: str = "sqlite",
                redis_url: str | None = None) -> dict:
    """Feast's rows of every user and item of ``events``, the token log and the vocabulary
    of the run whose data folder is ``data`` (its online store: SQLite there, or Redis)."""
    store = open_store(online=online, data_dir=data, redis_url=redis_url)
    users = sorted({e["user_id"] for e in events})
    items = sorted({e["item_id"] for e in events if e["item_id"]})
    tokens = read_tokens(data / "tokens")
    return {"users": read_users(store, users), "items": read_items(store, items),
            "tokens": tokens.to_dict("records"),
            "vocab": Vocab.load(data / "vocab.json").tables}  # snapshot and journal


def consumed(folder: Path, name: str = "marquee_events_consumed_total") -> int:
    """``marquee_events_consumed_total`` (or counter ``name``) of the flow process that wrote
    its samples to ``folder`` (``PROMETHEUS_MULTIPROC_DIR``): read from the files, which
    outlive the process, so even a killed or finished flow tells how many messages it read."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    return int(registry.get_sample_value(name) or 0)


def counted_by(folder: Path) -> dict[str, str]:
    """The environment that makes a flow process keep its metrics in ``folder``."""
    folder.mkdir(parents=True)
    return {"PROMETHEUS_MULTIPROC_DIR": str(folder)}


def wait_until(check: Callable[[], bool], what: str, proc: subprocess.Popen,
               timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"the tailing flow died before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
