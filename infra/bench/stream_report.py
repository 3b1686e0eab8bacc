"""The figures of ``marquee bench stream`` from what its phases measured: the JSON report and
the printed table. Plain functions of plain data, so the arithmetic is tested on its own.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from infra.bench.stream_child import EPOCH, Run
from infra.bench.stream_memory import growth_per

MB = 2**20
TARGETS = {"events_per_s_per_worker": 50_000, "flow_vs_floor": 0.7, "freshness_p50_s": 0.25,
           "freshness_p99_s": 1.0}
GROWTH_SLACK_S = 0.5  # freshness that grows more than this over a phase is a growing backlog


@dataclass
class Measured:
    """Everything the phases of one run measured."""

    events: int
    users: int
    online: str
    redis_url: str | None
    batch_size: int
    flush_s: float
    partitions: int
    generate_s: float
    produce_s: float
    floor: Run
    batch_floor: Run
    flow: Run
    fresh: Run
    fresh_floor: Run
    fresh_rate: float  # offered events/s
    fresh_produced_rate: float  # what the producer reached
    fresh_produced_at: float  # epoch seconds when the last freshness event was acknowledged
    growth: Run | None = None  # the flow over the first growth_users users only
    growth_users: int = 0
    growth_events: int = 0
    cluster: list[Run] = field(default_factory=list)
    cores: dict[str, dict[str, float]] = field(default_factory=dict)  # phase -> CpuWatch.stop
    history: list[dict[str, int]] = field(default_factory=list)
    hot_modules: str = ""  # streams.compiled.describe(): compiled or pure-Python tokenizer


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank); NaN for no values."""
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else float("nan")


