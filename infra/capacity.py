"""How many hosts of each kind a load needs, from the per-unit figures the benchmarks measure.

Each figure is one unit's measured capacity or cost (a flow worker, a Ray node's proxy, a
ranking replica, a Redis shard, a broker) with the command that measures it. The defaults are
the figures recorded in docs/results.md; a benchmark's JSON in ``var/bench`` (written by the
command named beside each figure) replaces them when present, and ``--figures FILE`` (JSON)
replaces any of them by name. Every unit runs at ``utilization`` of its measured capacity at
most, the headroom a fault (a lost host, a rebalance, a replay after a crash) needs.

The plan is arithmetic, not a simulation: it says which part runs out first and by how much,
and where the measured 1-host and 2-host figures disagree with it, docs/capacity.md says why.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Figure:
    """One measured figure, its unit, and the command that measures it."""

    value: float
    unit: str
    source: str


def default_figures() -> dict[str, Figure]:
    """The figures of docs/results.md (2-core machine, shared with other work)."""
    return {
        "flow_events_per_s": Figure(
            7_038, "events/s into Feast per flow worker (one core; 1M events, 100k users)",
            "marquee bench stream"),
        "broker_events_per_s": Figure(
            84_100, "acknowledged events/s per broker (Tansu; one producing client)",
            "marquee bench broker"),
        "redis_us_per_row": Figure(
            7.0, "redis-server CPU us per user row written (200-token rows, no append-only "
            "file)", "marquee bench redis"),
        "redis_us_per_read": Figure(
            38.0, "redis-server CPU us per user-row read (one ranking)", "marquee bench redis"),
        "redis_bytes_per_user": Figure(
            2_815, "Redis memory per user row at its largest (200 tokens)",
            "marquee bench redis"),
        "proxy_requests_per_s": Figure(
            205, "requests/s through one Ray Serve proxy to a no-op deployment (32 clients; "
            "proxy, no-op replica and load generator on 2 cores)", "marquee bench serve"),
        "rankings_per_s": Figure(
            133, "rankings/s of one replica behind one proxy (32 clients; 2 cores shared "
            "with proxy and load generator)", "marquee bench serve"),
        "cores_measured": Figure(2, "cores the serve and stream figures shared", "env"),
    }


def _from_bench(folder: Path) -> dict[str, Figure]:
    """The figures the benchmarks' JSON reports under ``folder`` hold."""
    found: dict[str, Figure] = {}

    def load(name: str) -> dict[str, Any] | None:
        path = folder / name
        return json.loads(path.read_text()) if path.exists() else None

    if (stream := load("stream.json")) and stream.get("flow_events_per_s_per_worker"):
        found["flow_events_per_s"] = Figure(
            stream["flow_events_per_s_per_worker"],
            f"events/s into Feast per flow worker ({stream['events']:,} events, "
            f"{stream['users']:,} users, {stream['online_store']})",
            str(folder / "stream.json"))
    if (broker := load("broker.json")) and "memory" in broker:
        found["broker_events_per_s"] = Figure(
            broker["memory"]["bulk_acked_eps"], "acknowledged events/s per broker (Tansu)",
            str(folder / "broker.json"))
    if redis := load("redis.json"):
        floor, tokens = redis["floor"], redis["spec"]["tokens"]
        found["redis_us_per_row"] = Figure(
            floor["server_us_per_row"],
            f"redis-server CPU us per user row written ({tokens}-token rows)",
            str(folder / "redis.json"))
        found["redis_us_per_read"] = Figure(
            floor["server_us_per_read"], "redis-server CPU us per user-row read",
            str(folder / "redis.json"))
        found["redis_bytes_per_user"] = Figure(
            redis["feast"]["bytes_per_row"], f"Redis memory per user row ({tokens} tokens)",
            str(folder / "redis.json"))
    if (serve := load("serve.json")) and "noop" in serve:
        found["proxy_requests_per_s"] = Figure(
            max(run["rps"] for run in serve["noop"]["closed"]),
            "requests/s through one Ray Serve proxy to a no-op deployment",
            str(folder / "serve.json"))
        found["rankings_per_s"] = Figure(
            max(run["rps"] for run in serve["rank"]["closed"]),
            "rankings/s of one replica behind one proxy", str(folder / "serve.json"))
    return found


