"""``marquee demo``: the whole pipeline on embedded defaults, once.

demo: broker -> synthetic producer -> Bytewax flow (to the end of the topic) -> Feast (SQLite)
-> a model trained for a short budget (reused when the data did not change) -> Ray Serve; then
one user's ranking, the ranking again after new in-session events, a goal re-rank, and where
the metrics are. ``marquee up`` (``infra.stack``) runs the same steps once, then keeps the
stack running, supervised, on durable state.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from infra.broker import broker_for
from infra.pipeline import (
    Layout,
    reset_features,
    run_flow_to_end,
    seed_events,
    start_service,
    stop_service,
    train_and_export,
    wait_ready,
)
from infra.synthetic import SyntheticWorld, WorldConfig
from streams.contract.tokens import DAY_MS


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and ports of a demo run (defaults fit in a few minutes on 2 cores)."""

    data_dir: Path = Path("var/demo")
    users: int = 400
    days: int = 14
    seed: int = 7
    train_minutes: float = 1.5
    serve_port: int = 8000
    broker_port: int | None = None  # None: a free port (demo); up uses 9092
    flow_metrics_port: int = 9101
    prometheus_port: int = 9090
    serve_replicas: int | None = None  # None: MARQUEE_REPLICAS or ServeSettings' default


def step(n: int, total: int, text: str) -> None:
    """Print step ``n`` of ``total``."""
    print(f"[{n}/{total}] {text}", flush=True)


def _table(items: list[dict[str, Any]], highlight: set[str] = frozenset()) -> str:
    rows = [f"      {'#':>2}  {'item':10} {'genre':12} {'kind':8} {'score':>8}"]
    for it in items:
        mark = "  <- new" if it["item_id"] in highlight else ""
        rows.append(f"      {it['position']:>2}  {it['item_id']:10} {it['genre']:12} "
                    f"{it['kind']:8} {it['score']:8.3f}{mark}")
    return "\n".join(rows)


def session_events(world: SyntheticWorld, user_id: str, series_id: str, at_ms: int
                   ) -> list[dict[str, Any]]:
    """The user finds episode 1 of a series on the home page, plays and finishes it."""
    ep1 = next(t for t in world.catalogue if t.series_id == series_id and t.episode == 1)
    base = {"user_id": user_id, "item_id": ep1.item_id, "device": "tv",
            "surface": "home/top_picks", "position": 2, "session_id": f"{user_id}-demo"}
    steps = [("impression", 0, 0.0), ("click", 3_000, 0.0), ("play", 5_000, 0.0),
             ("complete", 5_000 + ep1.duration_s * 1000, float(ep1.duration_s))]
    return [{**base, "event_id": f"demo-{user_id}-{i}", "action": a, "ts": at_ms + dt,
             "watch_seconds": w} for i, (a, dt, w) in enumerate(steps)]


def pick_series(world: SyntheticWorld, ranked: list[str]) -> str:
    """A series none of whose episodes is in the user's first ranking (so the change shows)."""
    shown = {item[:5] for item in ranked if item.startswith("s")}
    series = sorted({t.series_id for t in world.catalogue if t.series_id})
    return next((s for s in series if s not in shown), series[0])


