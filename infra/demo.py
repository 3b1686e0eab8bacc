"""The main job on embedded defaults: what the README's first command runs.

Today it starts the broker, streams synthetic events into it and reads them back; later
stages (tokenizer flow, features, model, service) are added here as they land.
"""

from __future__ import annotations

from pathlib import Path

from infra.broker import broker_for
from streams.consume import read_all
from streams.produce import produce_events
from streams.synthetic import SyntheticWorld, WorldConfig

VAR = Path("var")


def run_demo(events: int = 20_000, rate: float | None = None) -> int:
    """Broker → synthetic producer → read back; prints each step. Returns an exit status."""
    VAR.mkdir(exist_ok=True)
    print("[1/3] starting the embedded broker (or using KAFKA_BOOTSTRAP_SERVERS)", flush=True)
    with broker_for(log_path=VAR / "broker.log") as kafka:
        print(f"      broker at {kafka.bootstrap_servers}; topics {kafka.events_topic}, "
              f"{kafka.dead_letter_topic}", flush=True)
        world = SyntheticWorld(WorldConfig())
        catalogue = world.write_catalogue(VAR / "catalogue.jsonl")
        print(f"[2/3] producing {events:,} synthetic events ({len(world.catalogue)} titles, "
              f"catalogue in {catalogue})", flush=True)
        report = produce_events(world.events(events), kafka, rate=rate, total=events)
        print(f"      {report.summary()}", flush=True)
        print(f"[3/3] reading {kafka.events_topic} back", flush=True)
        records = read_all(kafka, kafka.events_topic)
        users = len({r.key for r in records})
        print(f"      read {len(records):,} events of {users:,} users", flush=True)
        return 0 if len(records) >= report.delivered and not report.undelivered else 1
