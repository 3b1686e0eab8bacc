"""``marquee flow`` with its online store out of reach stops at its start with a message that
names the store, the address and the fix (a real closed loopback port, a real flow process).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from infra.synthetic import SyntheticWorld, WorldConfig
from streams import launch
from streams.launch import Launch, free_port
from streams.produce import produce_events

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_flow_on_a_closed_redis_port_stops_at_start_naming_redis(kafka_topics, tmp_path):
    world = SyntheticWorld(WorldConfig(n_users=5, days=1))
    world.write_catalogue(tmp_path / "catalogue.jsonl")
    events = list(world.events(limit=50))
    assert produce_events(events, kafka_topics, progress=False).delivered == len(events)
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_topics.bootstrap_servers,
           "MARQUEE_EVENTS_TOPIC": kafka_topics.events_topic,
           "MARQUEE_DEAD_LETTER_TOPIC": kafka_topics.dead_letter_topic,
           "MARQUEE_FLOW_DATA_DIR": str(tmp_path), "MARQUEE_FLOW_TAIL": "false",
           "MARQUEE_ONLINE_STORE": "redis", "MARQUEE_REDIS_URL": url,
           "PYTHONPATH": str(ROOT)}
    err = tmp_path / "flow.err"
    with err.open("wb") as log:
        code = launch.run(Launch(), env, timeout=120, cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=log)
    text = err.read_text()
    assert code != 0
    # Named at the writer's opening (the preflight), not at a first write.
    assert f"Redis at {url} refused the connection (" in text, text[-3000:]
    assert "start redis-server there, or set MARQUEE_REDIS_URL" in text
    assert "while writing" not in text
