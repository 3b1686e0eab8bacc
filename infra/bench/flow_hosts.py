"""The flow on one host and on two (network-namespace hosts, ``infra.netns``), each beside
the do-nothing ``KafkaSource`` floor on the same hosts: ``marquee bench cluster --flow``.

Hosts: ``broker`` (the embedded broker on its own address), ``client`` (produces the
events, then an end marker per partition), ``flow-a`` and ``flow-b``. Each flow process is a
benchmark child (``infra.bench.stream_child``) that enters its host's namespace before it
builds its flow; two of them form one Bytewax cluster over the hosts' addresses, as
``marquee flow --process-id N --addresses ...`` does. All hosts share this machine's cores:
the second host adds a network hop and no CPU, so the ratio says what a second host costs,
not what it gains (docs/capacity.md).
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from infra.bench.stream_child import Job, run_jobs
from infra.netns import TestBed

HOSTS = ["broker", "client", "flow-a", "flow-b"]
BYTEWAX_PORT = 2101


def run_flow_hosts(n_events: int = 200_000, users: int = 20_000, batch_size: int = 5000,
                   flush_s: float = 0.1) -> dict[str, Any]:
    """events/s and CPU per event of the floor and the flow (Feast SQLite) on 1 and 2 hosts."""
    from infra.bench.stream import generate
    from infra.bench.stream_flows import floor_flow, measured_flow
    from infra.bench.stream_sources import end_markers
    from infra.broker import EmbeddedBroker
    from infra.synthetic import SyntheticWorld, WorldConfig
    from streams.config import KafkaSettings
    from streams.produce import produce_events
    from streams.topics import create_topics

    events = generate(n_events, users)
    report: dict[str, Any] = {"events": len(events), "users": users}
    with TestBed(HOSTS) as bed, tempfile.TemporaryDirectory(prefix="mqflow-") as tmp:
        root = Path(tmp)
        with bed.inside("broker"):
            broker = EmbeddedBroker(host=bed.address("broker")).start()
        try:
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
            ns = {host: bed.namespace(host) for host in HOSTS}
            world = SyntheticWorld(WorldConfig(n_users=users))
            with bed.inside("client"):
                create_topics(kafka, {kafka.dead_letter_topic: 1})
                topic = f"bench-{uuid.uuid4().hex[:8]}"
                create_topics(kafka, {topic: kafka.events_partitions})
                sent = produce_events(events, kafka, topic=topic, progress=False)
                if sent.undelivered:
                    raise RuntimeError(f"bench cluster --flow: {sent.summary()}")
                end_markers(kafka, topic, kafka.events_partitions)
            for hosts in (["flow-a"], ["flow-a", "flow-b"]):
                name = f"{len(hosts)} host{'s' if len(hosts) > 1 else ''}"
                addresses = (tuple(f"{bed.address(h)}:{BYTEWAX_PORT}" for h in hosts)
                             if len(hosts) > 1 else ())
                data = root / name.replace(" ", "-")
                world.write_catalogue(data / "catalogue.jsonl")
                phases = {}
                for kind, build, kwargs in (
                        ("floor", floor_flow, {"kafka": kafka, "topic": topic,
                                               "batch_size": batch_size}),
                        ("flow", measured_flow, {"kafka": kafka, "topic": topic, "data": data,
                                                 "online": "sqlite", "batch_size": batch_size,
                                                 "flush_s": flush_s})):
                    print(f"{name}: {kind}", file=sys.stderr, flush=True)
                    jobs = [Job(f"{kind} {h}", build, kwargs, addresses, i, ns[h])
                            for i, h in enumerate(hosts)]
                    phases[kind] = _figures(run_jobs(jobs).runs, len(events))
                report[name] = phases
        finally:
            with bed.inside("broker"):
                broker.stop()
    one, two = report["1 host"], report["2 hosts"]
    report["flow_2_vs_1"] = two["flow"]["events_per_s"] / one["flow"]["events_per_s"]
    report["floor_2_vs_1"] = two["floor"]["events_per_s"] / one["floor"]["events_per_s"]
    return report


def _figures(runs: list[Any], n: int) -> dict[str, float]:
    wall = max(r.wall_s for r in runs)
    return {"events_per_s": n / wall, "cpu_us_per_event": sum(r.cpu_s for r in runs) / n * 1e6,
            "wall_s": wall}


def print_flow_report(report: dict[str, Any]) -> None:
    """One row per topology: the flow beside its floor."""
    print(f"flow (Feast SQLite) over {report['events']:,} events, {report['users']:,} users")
    print(f"{'topology':<9} {'flow ev/s':>10} {'CPU us/ev':>9} | {'floor ev/s':>10} "
          f"{'CPU us/ev':>9} | flow/floor")
    for name in ("1 host", "2 hosts"):
        f, fl = report[name]["flow"], report[name]["floor"]
        print(f"{name:<9} {f['events_per_s']:>10,.0f} {f['cpu_us_per_event']:>9.1f} | "
              f"{fl['events_per_s']:>10,.0f} {fl['cpu_us_per_event']:>9.1f} | "
              f"{f['events_per_s'] / fl['events_per_s']:.2f}")
    print(f"2 hosts / 1 host: flow {report['flow_2_vs_1']:.2f}x, floor "
          f"{report['floor_2_vs_1']:.2f}x (both hosts on this machine's cores)")