def rank(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/rank; raises with the service's message on a non-200."""
    reply = httpx.post(f"{url}/v1/rank", json=body, timeout=30)
    if reply.status_code != 200:
        raise RuntimeError(f"/v1/rank answered {reply.status_code}: {reply.text}")
    return reply.json()


def show_rankings(url: str, world: SyntheticWorld, user_id: str, end_ms: int, n: int,
                  total: int) -> None:
    """The user's ranking, again after an in-session episode, then a goal re-rank (steps
    ``n``..``n + 2``).
    """
    first = rank(url, {"user_id": user_id, "k": 10, "explain": True})
    print(f"      model {first['model_version']}; degraded={first['degraded']}; latency "
          f"{json.dumps({k: round(v, 2) for k, v in (first.get('latency_ms') or {}).items()})}")
    print(_table(first["items"]))
    series = pick_series(world, [i["item_id"] for i in first["items"]])
    events = session_events(world, user_id, series, end_ms + 3_600_000)
    step(n + 1, total, f"{user_id} now watches {events[0]['item_id']} to the end "
                        f"(4 in-session events sent with the request, not yet in the store)")
    second = rank(url, {"user_id": user_id, "k": 10, "events": events})
    before = {i["item_id"] for i in first["items"]}
    print(_table(second["items"], {i["item_id"] for i in second["items"]} - before))
    step(n + 2, total, "goal re-rank: 'short episodes', at most 2 of a genre in any 4 slots, "
                        "at least 20% new titles (solved as a MILP with HiGHS)")
    goal = {"goal": {"preset": "short_episodes"}, "min_new_share": 0.2,
            "diversity": [{"attribute": "genre", "max_items": 2, "window": 4}]}
    third = rank(url, {"user_id": user_id, "k": 10, "events": events, "goal": goal})
    print(_table(third["items"]))
    print(f"      {third['explanation']}")
    for c in third["binding"]:
        print(f"      binding: {c['name']} ({c['bound']}, value {c['value']:g})")
    for c in third["relaxed"]:
        print(f"      relaxed: {c['message']}")


def world_of(cfg: DemoConfig) -> tuple[WorldConfig, SyntheticWorld]:
    """The demo's synthetic world. Its last day is yesterday, so "new releases" and freshness
    mean what they say at serving time, and the sessions that run past the last day's end are
    not dated after the moment they are produced (the flow refuses those as ``future``).
    """
    today = int(time.time() * 1000) // DAY_MS * DAY_MS
    world_cfg = WorldConfig(seed=cfg.seed, n_users=cfg.users, days=cfg.days,
                            start_ms=today - (cfg.days + 1) * DAY_MS)
    return world_cfg, SyntheticWorld(world_cfg)


def run_demo(config: DemoConfig | None = None) -> int:
    """Run the pipeline end to end once and print what happens (``marquee up`` keeps it
    running: ``infra.stack``).
    """
    cfg = config or DemoConfig()
    layout = Layout(cfg.data_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    world_cfg, world = world_of(cfg)
    total = 8
    started = time.monotonic()
    step(1, total, "embedded Kafka-protocol broker (Tansu), or KAFKA_BOOTSTRAP_SERVERS if set")
    with broker_for(port=cfg.broker_port, log_path=layout.root / "broker.log") as kafka:
        print(f"      broker {kafka.bootstrap_servers}; topics {kafka.events_topic}, "
              f"{kafka.dead_letter_topic}", flush=True)
        step(2, total, f"synthetic world: {cfg.users} users x {cfg.days} days, "
                        f"{len(world.catalogue)} titles -> {kafka.events_topic}")
        report = seed_events(kafka, layout, world_cfg)
        print(f"      {report.summary()}", flush=True)
        step(3, total, "Bytewax flow: events -> tokens -> Feast online store (SQLite) + "
                        f"token log ({layout.tokens})")
        t0 = time.monotonic()
        reset_features(layout)  # a fresh broker: the features start from nothing too
        run_flow_to_end(kafka, layout)
        print(f"      {report.delivered:,} events tokenized in {time.monotonic() - t0:.1f}s",
              flush=True)
        step(4, total, f"foundation model: train <= {cfg.train_minutes} min on the token log "
                        "(reused if the data did not change), export ONNX")
        world_key = json.dumps({**asdict(world_cfg), "start_ms": None}, sort_keys=True)
        onnx, reused = train_and_export(layout, minutes=cfg.train_minutes, data_key=world_key)
        print(f"      {'reused' if reused else 'exported'} {onnx}", flush=True)
        step(5, total, f"Ray Serve ranking app on port {cfg.serve_port}")
        url = start_service(layout, onnx, port=cfg.serve_port, kafka=kafka)
        try:
            wait_ready(url)
            print(f"      {url}/docs (OpenAPI), {url}/metrics", flush=True)
            user_id = "u000007"
            step(6, total, f"ranking for {user_id} (POST {url}/v1/rank)")
            show_rankings(url, world, user_id, world_cfg.start_ms + cfg.days * DAY_MS, 6, total)
            print(f"      Prometheus metrics: {url}/metrics (ranking service); run "
                  "`marquee up` to keep the stack running with Prometheus.")
            print(f"done in {time.monotonic() - started:.0f}s", flush=True)
        finally:
            stop_service()
    return 0