def load_figures(bench_dir: Path | None = Path("var/bench"),
                 overrides: Path | None = None) -> dict[str, Figure]:
    """Defaults, replaced by the benchmarks' reports found in ``bench_dir``, replaced by the
    values named in ``overrides`` (a JSON object of name -> number).
    """
    figures = default_figures()
    if bench_dir is not None and bench_dir.is_dir():
        figures.update(_from_bench(bench_dir))
    if overrides is not None:
        given = json.loads(overrides.read_text())
        unknown = sorted(set(given) - set(figures))
        if unknown:
            raise ValueError(f"{overrides}: unknown figure(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(figures))}")
        for name, value in given.items():
            figures[name] = replace(figures[name], value=float(value), source=str(overrides))
    return figures


@dataclass(frozen=True)
class Load:
    """What the deployment must carry, and the hosts it runs on."""

    events_per_s: float = 1_000_000
    rankings_per_s: float = 50_000
    users: int = 100_000_000
    rows_per_event: float = 1.0  # a user row rewritten per event at most (flushes coalesce)
    cores_per_host: int = 16
    redis_memory_gb: float = 64.0  # per Redis host, of which 75% for rows
    utilization: float = 0.7

    def __post_init__(self) -> None:
        if self.events_per_s < 0 or self.rankings_per_s < 0 or self.users < 0:
            raise ValueError("events/s, rankings/s and users must be >= 0")
        if not 0 < self.utilization <= 1:
            raise ValueError("--utilization is a share of measured capacity: give (0, 1]")
        if self.cores_per_host < 1 or self.redis_memory_gb <= 0:
            raise ValueError("--cores-per-host must be >= 1 and --redis-memory-gb > 0")


@dataclass
class Part:
    """One kind of unit: how many the load needs and what bounds it."""

    name: str
    units: int
    hosts: int
    bound: str
    detail: str = ""


@dataclass
class Plan:
    """The parts one load needs."""

    load: Load
    parts: list[Part] = field(default_factory=list)

    @property
    def hosts(self) -> int:
        """Hosts of every part together."""
        return sum(p.hosts for p in self.parts)

    def first_to_saturate(self) -> Part | None:
        """The part that needs the most hosts (the one the load outgrows first), or None
        while every part fits one host.
        """
        top = max(self.parts, key=lambda p: (p.hosts, p.units / max(p.hosts, 1)))
        return top if top.hosts > 1 else None


def _ceil(x: float) -> int:
    return max(1, math.ceil(x - 1e-9)) if x > 0 else 0


