"""The whole path through the same library calls as ``marquee demo``/``up``, with real parts:
Tansu broker -> Bytewax flow -> Feast (SQLite) -> brief training -> ONNX export -> Ray Serve,
then a real Prometheus scraping the flow and the service while traffic runs, and every PromQL
expression of every dashboard panel and alert rule evaluated against it.

The traffic is counted on the client side (requests by route and code, the fallbacks,
degraded and relaxed answers the service returned, the dead letters on the topic), and the
counters behind the panels must equal those counts; then every panel must return data with
the values that traffic implies (a positive rate for what it drove, a zero 5xx share).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shutil
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from infra.dashboards import DASHBOARD_DIR
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
from infra.prometheus import RULES, Prometheus, render_config, start_prometheus
from infra.synthetic import SyntheticWorld, WorldConfig
from streams.config import KafkaSettings
from streams.consume import read_all
from streams.contract.tokens import DAY_MS
from streams.launch import free_port
from streams.produce import produce_events

pytestmark = pytest.mark.integration

DAYS = 8
COMPARISON = re.compile(r"\s*(>|<|>=|<=|==|!=)\s*[0-9.e+-]+\s*$")
T = TypeVar("T")
SIMILAR = "/v1/similar/{item_id}"  # the route label of /v1/similar/<item>
INFEASIBLE = {"goal": {"kinds": ["movie"], "max_duration_minutes": 1}}  # no 1-minute movies


def _alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load(RULES.read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def _episode_rank(items: list[dict], item_id: str) -> int:
    ids = [i["item_id"] for i in items]
    return ids.index(item_id) if item_id in ids else len(ids)


@dataclass
class Traffic:
    """Every request this test sends to the service, tallied from the answers: what the
    service's counters must show."""

    url: str
    codes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (route, code)
    fallbacks: Counter[str] = field(default_factory=Counter)  # by reason
    relaxations: Counter[str] = field(default_factory=Counter)  # relaxed constraints by family
    degraded: int = 0
    infeasible: int = 0  # answers with at least one relaxed constraint

    def rank(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/rank; the answer (empty unless 200)."""
        reply = httpx.post(f"{self.url}/v1/rank", json=body, timeout=30)
        self.codes["/v1/rank", str(reply.status_code)] += 1
        if reply.status_code != 200:
            return {}
        got = reply.json()
        if got.get("fallback"):
            self.fallbacks[got["fallback"]] += 1
        self.degraded += got["degraded"]
        self.infeasible += bool(got["relaxed"])
        self.relaxations.update(c["family"] for c in got["relaxed"])
        return got

    def similar(self, item_id: str) -> None:
        """GET /v1/similar/<item_id>."""
        reply = httpx.get(f"{self.url}/v1/similar/{item_id}", timeout=30)
        self.codes[SIMILAR, str(reply.status_code)] += 1

    def counters(self) -> dict[str, dict[str, int]]:
        """The service's counters as they must read: PromQL -> {label value: count}."""
        requests = "sum(marquee_requests_total{{route=\"{}\", code=\"{}\"}})"
        return {**{requests.format(*key): {"": n} for key, n in self.codes.items()},
                "sum by (reason) (marquee_fallbacks_total)": dict(self.fallbacks),
                "sum(marquee_degraded_responses_total)": {"": self.degraded},
                "sum(marquee_rerank_infeasible_total)": {"": self.infeasible},
                "sum by (family) (marquee_rerank_relaxations_total)": dict(self.relaxations)}


@dataclass
class ExperimentTraffic:
    """Rankings of an A/B test and an interleaving as the service logs them, and events on
    their items carrying their request_ids, a round at a time: in each ranking of 4 items,
    every item shown, one clicked, played and completed with 120 s watched (for interleaving
    an item of each team in turn, so each team wins requests); and one event about an item
    that is not in its ranking."""

    kafka: KafkaSettings
    n: int = 0

    def round(self) -> None:
        now = int(time.time() * 1000)
        rankings, events = [], []
        for exp, mode, variants in (("ab-e2e", "ab", ["a"]), ("ab-e2e", "ab", ["b"]),
                                    ("il-e2e", "interleave", ["a", "b"])):
            self.n += 1
            user, rid = f"exp-{self.n:05d}", uuid.uuid4().hex
            items = [{"item_id": f"x{j}", "position": j + 1, "score": 1.0,
                      "variant": variants[j % len(variants)]} for j in range(4)]
            rankings.append({"v": 1, "request_id": rid, "ts": now, "user_id": user,
                             "experiment": exp, "mode": mode, "variants": variants,
                             "model_versions": dict.fromkeys(variants, "e2e"), "items": items})
            base = {"user_id": user, "device": "tv", "surface": "home/top_picks",
                    "request_id": rid}
            for j, item in enumerate(items):
                events.append({**base, "event_id": f"{rid}-{j}", "item_id": item["item_id"],
                               "action": "impression", "ts": now + j})
            chosen = items[self.n % 2]["item_id"]
            for k, (action, watch) in enumerate((("click", 0.0), ("play", 0.0),
                                                 ("complete", 120.0))):
                events.append({**base, "event_id": f"{rid}-{action}", "item_id": chosen,
                               "action": action, "ts": now + 10 + k, "watch_seconds": watch})
        events.append({**base, "event_id": f"{rid}-elsewhere", "item_id": "not-shown",
                       "action": "click", "ts": now + 20})
        for records, topic in ((rankings, self.kafka.rankings_topic), (events, None)):
            sent = produce_events(records, self.kafka, topic=topic, progress=False)
            assert sent.delivered == len(records)


def _flow_counters(kafka: KafkaSettings, held: int, letters_before: int
                   ) -> dict[str, dict[str, int]]:
    """The live flow's counters as they must read once it has read the ``held`` messages of
    the events topic and written what it accepted: one dead letter per refusal, on the
    dead-letter topic after offset ``letters_before`` (what the first flow wrote); every other
    message accepted, and online (its freshness observed) once written."""
    letters = [json.loads(r.value) for r in read_all(kafka, kafka.dead_letter_topic)
               if r.offset >= letters_before]
    accepted = held - len(letters)
    return {"sum(marquee_events_consumed_total)": {"": held},
            "sum(marquee_events_valid_total)": {"": accepted},
            "sum(marquee_event_freshness_seconds_count)": {"": accepted},
            "sum(marquee_events_dead_lettered_total)": {"": len(letters)},
            "sum by (reason) (marquee_events_invalid_total)":
                dict(Counter(d["reason"] for d in letters))}


def _read_counters(prom: Prometheus, exprs: list[str]) -> dict[str, dict[str, int]]:
    out = {}
    for expr in exprs:
        out[expr] = {"".join(r["metric"].values()): round(float(r["value"][1]))
                     for r in prom.query(expr)}
    return out


def _settled(read: Callable[[], T], done: Callable[[T], bool], timeout: float) -> T:
    """``read()`` each second until ``done`` accepts it or ``timeout`` seconds passed (scrapes
    are 1 s apart); the last reading."""
    deadline = time.monotonic() + timeout
    while True:
        got = read()
        if done(got) or time.monotonic() > deadline:
            return got
        time.sleep(1)


@contextmanager
def _users_table_away(db: Path) -> Iterator[None]:
    """A feature-store outage for user reads: the online ``user_tokens`` table renamed away
    (every read of a user then fails), and back."""
    conn = sqlite3.connect(db, isolation_level=None)
    (table,) = [name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%user_tokens'")]
    conn.execute(f'ALTER TABLE "{table}" RENAME TO "{table}_away"')
    try:
        yield
    finally:
        conn.execute(f'ALTER TABLE "{table}_away" RENAME TO "{table}"')
        conn.close()


def _panel_series(prom: Prometheus) -> dict[str, dict[str, float]]:
    """``{panel title: {legend as Grafana draws it: value}}`` for every committed panel; a
    series without a label its legend shows (``or vector(0)`` padding) is ``(no <label>)``."""
    out: dict[str, dict[str, float]] = {}
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            assert panel["title"] not in out, f"two panels titled {panel['title']!r}"
            series = out[panel["title"]] = {}
            for target in panel["targets"]:
                for r in prom.query(target["expr"]):
                    labels = r["metric"]
                    legend = re.sub(r"\{\{(\w+)\}\}",
                                    lambda m, labels=labels: labels.get(m[1], f"(no {m[1]})"),
                                    target["legendFormat"])
                    series[legend] = float(r["value"][1])
    return out


def _positive(v: float) -> bool:
    return v > 0


def _share(v: float) -> bool:
    return 0 <= v <= 1


def _at_least_zero(v: float) -> bool:
    return v >= 0


def _expected_panels(version: str) -> dict[str, dict[str, Callable[[float], bool]]]:
    """What each panel must show after the traffic of this test: per legend ("*": every
    series), a test on its value."""
    latency = {"p50": _positive, "p99": _positive}
    fallbacks = {"unknown_user": _positive, "feature_store_unavailable": _positive}
    return {
        "Events consumed / s": {"consumed": _positive, "valid": _positive},
        "Invalid events by reason / s": {"invalid_event": _positive},
        "Dead-lettered / s": {"dead-lettered": _positive},
        "Tokens emitted / s": {"tokens": _at_least_zero},
        "Merge ratio (events per token)": {"events/token": lambda v: v >= 1},
        "Broker reachable from the flow": {"up": lambda v: v == 1},
        "Consumer lag by partition": {f"p{i}": _at_least_zero for i in range(4)},
        "Feast write latency": latency,
        "Event → online feature freshness": latency,
        "Requests / s by route and code": {"/v1/rank 200": _positive, "/v1/rank 422": _positive,
                                           f"{SIMILAR} 200": _positive},
        "Error rate (5xx share)": {"5xx share": lambda v: v == 0},
        "Latency p99 by stage": {"*": _positive},
        "Latency p50 by stage": {"*": _positive},
        "Mean inference batch size": {"batch": lambda v: v >= 1},
        "Feature store read latency (features stage)": latency,
        "Requests by model version / s": {version: _positive},
        "Model version serving": {version: lambda v: v == 1},
        "Fallbacks and degraded responses / s": {**fallbacks, "degraded": _positive},
        "Catalogue coverage of what was shown": {"coverage": lambda v: 0 < v <= 1},
        "Exposure share of over-exposed titles": {"popular share": _share},
        "New-title share of rankings": {"new share": _share},
        "Constraint outcomes": {"satisfied share": _share, "relaxed": _positive},
        "Re-ranker solve time": latency,
        "Infeasible goals and relaxations / s": {"infeasible": _positive,
                                                 "relaxations": _positive},
        "Cold-start share of shown items": {"cold share": _share},
        "Fallbacks by reason / s": fallbacks,
        # ExperimentTraffic: per ranking 4 shown, 1 clicked, played and completed, 120 s
        **{title: dict.fromkeys(VARIANTS, _positive) for title in (
            "Experiment rankings joined / s by variant", "Impressions / s by variant")},
        **{title: {**dict.fromkeys(VARIANTS[:2], lambda v: v == 0.25), "*": _share} for title in (
            "Click rate per impression", "Play rate per impression",
            "Complete rate per impression")},
        "Watch time per impression": {**dict.fromkeys(VARIANTS[:2], lambda v: v == 30),
                                      "*": _positive},
        "Interleaving: share of decided requests won": dict.fromkeys(VARIANTS[2:], _share),
        "Interleaving: decided and tied requests": {"il-e2e decided": _positive,
                                                    "il-e2e tied": lambda v: v == 0},
        "Outcome events not joined / s by reason": {"not_shown": _positive},
    }


VARIANTS = ("ab-e2e a", "ab-e2e b", "il-e2e a", "il-e2e b")


def _wrong_panels(shown: dict[str, dict[str, float]],
                  expected: dict[str, dict[str, Callable[[float], bool]]]) -> list[str]:
    wrong = [f"{title}: no expectation in this test" for title in shown.keys() - expected.keys()]
    wrong += [f"{title}: on no dashboard" for title in expected.keys() - shown.keys()]
    for title, series in shown.items():
        if not series:
            wrong.append(f"{title}: no data")
        wrong += [f"{title} / {legend}: {v}" for legend, v in series.items()
                  if not math.isfinite(v) or "(no " in legend]
        for legend, ok in expected.get(title, {}).items():
            values = series if legend == "*" else {legend: series.get(legend, math.nan)}
            wrong += [f"{title} / {k}: {v}" for k, v in values.items() if not ok(v)]
    return wrong


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
    # The last sessions run into the day after the world's last day: end it yesterday, so no
    # event is dated after it is produced (those are dead-lettered as future).
    world_cfg = WorldConfig(seed=5, n_users=120, days=DAYS, start_ms=today - (DAYS + 1) * DAY_MS)
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
    url = start_service(layout, onnx, port=free_port(), kafka=kafka)
    wait_ready(url)
    traffic = Traffic(url)
    user = "u000003"
    first = traffic.rank({"user_id": user, "k": 20})
    assert not first["degraded"] and first.get("fallback") is None
    assert len(first["items"]) == 20
    assert json.loads((layout.model_dir / "metrics.json").read_text())  # training wrote metrics
    assert first["model_version"].startswith("demo-")
    logged = read_all(kafka, kafka.rankings_topic, expected=1, timeout=30)  # the rankings log
    assert first["request_id"] in {json.loads(r.value)["request_id"] for r in logged}

    # In-session events (not in the store): the user finishes episode 1 of a series they
    # never watched; the ranking must move episode 2 of that series up.
    from infra.demo import pick_series, session_events

    series = pick_series(world, [i["item_id"] for i in first["items"]])
    events = session_events(world, user, series, today + 3_600_000)
    second = traffic.rank({"user_id": user, "k": 20, "events": events})
    ep2 = f"{series}e02"
    # Among a fixed candidate set (every series' episode 2 and some movies), episode 2 of the
    # series just watched must move up once the in-session events are known.
    pool = sorted({f"{t.series_id}e02" for t in world.catalogue if t.series_id}
                  | {t.item_id for t in world.catalogue if t.kind == "movie"}
                  )[:99]
    pool = sorted(set(pool) | {ep2})
    body = {"user_id": user, "k": len(pool), "candidates": pool}
    before = traffic.rank(body)
    after = traffic.rank({**body, "events": events})
    assert _episode_rank(after["items"], ep2) < _episode_rank(before["items"], ep2)
    assert events[0]["item_id"] not in {i["item_id"] for i in second["items"]}  # watched

    # A goal is honoured or its relaxation explained.
    goal = {"goal": {"preset": "short_episodes"},
            "diversity": [{"attribute": "genre", "max_items": 2, "window": 4}]}
    third = traffic.rank({"user_id": user, "k": 10, "events": events, "goal": goal})
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
    letters_before = len(read_all(kafka, kafka.dead_letter_topic))
    flow = start_flow(kafka, live, metrics_port=flow_port)
    serve_port = int(url.rsplit(":", 1)[1])
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(render_config(
        {"marquee-flow": [f"127.0.0.1:{flow_port}"],
         "marquee-serve": [f"127.0.0.1:{serve_port}"]}, rules=RULES, scrape_interval="1s")))
    prom = start_prometheus(config, tmp_path / "prom", prom_port)
    try:
        similar_to, live_ids = events[0]["item_id"], itertools.count()
        experiments = ExperimentTraffic(kafka)

        def round_of_traffic() -> None:
            for u in ("u000001", "u000002", "nobody-new", user):
                traffic.rank({"user_id": u, "k": 10, "goal": goal})
            traffic.rank({"user_id": "u000001", "k": 10, "goal": INFEASIBLE})
            traffic.similar(similar_to)
            traffic.rank({"user_id": ""})  # a 422
            # the live flow: one valid event and one that is not JSON, each round
            valid = {**events[0], "event_id": f"live-{next(live_ids)}",
                     "ts": int(time.time() * 1000)}
            assert produce_events([valid, b"not json"], kafka, progress=False).delivered == 2
            experiments.round()  # the live flow's experiment join

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # traffic until both targets are up and scraped
            round_of_traffic()
            ups = prom.targets_up()
            if len(ups) == 2 and all(ups.values()) and prom.query(
                    "sum(marquee_events_consumed_total)") and prom.query(
                    "sum(rate(marquee_request_seconds_count[1m])) > 0") and prom.query(
                    "sum(marquee_event_freshness_seconds_count) > 0"):
                break
            time.sleep(0.5)
        # Traffic over several 1 s scrapes (so every rate() sees it move), 3 s of it while
        # the feature store cannot read users: those answers are degraded.
        for store_down, seconds in ((False, 1.5), (True, 3.0), (False, 1.5)):
            with _users_table_away(layout.root / "feast" / "online_store.db") if store_down \
                    else nullcontext():
                until = time.monotonic() + seconds
                while time.monotonic() < until:
                    round_of_traffic()
                    time.sleep(0.2)
        assert traffic.degraded and traffic.infeasible and traffic.fallbacks["unknown_user"]
        assert not any(code.startswith("5") for _, code in traffic.codes)

        # The counters behind the panels equal what the test counted (once scraped, and once
        # the flow's paced online writes caught up).
        held = len(read_all(kafka, kafka.events_topic))

        def counters() -> tuple[dict, dict]:
            want = {**traffic.counters(), **_flow_counters(kafka, held, letters_before)}
            return _read_counters(prom, list(want)), want

        got, want = _settled(counters, lambda gw: gw[0] == gw[1], 90)
        assert got == want

        # Every panel returns data, and the values this traffic implies.
        expected = _expected_panels(first["model_version"])
        wrong = _settled(lambda: _wrong_panels(_panel_series(prom), expected), lambda w: not w,
                         20)
        for name, expr in _alert_exprs():
            prom.query(expr)  # parses
            if not prom.query(COMPARISON.sub("", expr)):
                wrong.append(f"alert {name}: {expr}: no data")
        assert not wrong, "panels/alerts not as this traffic implies:\n" + "\n".join(wrong)
    finally:
        prom.stop()
        flow.terminate()
        flow.wait(30)
