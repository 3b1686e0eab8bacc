"""``marquee bench produce``: producer throughput against the raw librdkafka floor, same run."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Producer

from infra.bench.charts import bar_chart
from infra.broker import broker_for
from infra.synthetic import SyntheticWorld, WorldConfig
from streams.config import KafkaSettings
from streams.consume import read_all
from streams.produce import PRODUCER_CONFIG, produce_events
from streams.topics import create_topics, delete_topics


def _raw_floor(settings: KafkaSettings, topic: str, payload: list[tuple[bytes, bytes]]) -> float:
    """Seconds for a bare produce loop over pre-serialized messages (no accounting, no bar)."""
    producer = Producer(settings.client_config(**PRODUCER_CONFIG))
    start = time.perf_counter()
    for key, value in payload:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)
    return time.perf_counter() - start


def run_bench(n: int = 200_000, out: Path = Path("var/bench/produce.json")) -> dict[str, float]:
    """Measure and print events/s for: generation alone, the raw floor, ``produce_events`` on
    pre-serialized events, and the end-to-end synthetic producer; returns the figures.
    """
    with broker_for() as kafka:
        world = SyntheticWorld(WorldConfig())
        start = time.perf_counter()
        events = list(world.events(n))
        gen_s = time.perf_counter() - start
        payload = [(e["user_id"].encode(), orjson.dumps(e)) for e in events]
        figures: dict[str, float] = {"events": n, "generate_eps": n / gen_s}
        for name, run in [
            ("raw_librdkafka_eps", lambda t: n / _raw_floor(kafka, t, payload)),
            ("produce_events_preserialized_eps",
             lambda t: produce_events([v for _, v in payload], kafka, topic=t,
                                      progress=False).rate),
            ("produce_synthetic_end_to_end_eps",
             lambda t: produce_events(SyntheticWorld(WorldConfig()).events(n), kafka, topic=t,
                                      progress=False).rate),
        ]:
            topic = f"bench-{uuid.uuid4().hex[:8]}"
            create_topics(kafka, {topic: kafka.events_partitions})
            figures[name] = run(topic)
            if name == "produce_synthetic_end_to_end_eps":
                figures["read_back"] = len(read_all(kafka, topic, expected=n, timeout=60))
            delete_topics(kafka, [topic])
    floor = figures["raw_librdkafka_eps"]
    figures["ratio_preserialized_vs_floor"] = figures["produce_events_preserialized_eps"] / floor
    figures["ratio_end_to_end_vs_floor"] = figures["produce_synthetic_end_to_end_eps"] / floor
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    bar_chart({k.removesuffix("_eps"): v for k, v in figures.items() if k.endswith("_eps")},
              f"Producer throughput ({n:,} events)", "events/s", out.with_suffix(".png"))
    for key, value in figures.items():
        print(f"{key:38s} {value:14,.2f}")
    print(f"(written to {out} and {out.with_suffix('.png')})")
    return figures