def plan(load: Load, figures: dict[str, Figure]) -> Plan:
    """Units and hosts of each part for ``load``."""
    f = {name: fig.value for name, fig in figures.items()}
    u, cores = load.utilization, load.cores_per_host
    out = Plan(load)

    workers = _ceil(load.events_per_s / (f["flow_events_per_s"] * u))
    out.parts.append(Part(
        "flow workers", workers, _ceil(workers / cores), "CPU (the per-event Python)",
        f"{workers} partitions at least (one worker reads a partition); "
        f"{f['flow_events_per_s'] * u:,.0f} events/s each"))

    brokers = _ceil(load.events_per_s / (f["broker_events_per_s"] * u))
    out.parts.append(Part("brokers", brokers, brokers, "produce throughput per broker",
                          f"{f['broker_events_per_s'] * u:,.0f} events/s each"))

    redis_cpu_s = (load.events_per_s * load.rows_per_event * f["redis_us_per_row"]
                   + load.rankings_per_s * f["redis_us_per_read"]) / 1e6
    by_cpu = _ceil(redis_cpu_s / u)  # Redis runs commands on one thread: a shard is a core
    rows_bytes = load.users * f["redis_bytes_per_user"]
    host_bytes = load.redis_memory_gb * 0.75e9  # the rest for Redis itself and forks
    by_memory = _ceil(rows_bytes / host_bytes)
    shards = max(by_cpu, by_memory)
    # A host takes as many shards as its cores and its memory hold.
    per_host = max(1, min(cores, math.floor(host_bytes / max(rows_bytes / shards, 1))))
    out.parts.append(Part(
        "Redis shards", shards, _ceil(shards / per_host),
        "memory" if by_memory >= by_cpu else "CPU (one thread per shard)",
        f"{by_cpu} by CPU ({redis_cpu_s:.2f} cores of commands), {by_memory} by memory "
        f"({rows_bytes / 1e9:,.0f} GB of rows)"))

    # The no-op floor is what one proxy passes when it has at most the measured machine (and
    # a Python proxy uses one core at most); a ranking adds its replica's work on top of it.
    per_proxy = f["proxy_requests_per_s"] * u
    replica_cost = max(f["cores_measured"] / f["rankings_per_s"]
                       - f["cores_measured"] / f["proxy_requests_per_s"], 0.0)
    replicas = _ceil(load.rankings_per_s * replica_cost / u)
    nodes_by_proxy = _ceil(load.rankings_per_s / per_proxy)
    nodes_by_cores = _ceil((replicas + nodes_by_proxy) / cores)  # a core for each proxy
    nodes = max(nodes_by_proxy, nodes_by_cores)
    out.parts.append(Part(
        "Ray nodes", nodes, nodes,
        "the proxy (one per node, one event loop)" if nodes_by_proxy >= nodes_by_cores
        else "replica CPU",
        f"{replicas} ranking replicas ({replica_cost * 1e3:.1f} ms of a core per ranking); "
        f"{per_proxy:,.0f} requests/s per node's proxy"))
    return out


def scales(figures: dict[str, Figure], base: Load) -> list[Plan]:
    """The same ratios of events, rankings and users at 1k .. 1M events/s."""
    ratio_r = base.rankings_per_s / base.events_per_s if base.events_per_s else 0.0
    ratio_u = base.users / base.events_per_s if base.events_per_s else 0.0
    return [plan(replace(base, events_per_s=e, rankings_per_s=e * ratio_r,
                         users=int(e * ratio_u)), figures)
            for e in (1_000, 10_000, 100_000, 1_000_000)]


def render(main: Plan, ladder: list[Plan], figures: dict[str, Figure]) -> str:
    """The plan as markdown: the figures used, the target's parts, the ladder of scales."""
    load = main.load
    lines = ["| figure | value | unit | measured by |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {fig.value:,.1f} | {fig.unit} | `{fig.source}` |"
              for name, fig in figures.items()]
    lines += ["", f"**{load.events_per_s:,.0f} events/s, {load.rankings_per_s:,.0f} rankings/s, "
              f"{load.users:,} users** ({load.cores_per_host}-core hosts, Redis hosts with "
              f"{load.redis_memory_gb:g} GB, every unit at {load.utilization:.0%} of its "
              "measured capacity):", "",
              "| part | units | hosts | bound by | detail |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {p.name} | {p.units:,} | {p.hosts:,} | {p.bound} | {p.detail} |"
              for p in main.parts]
    lines += ["", f"{main.hosts:,} hosts; the part that needs the most: "
              f"{_most(main)}.", "",
              "| events/s | rankings/s | users | " + " | ".join(p.name for p in main.parts)
              + " | needs the most hosts |",
              "| --- | --- | --- | " + " | ".join("---" for _ in main.parts) + " | --- |"]
    for p in ladder:
        lines.append(f"| {p.load.events_per_s:,.0f} | {p.load.rankings_per_s:,.0f} | "
                     f"{p.load.users:,} | "
                     + " | ".join(f"{x.units:,} on {x.hosts:,}" for x in p.parts)
                     + f" | {_most(p)} |")
    return "\n".join(lines) + "\n"


def _most(p: Plan) -> str:
    top = p.first_to_saturate()
    return f"{top.name}, bound by {top.bound}" if top else "none: every part fits one host"
