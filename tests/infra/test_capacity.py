"""The capacity plan's arithmetic: units follow the load, the binding limit is named."""

from __future__ import annotations

import json

import pytest

from infra.capacity import Load, default_figures, load_figures, plan, render, scales


def parts(load: Load, **figures: float) -> dict:
    f = default_figures()
    for name, value in figures.items():
        f[name] = f[name].__class__(value, f[name].unit, "test")
    return {p.name: p for p in plan(load, f).parts}


def test_flow_workers_and_brokers_follow_the_events() -> None:
    one = parts(Load(events_per_s=100_000), flow_events_per_s=10_000)
    two = parts(Load(events_per_s=200_000), flow_events_per_s=10_000)
    assert one["flow workers"].units == 15  # 100k / (10k x 0.7), rounded up
    assert two["flow workers"].units == 29
    assert two["brokers"].units >= one["brokers"].units


def test_redis_is_bound_by_memory_or_cpu_whichever_needs_more_shards() -> None:
    lots_of_users = parts(Load(events_per_s=1_000, rankings_per_s=10, users=10**9))
    assert lots_of_users["Redis shards"].bound == "memory"
    busy = parts(Load(events_per_s=10**7, rankings_per_s=0, users=1_000))
    assert busy["Redis shards"].bound.startswith("CPU")
    assert busy["Redis shards"].units == 100  # 1e7 x 7 us = 70 cores of commands / 0.7


def test_ray_nodes_are_bound_by_the_proxy_unless_replicas_cost_more() -> None:
    cheap = parts(Load(rankings_per_s=10_000), proxy_requests_per_s=200, rankings_per_s=190)
    assert cheap["Ray nodes"].bound.startswith("the proxy")
    assert cheap["Ray nodes"].units == 72  # 10,000 / (200 x 0.7)
    dear = parts(Load(rankings_per_s=10_000, cores_per_host=4), proxy_requests_per_s=2_000,
                 rankings_per_s=20)
    assert dear["Ray nodes"].bound == "replica CPU"


def test_reports_of_the_benchmarks_replace_the_defaults(tmp_path) -> None:
    (tmp_path / "stream.json").write_text(json.dumps(
        {"flow_events_per_s_per_worker": 12_345.0, "events": 10, "users": 5,
         "online_store": "redis"}))
    (tmp_path / "redis.json").write_text(json.dumps(
        {"spec": {"tokens": 20}, "feast": {"bytes_per_row": 500.0},
         "floor": {"server_us_per_row": 3.0, "server_us_per_read": 9.0}}))
    figures = load_figures(tmp_path)
    assert figures["flow_events_per_s"].value == 12_345.0
    assert figures["redis_bytes_per_user"].value == 500.0
    assert figures["flow_events_per_s"].source.endswith("stream.json")
    assert figures["broker_events_per_s"] == default_figures()["broker_events_per_s"]
    given = tmp_path / "mine.json"
    given.write_text(json.dumps({"flow_events_per_s": 50_000}))
    assert load_figures(tmp_path, given)["flow_events_per_s"].value == 50_000
    given.write_text(json.dumps({"flow_eps": 1}))
    with pytest.raises(ValueError, match="unknown figure.*flow_eps.*known: "):
        load_figures(tmp_path, given)


def test_the_ladder_keeps_the_ratios_and_the_markdown_names_every_part() -> None:
    figures = default_figures()
    base = Load()
    ladder = scales(figures, base)
    assert [p.load.events_per_s for p in ladder] == [1_000, 10_000, 100_000, 1_000_000]
    assert ladder[-1].load.rankings_per_s == base.rankings_per_s
    assert ladder[0].first_to_saturate() is None  # 1,000 events/s fit one host of each
    text = render(plan(base, figures), ladder, figures)
    for name in ("flow workers", "brokers", "Redis shards", "Ray nodes"):
        assert f"| {name} |" in text


def test_a_bad_load_names_the_fix() -> None:
    with pytest.raises(ValueError, match="--utilization"):
        Load(utilization=0)


def test_docs_capacity_shows_the_plan_of_the_recorded_figures() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "capacity.md").read_text()
    figures = default_figures()
    assert render(plan(Load(), figures), scales(figures, Load()), figures) in doc, (
        "docs/capacity.md is stale: paste `marquee capacity --bench-dir /nonexistent` into it")