def freshness_verdict(samples: list[float], offered: float, produced: float,
                      slack_s: float = GROWTH_SLACK_S) -> dict[str, Any]:
    """Whether the flow kept up with the offered rate, from the ages of its writes in write
    order: at a rate it sustains, an event's age does not depend on when it came; past its
    capacity a backlog builds and the last events wait longest. ``growth_s`` is the median age
    of the last tenth minus the first tenth; more than ``slack_s`` is over capacity, and then
    p99 measures the backlog, not freshness.
    """
    tenth = max(len(samples) // 10, 1)
    growth = (statistics.median(samples[-tenth:]) - statistics.median(samples[:tenth])
              if samples else float("nan"))
    kept_up = bool(samples) and growth <= slack_s
    reached = produced >= 0.95 * offered
    if not samples:
        text = "no events were written online"
    elif not kept_up:
        text = (f"OVER CAPACITY: the flow fell behind the {offered:,.0f} events/s offered "
                f"(events waited {growth:.1f} s longer at the end than at the start); its p50/p99 "
                "measure the backlog, not freshness")
    else:
        text = "kept up"
    if not reached:
        text += f"; the producer reached only {produced:,.0f} events/s (busy machine)"
    return {"kept_up": kept_up, "rate_reached": reached, "growth_s": growth, "verdict": text}


def _per_event(run: Run, n: int) -> dict[str, float]:
    return {"events_per_s": n / run.wall_s, "cpu_us_per_event": run.cpu_s / n * 1e6,
            "cores": run.cpu_s / run.wall_s}


def _memory(m: Measured) -> dict[str, Any]:
    state = m.flow.extra.get("state")
    out: dict[str, Any] = {
        "rss_start_mb": m.flow.rss_start / MB, "rss_end_mb": m.flow.rss_end / MB,
        "rss_peak_mb": m.flow.rss_peak / MB, "state": state, "history": m.history}
    if m.growth is not None:
        small_state = m.growth.extra.get("state") or {}
        out["growth"] = {
            "users_small": m.growth_users, "events_small": m.growth_events,
            "users_large": m.users, "rss_end_small_mb": m.growth.rss_end / MB,
            "rss_mb_per_100k_users": growth_per(m.growth_users, m.growth.rss_end, m.users,
                                                m.flow.rss_end) / MB,
            "state_mb_per_100k_users": growth_per(
                m.growth_users, small_state.get("bytes_total", 0), m.users,
                (state or {}).get("bytes_total", 0)) / MB,
            "events_per_s_small": m.growth_events / m.growth.wall_s}
    return out


def _scale_out(m: Measured, single: float) -> dict[str, Any] | None:
    if not m.cluster:
        return None
    wall = max(r.wall_s for r in m.cluster)
    rate = m.events / wall
    return {"processes": len(m.cluster), "partitions": m.partitions, "events_per_s": rate,
            "ratio_to_one": rate / single,
            "cpu_us_per_event": sum(r.cpu_s for r in m.cluster) / m.events * 1e6,
            "per_process": [{"wall_s": r.wall_s, "cpu_s": r.cpu_s, "cores": r.cpu_s / r.wall_s,
                             "rss_end_mb": r.rss_end / MB} for r in m.cluster],
            "machine": m.cores.get("scale_out", {})}


def build_report(m: Measured) -> dict[str, Any]:
    """The JSON report (the flat keys are the ones earlier reports had)."""
    n = m.events
    floor, bfloor, flow = (_per_event(r, n) for r in (m.floor, m.batch_floor, m.flow))
    samples = m.fresh.extra.get("samples", [])
    floor_samples = m.fresh_floor.extra.get("samples", [])
    writes = m.fresh.extra.get("writes", {})
    verdict = freshness_verdict(samples, m.fresh_rate, m.fresh_produced_rate)
    return {
        "events": n, "users": m.users, "online_store": m.online, "redis_url": m.redis_url,
        "workers": 1, "partitions": m.partitions, "hot_modules": m.hot_modules,
        "batch_size": m.batch_size,
        "flush_s": m.flush_s, "generate_s": m.generate_s, "produce_events_per_s": n / m.produce_s,
        "floor_events_per_s": floor["events_per_s"],
        "floor_cpu_us_per_event": floor["cpu_us_per_event"], "floor_cores": floor["cores"],
        "batch_floor_events_per_s": bfloor["events_per_s"],
        "batch_floor_cpu_us_per_event": bfloor["cpu_us_per_event"],
        "batch_floor_cores": bfloor["cores"],
        "flow_events_per_s_per_worker": flow["events_per_s"],
        "flow_cpu_us_per_event": flow["cpu_us_per_event"], "flow_cores": flow["cores"],
        "flow_vs_floor": m.floor.wall_s / m.flow.wall_s,
        "flow_vs_batch_floor": m.batch_floor.wall_s / m.flow.wall_s,
        "memory": _memory(m), "scale_out": _scale_out(m, flow["events_per_s"]),
        "freshness_rate_events_per_s": m.fresh_rate,
        "freshness_produced_events_per_s": m.fresh_produced_rate,
        "freshness_events": len(samples), "freshness_p50_s": pct(samples, 0.5),
        "freshness_p99_s": pct(samples, 0.99), "freshness_kept_up": verdict["kept_up"],
        "freshness_rate_reached": verdict["rate_reached"],
        "freshness_growth_s": verdict["growth_s"], "freshness_verdict": verdict["verdict"],
        "freshness_drain_s": m.fresh.ended_at - m.fresh_produced_at,
        "freshness_floor_p50_s": pct(floor_samples, 0.5),
        "freshness_floor_p99_s": pct(floor_samples, 0.99), "epoch_s": EPOCH.total_seconds(),
        "freshness_user_flushes": writes.get("flushes", 0.0),
        "freshness_user_rows": writes.get("rows", 0.0),
        "freshness_user_write_s": writes.get("seconds", 0.0),
        "cores_by_phase": m.cores, "targets": TARGETS,
    }


def _others(cores: dict[str, float], ours: float) -> str:
    """``machine busy X of N cores (broker Y, other work Z)`` for one phase."""
    import os

    if not cores:
        return ""
    named = {k: v for k, v in cores.items() if k != "machine"}
    others = max(cores["machine"] - ours - sum(named.values()), 0.0)
    parts = ", ".join(f"{k} {v:.2f}" for k, v in named.items())
    return (f"machine busy {cores['machine']:.2f} of {os.cpu_count()} cores"
            f" ({parts + ', ' if parts else ''}other work {others:.2f})")


def table(r: dict[str, Any]) -> list[str]:
    """The printed report: each measurement beside its floor from the same run."""
    by = r.get("cores_by_phase", {})
    row = "{:<44}{:>11}{:>14}{:>8}  {}"
    lines = [
        f"events: {r['events']:,} synthetic from {r['users']:,} users over {r['partitions']} "
        f"partitions, online store {r['online_store']} (generated in {r['generate_s']:.0f} s, "
        f"produced at {r['produce_events_per_s']:,.0f} events/s); hot modules "
        f"{r.get('hot_modules') or '?'}",
        row.format("", "events/s", "CPU us/event", "cores", "beside"),
        row.format("floor: Bytewax KafkaSource (read + drop)", f"{r['floor_events_per_s']:,.0f}",
                   f"{r['floor_cpu_us_per_event']:.1f}", f"{r['floor_cores']:.2f}",
                   _others(by.get("floor", {}), r["floor_cores"])),
        row.format("floor: batch source (read + drop)", f"{r['batch_floor_events_per_s']:,.0f}",
                   f"{r['batch_floor_cpu_us_per_event']:.1f}", f"{r['batch_floor_cores']:.2f}",
                   _others(by.get("batch_floor", {}), r["batch_floor_cores"])),
        row.format("flow into Feast, 1 process, 1 worker",
                   f"{r['flow_events_per_s_per_worker']:,.0f}",
                   f"{r['flow_cpu_us_per_event']:.1f}", f"{r['flow_cores']:.2f}",
                   _others(by.get("flow", {}), r["flow_cores"])),
        f"  = {r['flow_vs_floor']:.0%} of the KafkaSource floor, {r['flow_vs_batch_floor']:.0%} "
        f"of the batch floor (targets: {TARGETS['events_per_s_per_worker']:,} events/s and "
        f"{TARGETS['flow_vs_floor']:.0%} of the KafkaSource floor)"]
    s = r.get("scale_out")
    if s:
        ours = sum(p["cores"] for p in s["per_process"])
        lines += [
            row.format(f"flow, {s['processes']} processes x 1 worker", f"{s['events_per_s']:,.0f}",
                       f"{s['cpu_us_per_event']:.1f}", f"{ours:.2f}",
                       _others(s["machine"], ours)),
            f"  = {s['ratio_to_one']:.2f}x one process; per process: " + ", ".join(
                f"{p['cores']:.2f} cores over {p['wall_s']:.1f} s" for p in s["per_process"])]
    lines += _memory_lines(r["memory"], r["events"], r["users"])
    lines += _freshness_lines(r)
    return lines


def _memory_lines(mem: dict[str, Any], events: int, users: int) -> list[str]:
    lines = [f"memory of the flow process (RSS): {mem['rss_start_mb']:,.0f} MB with Feast open, "
             f"{mem['rss_end_mb']:,.0f} MB when the input ended ({events:,} events / {users:,} "
             f"users), peak {mem['rss_peak_mb']:,.0f} MB"]
    g = mem.get("growth")
    if g:
        lines.append(f"  growth: {g['rss_mb_per_100k_users']:+,.0f} MB RSS and "
                     f"{g['state_mb_per_100k_users']:+,.1f} MB pickled state per 100,000 more "
                     f"users ({g['users_small']:,} users / {g['events_small']:,} events: "
                     f"{g['rss_end_small_mb']:,.0f} MB)")
    st = mem.get("state")
    if st:
        lines.append(f"  state per user (pickled, as snapshotted): mean {st['bytes_mean']:,.0f} B, "
                     f"p99 {st['bytes_p99']:,} B, max {st['bytes_max']:,} B; holds "
                     f"{st['recent_mean']:.1f} final tokens (max {st['recent_max']}), "
                     f"{st['open_mean']:.1f} open groups/held events, {st['seen_mean']:.1f} "
                     f"dedupe ids, after {st['events_mean']:.1f} events (max {st['events_max']})")
    if mem.get("history"):
        lines.append("  one user as their history grows: " + "; ".join(
            f"{h['events']:,} events -> {h['pickled_bytes']:,} B pickled, "
            f"{h['memory_bytes']:,} B in memory ({h['recent']} tokens kept)"
            for h in mem["history"]))
    return lines


def _freshness_lines(r: dict[str, Any]) -> list[str]:
    head = (f"freshness at {r['freshness_rate_events_per_s']:,.0f} events/s offered, "
            f"{r['freshness_events']:,} events: ")
    if r["freshness_kept_up"]:
        head += (f"p50 {r['freshness_p50_s']:.3f} s, p99 {r['freshness_p99_s']:.3f} s "
                 f"(targets p50 <= {TARGETS['freshness_p50_s']} s, p99 <= "
                 f"{TARGETS['freshness_p99_s']:.0f} s)")
        if not r["freshness_rate_reached"]:
            head += (f"; the producer reached only {r['freshness_produced_events_per_s']:,.0f}"
                     " events/s (busy machine)")
    else:
        head += r["freshness_verdict"] + (
            f" (p99 {r['freshness_p99_s']:.1f} s; the flow finished "
            f"{r['freshness_drain_s']:.1f} s after the last event was acknowledged)")
    flushes = max(r["freshness_user_flushes"], 1)
    return [head,
            f"  floor (produce -> consumed by a do-nothing flow, same rate): "
            f"p50 {r['freshness_floor_p50_s']:.3f} s, p99 {r['freshness_floor_p99_s']:.3f} s",
            f"  online flushes meanwhile: {r['freshness_user_flushes']:.0f}, "
            f"{r['freshness_user_rows'] / flushes:,.0f} user rows and "
            f"{r['freshness_user_write_s'] / flushes * 1000:.0f} ms of writing each"]
