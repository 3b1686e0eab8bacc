"""The whole path through the same library calls as ``marquee demo``/``up``, with real parts:
Tansu broker -> Bytewax flow -> Feast (SQLite) -> brief training -> ONNX export -> Ray Serve,
then a real Prometheus scraping the flow and the service while traffic runs, and every PromQL
expression of every dashboard panel and alert rule evaluated against it.
"""

from __future__ import annotations

import json
import re
import shutil
import time

import httpx
import pytest
import yaml

from infra.dashboards import dashboard_exprs
from infra.pipeline import (
    Layout,
    run_flow_to_end,
    seed_events,
    start_flow,
    start_service,
    stop_service,
    train_and_export,
    wait_ready,
)
from infra.prometheus import RULES, render_config, start_prometheus
from infra.synthetic import SyntheticWorld, WorldConfig
from streams.contract.tokens import DAY_MS
from streams.launch import free_port
from streams.produce import produce_events

pytestmark = pytest.mark.integration

DAYS = 8
COMPARISON = re.compile(r"\s*(>|<|>=|<=|==|!=)\s*[0-9.e+-]+\s*$")


def _alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load(RULES.read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def _episode_rank(items: list[dict], item_id: str) -> int:
    ids = [i["item_id"] for i in items]
    return ids.index(item_id) if item_id in ids else len(ids)


@pytest.fixture
def fresh_serve():
    """Ray Serve for this test alone (stops a session's Serve first: one HTTP proxy per Ray)."""
    import ray
    from ray import serve

    if ray.is_initialized():
        serve.shutdown()
    yield
    stop_service()


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed")
def test_events_to_ranking_to_dashboards(kafka_topics, tmp_path, fresh_serve):
    kafka = kafka_topics
    layout = Layout(tmp_path / "pipeline")
    today = int(time.time() * 1000) // DAY_MS * DAY_MS
    world_cfg = WorldConfig(seed=5, n_users=120, days=DAYS, start_ms=today - DAYS * DAY_MS)
    world = SyntheticWorld(world_cfg)

    # events -> broker (plus two malformed ones, which must be dead-lettered, not crash)
    report = seed_events(kafka, layout, world_cfg, progress=False)
    assert report.delivered > 5000 and report.undelivered == 0
    bad = [b'{"user_id": "u000001", "action": "dance"}', b"not json"]
    assert produce_events(bad, kafka, progress=False).delivered == 2

    # events -> flow -> Feast + token log
    run_flow_to_end(kafka, layout, timeout=300)
    assert any(layout.tokens.glob("**/*.parquet")) and layout.vocab.exists()

    # token log -> brief training -> ONNX
    onnx, reused = train_and_export(layout, minutes=None, epochs=4, progress=False)
    assert onnx.exists() and not reused
    assert train_and_export(layout, minutes=None, epochs=4, progress=False) == (onnx, True)

    # ONNX + Feast -> Ray Serve
    url = start_service(layout, onnx, port=free_port())
    wait_ready(url)
    user = "u000003"
    first = httpx.post(f"{url}/v1/rank", json={"user_id": user, "k": 20}, timeout=30).json()
    assert not first["degraded"] and first.get("fallback") is None
    assert len(first["items"]) == 20
    assert json.loads((layout.model_dir / "metrics.json").read_text())  # training wrote metrics
    assert first["model_version"].startswith("demo-")

    # In-session events (not in the store): the user finishes episode 1 of a series they
    # never watched; the ranking must move episode 2 of that series up.
    from infra.demo import pick_series, session_events

    series = pick_series(world, [i["item_id"] for i in first["items"]])
    events = session_events(world, user, series, today + 3_600_000)
    second = httpx.post(f"{url}/v1/rank", json={"user_id": user, "k": 20, "events": events},
                        timeout=30).json()
    ep2 = f"{series}e02"
    # Among a fixed candidate set (every series' episode 2 and some movies), episode 2 of the
    # series just watched must move up once the in-session events are known.
    pool = sorted({f"{t.series_id}e02" for t in world.catalogue if t.series_id}
                  | {t.item_id for t in world.catalogue if t.kind == "movie"}
                  )[:99]
    pool = sorted(set(pool) | {ep2})
    body = {"user_id": user, "k": len(pool), "candidates": pool}
    before = httpx.post(f"{url}/v1/rank", json=body, timeout=30).json()
    after = httpx.post(f"{url}/v1/rank", json={**body, "events": events}, timeout=30).json()
    assert _episode_rank(after["items"], ep2) < _episode_rank(before["items"], ep2)
    assert events[0]["item_id"] not in {i["item_id"] for i in second["items"]}  # watched

    # A goal is honoured or its relaxation explained.
    goal = {"goal": {"preset": "short_episodes"},
            "diversity": [{"attribute": "genre", "max_items": 2, "window": 4}]}
    third = httpx.post(f"{url}/v1/rank", json={"user_id": user, "k": 10, "events": events,
                                               "goal": goal}, timeout=30).json()
    durations = {t.item_id: t.duration_s for t in world.catalogue}
    kinds = {t.item_id: t.kind for t in world.catalogue}
    if not third["relaxed"]:
        assert all(kinds[i["item_id"]] == "episode" and durations[i["item_id"]] <= 1800
                   for i in third["items"])
    else:
        assert third["explanation"]

    # Observability: a live flow (tailing, metrics on) and the service, scraped by Prometheus.
    flow_port, prom_port = free_port(), free_port()
    live = Layout(tmp_path / "live")
    live.root.mkdir()
    shutil.copy(layout.catalogue, live.catalogue)
    flow = start_flow(kafka, live, metrics_port=flow_port)
    serve_port = int(url.rsplit(":", 1)[1])
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(render_config(
        {"marquee-flow": [f"127.0.0.1:{flow_port}"],
         "marquee-serve": [f"127.0.0.1:{serve_port}"]}, rules=RULES, scrape_interval="1s")))
    prom = start_prometheus(config, tmp_path / "prom", prom_port)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # traffic until both targets are up and scraped
            for u in ("u000001", "u000002", "nobody-new", user):
                httpx.post(f"{url}/v1/rank", json={"user_id": u, "k": 10, "goal": goal},
                           timeout=30)
            httpx.get(f"{url}/v1/similar/{events[0]['item_id']}", timeout=30)
            httpx.post(f"{url}/v1/rank", json={"user_id": ""}, timeout=30)  # a 422
            ups = prom.targets_up()
            if len(ups) == 2 and all(ups.values()) and prom.query(
                    "sum(marquee_events_consumed_total)") and prom.query(
                    "sum(rate(marquee_request_seconds_count[1m])) > 0") and prom.query(
                    "sum(marquee_event_freshness_seconds_count) > 0"):
                break
            time.sleep(0.5)
        time.sleep(3)  # a few more scrapes so every rate() window has two samples
        empty = []
        for source, title, expr in dashboard_exprs():
            if not prom.query(expr):  # raises ValueError if the expression does not parse
                empty.append(f"{source} / {title}: {expr}")
        for name, expr in _alert_exprs():
            prom.query(expr)  # parses
            if not prom.query(COMPARISON.sub("", expr)):
                empty.append(f"alert {name}: {expr}")
        assert not empty, "panels/alerts with no data:\n" + "\n".join(empty)
    finally:
        prom.stop()
        flow.terminate()
        flow.wait(30)
