"""The stream benchmark's figures from its phases' measurements, and its printed table."""

from __future__ import annotations

import pytest

from infra.bench.stream_child import Run
from infra.bench.stream_report import MB, Measured, build_report, freshness_verdict, pct, table


def _run(wall: float, cpu: float, rss_end: int = 500 * MB, **extra) -> Run:
    return Run("x", 1, wall, cpu, wall, 300 * MB, rss_end, rss_end + MB, 1000.0, 1000.0 + wall,
               extra)


STATE = {"users": 100_000, "bytes_total": 160 * MB, "bytes_mean": 1677.0, "bytes_p99": 2600,
         "bytes_max": 2800, "events_mean": 10.0, "events_max": 10, "recent_mean": 6.5,
         "recent_max": 8, "open_mean": 1.9, "seen_mean": 10.0}


def _measured(fresh_samples: list[float], produced_rate: float = 20_000.0,
              cluster: int = 2) -> Measured:
    return Measured(
        events=1_000_000, users=100_000, online="sqlite", redis_url=None, batch_size=5000,
        flush_s=0.1, partitions=4, generate_s=45.0, produce_s=5.0,
        floor=_run(10.0, 9.0), batch_floor=_run(4.0, 3.0),
        flow=_run(50.0, 55.0, state=STATE),
        fresh=_run(9.0, 8.0, samples=fresh_samples,
                   writes={"flushes": 80, "rows": 40_000, "seconds": 4.0}),
        fresh_floor=_run(8.0, 1.0, samples=[0.01] * 99 + [0.5]),
        fresh_rate=20_000.0, fresh_produced_rate=produced_rate, fresh_produced_at=1008.5,
        growth=_run(25.0, 27.0, rss_end=400 * MB, state={**STATE, "bytes_total": 80 * MB}),
        growth_users=50_000, growth_events=500_000,
        cluster=[_run(40.0, 36.0), _run(31.0, 30.0)][:cluster],
        cores={"flow": {"machine": 1.9, "broker": 0.3}})


def test_rates_cpu_and_ratios_come_from_the_same_runs():
    r = build_report(_measured([0.2] * 100))
    assert r["floor_events_per_s"] == pytest.approx(100_000)
    assert r["flow_events_per_s_per_worker"] == pytest.approx(20_000)
    assert r["flow_cpu_us_per_event"] == pytest.approx(55.0)
    assert r["flow_cores"] == pytest.approx(1.1)
    assert r["flow_vs_floor"] == pytest.approx(0.2)
    assert r["flow_vs_batch_floor"] == pytest.approx(0.08)
    scale = r["scale_out"]
    assert scale["events_per_s"] == pytest.approx(25_000)  # the slower process sets the pace
    assert scale["ratio_to_one"] == pytest.approx(1.25)
    assert scale["cpu_us_per_event"] == pytest.approx(66.0)
    assert build_report(_measured([0.2] * 100, cluster=0))["scale_out"] is None


def test_memory_growth_is_per_100k_more_users():
    mem = build_report(_measured([0.2] * 100))["memory"]
    assert mem["rss_end_mb"] == pytest.approx(500)
    assert mem["growth"]["rss_mb_per_100k_users"] == pytest.approx(200)
    assert mem["growth"]["state_mb_per_100k_users"] == pytest.approx(160)


def test_a_flow_that_keeps_up_gets_its_percentiles():
    samples = [0.1 + 0.01 * (i % 50) for i in range(1000)]
    verdict = freshness_verdict(samples, 20_000, 19_900)
    assert verdict["kept_up"] and verdict["rate_reached"] and verdict["verdict"] == "kept up"
    r = build_report(_measured(samples))
    assert r["freshness_p99_s"] == pytest.approx(pct(samples, 0.99))
    assert r["freshness_drain_s"] == pytest.approx(0.5)
    lines = "\n".join(table(r))
    assert "p99 0.590 s" in lines and "OVER CAPACITY" not in lines


def test_a_growing_backlog_is_reported_as_over_capacity_not_as_a_p99():
    samples = [i / 1000 for i in range(10_000)]  # every event waits longer than the one before
    verdict = freshness_verdict(samples, 20_000, 20_000)
    assert not verdict["kept_up"] and verdict["growth_s"] == pytest.approx(9.0, abs=0.01)
    lines = "\n".join(table(build_report(_measured(samples))))
    assert "OVER CAPACITY" in lines and "backlog" in lines
    assert "targets p50" not in lines


def test_a_producer_that_missed_the_rate_is_said():
    r = build_report(_measured([0.2] * 100, produced_rate=12_000))
    assert r["freshness_kept_up"] and not r["freshness_rate_reached"]
    assert "reached only 12,000 events/s" in "\n".join(table(r))
