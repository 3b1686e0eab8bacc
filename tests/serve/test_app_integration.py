"""The app on Ray Serve: through a deployment handle, over HTTP, hostile inputs (4xx naming the
fix), fuzzed from its OpenAPI document (no 5xx, every answer as documented), and a model
rollover under load that drops no request."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from serve import app
from serve.constraints import Constraints, Goal
from serve.schemas import RankRequest, RankResponse
from tests.serve.switching import switch_under_load

pytestmark = pytest.mark.integration


def test_rank_through_a_handle(served, world) -> None:
    res = app.handle().ranking.remote(RankRequest(user_id=world.users[0], k=7)).result()
    assert isinstance(res, RankResponse)
    assert res.model_version in ("fm-a", "fm-b") and len(res.items) == 7


def test_rank_over_http(served, world) -> None:
    url, _ = served
    body = {"user_id": world.users[0], "k": 8, "explain": True,
            "goal": {"goal": {"preset": "new_to_me"}, "min_new_share": 0.1}}
    r = httpx.post(f"{url}/v1/rank", json=body, timeout=30)
    assert r.status_code == 200, r.text
    got = r.json()
    assert len(got["items"]) == 8 and got["degraded"] is False
    assert {"features", "inference", "rerank", "total"} <= set(got["latency_ms"])
    assert any(c["family"] == "goal" for c in got["constraints"])


def test_the_front_routes_to_the_replicas_own_ports(front_served, world) -> None:
    url, settings, gate = front_served
    replicas = app.replica_targets()["/"]
    assert len(replicas) == settings.replicas and all(port >= 30000 for _, port in replicas)
    assert gate.routes is not None and gate.routes.applied is not None
    assert gate.routes.applied == {"rank": replicas}
    host, port = replicas[0]  # the replica answers on it itself, past Ray's proxy
    r = httpx.post(f"http://{host}:{port}/v1/rank", json={"user_id": world.users[0]},
                   timeout=30)
    assert r.status_code == 200 and r.json()["user_id"] == world.users[0]


def test_health_readiness_similar_and_metrics(served, world) -> None:
    url, _ = served
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 200 and ready.json()["model_version"] in ("fm-a", "fm-b")
    assert {n: c["ok"] for n, c in ready.json()["checks"].items()} == {
        "model": True, "feature_store": True}
    item = next(iter(world.catalogue))
    sim = httpx.get(f"{url}/v1/similar/{item}", params={"k": 3})
    assert sim.status_code == 200 and len(sim.json()["items"]) == 3
    assert httpx.get(f"{url}/v1/similar/no-such-item").status_code == 404
    httpx.post(f"{url}/v1/rank", json={"user_id": world.users[1]}, timeout=30)
    text = httpx.get(f"{url}/metrics").text
    for name in ("marquee_requests_total", "marquee_request_seconds_bucket",
                 "marquee_batch_size_bucket", "marquee_model_info",
                 "marquee_rerank_solve_seconds_bucket", "marquee_shown_items_total"):
        assert name in text, name
    assert 'route="/v1/rank"' in text and 'stage="inference"' in text


def test_bad_requests_get_4xx_that_say_what_to_fix(served, world) -> None:
    url, _ = served
    r = httpx.post(f"{url}/v1/rank", json={"user_id": "u", "k": 999}, timeout=30)
    assert r.status_code == 422 and "k_max" in r.text
    r = httpx.post(f"{url}/v1/rank", json={"user_id": "u", "colour": "red"}, timeout=30)
    assert r.status_code == 422 and "colour" in r.text
    bad_goal = {"user_id": "u", "goal": {"diversity": [{"attribute": "genre", "max_items": 5,
                                                         "window": 3}]}}
    r = httpx.post(f"{url}/v1/rank", json=bad_goal, timeout=30)
    assert r.status_code == 422 and "max_items" in r.text


HOSTILE = [  # (raw JSON body, what the 422 must say)
    ('{"user_id": "\\ud800"}', "send valid Unicode"),
    ('{"user_id": "u", "k": NaN}', "send a finite number"),
    ('{"user_id": "u", "events": [{"event_id": "e", "user_id": "u", "item_id": "i", '
     '"action": "play", "ts": 1767300000000, "device": "tv", "surface": "s", '
     '"watch_seconds": NaN}]}', "watch_seconds is nan"),
    ('{"user_id": "u", "explain": 0}', "valid boolean"),
]


@pytest.mark.parametrize(("body", "fix"), HOSTILE)
def test_hostile_inputs_get_422_that_names_the_fix(served, body: str, fix: str) -> None:
    url, _ = served
    r = httpx.post(f"{url}/v1/rank", content=body, timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 422 and fix in r.text, r.text


def test_bodies_over_the_limit_get_413_and_bad_bytes_400(served) -> None:
    url, settings_ = served
    limit = settings_.max_body_bytes
    big = json.dumps({"user_id": "u", "candidates": ["c" * 100] * (limit // 90)}).encode()
    r = httpx.post(f"{url}/v1/rank", content=big, timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and f"the limit is {limit} bytes" in r.json()["detail"]
    assert len(r.content) < 1000  # the answer does not echo the body

    def chunks():
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    r = httpx.post(f"{url}/v1/rank", content=chunks(), timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and "MARQUEE_MAX_BODY_BYTES" in r.json()["detail"]
    r = httpx.post(f"{url}/v1/rank", content=b'{"user_id": "\xff"}', timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "UTF-8" in r.json()["detail"]


def test_unknown_candidates_are_reported_not_ranked(served, world) -> None:
    url, _ = served
    bogus = [f"../../etc/passwd{i}" for i in range(1000)]
    r = httpx.post(f"{url}/v1/rank", json={"user_id": world.users[0], "candidates": bogus},
                   timeout=30)
    got = r.json()
    assert r.status_code == 200 and got["items"] == [], r.text
    assert got["unknown_candidates"] == 1000 and got["unknown_candidate_ids"] == bogus[:5]


def test_the_openapi_document_states_what_is_enforced(served) -> None:
    url, settings_ = served
    doc = httpx.get(f"{url}/openapi.json").json()
    k = doc["components"]["schemas"]["RankRequest"]["properties"]["k"]
    assert [b["maximum"] for b in k["anyOf"] if b.get("type") == "integer"] == [settings_.k_max]
    assert {"200", "400", "413", "422", "503"} <= set(doc["paths"]["/v1/rank"]["post"]["responses"])
    over = httpx.post(f"{url}/v1/rank", json={"user_id": "u", "k": settings_.k_max + 1},
                      timeout=30)
    at = httpx.post(f"{url}/v1/rank", json={"user_id": "u", "k": settings_.k_max}, timeout=30)
    assert over.status_code == 422 and at.status_code == 200


# Examples per operation and generation mode; MARQUEE_FUZZ_EXAMPLES=2500 gives the long run.
FUZZ_EXAMPLES = int(os.environ.get("MARQUEE_FUZZ_EXAMPLES", "60"))
FUZZ_CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance,
               content_type_conformance, negative_data_rejection]


def test_openapi_fuzz_never_5xx_and_every_answer_matches_the_schema(served) -> None:
    """Hypothesis-generated requests from the app's own OpenAPI document, valid and invalid
    (positive and negative modes): no answer is 5xx, every status code, content type and body
    is one the document declares, and every invalid request is refused."""
    url, _ = served
    schema = schemathesis.openapi.from_dict(httpx.get(f"{url}/openapi.json").json())
    labels: list[str] = []
    sent = Counter[int]()
    for result in schema.get_all_operations():
        op = result.ok()
        labels.append(op.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def check(case) -> None:
                response = case.call(base_url=url, timeout=30)
                sent[response.status_code] += 1
                if response.status_code == 503 and "x-request-timeout-ms" in {
                        h.lower() for h in (case.headers or {})}:
                    return  # a deadline the case chose expired: a shed, said with Retry-After
                case.validate_response(response, checks=FUZZ_CHECKS)

            try:
                check()
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE
    assert "POST /v1/rank" in labels and "GET /v1/similar/{item_id}" in labels
    assert sent[422] and sent[200], sent  # both kinds of answer were exercised
    print(f"fuzz: {sum(sent.values())} requests, by status {dict(sorted(sent.items()))}")


def test_a_request_past_its_deadline_is_dropped_with_503_and_retry_after(served, world):
    url, _ = served
    user = world.users[3]
    events = [{"event_id": f"dl{i}", "user_id": user, "item_id": sorted(world.catalogue)[i % 20],
               "action": "impression", "ts": 1_767_225_600_000 + i * 1000, "device": "tv",
               "surface": "home/top_picks"} for i in range(500)]
    body = {"user_id": user, "k": 5, "events": events}
    slow = httpx.post(f"{url}/v1/rank", json=body, headers={"X-Request-Timeout-Ms": "1"},
                      timeout=30)
    assert slow.status_code == 503, slow.text[:300]
    assert slow.headers["retry-after"] == "1" and "X-Request-Timeout-Ms" in slow.json()["detail"]
    fine = httpx.post(f"{url}/v1/rank", json=body, headers={"X-Request-Timeout-Ms": "30000"},
                      timeout=30)
    assert fine.status_code == 200, fine.text[:300]
    bad = httpx.post(f"{url}/v1/rank", json=body, headers={"X-Request-Timeout-Ms": "0"})
    assert bad.status_code == 422 and "x-request-timeout-ms" in bad.text.lower()
    text = httpx.get(f"{url}/metrics").text
    assert 'marquee_requests_shed_total{reason="expired"}' in text


def test_overload_is_shed_fast_with_503_and_retry_after(served, world):
    """A second deployment with room for one request in the replica and one at the proxy:
    of 24 simultaneous requests, the rest are refused at once, never queued or failed."""
    from ray import serve as ray_serve

    url, settings_ = served
    tiny = settings_.model_copy(update={"max_ongoing_requests": 1, "max_queued_requests": 1})
    ray_serve.run(app.build_app(tiny), name="marquee-tiny", route_prefix="/tiny")
    try:
        codes: list[tuple[int, float, str]] = []

        def call() -> None:
            start = time.perf_counter()
            r = httpx.post(f"{url}/tiny/v1/rank", json={"user_id": world.users[4], "k": 5},
                           timeout=30)
            codes.append((r.status_code, time.perf_counter() - start,
                          r.headers.get("retry-after", "")))

        threads = [threading.Thread(target=call) for _ in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        shed = [c for c in codes if c[0] == 503]
        assert {c[0] for c in codes} <= {200, 503} and len(codes) == 24
        assert shed and len(shed) < 24, sorted(codes)
        assert all(c[2] == "1" for c in shed)
        answered = sorted(c[1] for c in codes if c[0] == 200)
        assert max(c[1] for c in shed) <= max(answered) + 0.5
    finally:
        ray_serve.delete("marquee-tiny")


def test_at_three_times_capacity_the_replica_keeps_working(served, world):
    """Offered 3x what it answers back to back, the service (behind its admission front)
    answers close to its capacity and sheds the rest at once; answered requests wait a bounded
    time. (With Ray Serve's own router backoff, up to 0.5 s, a freed slot idled: 14-17% of
    capacity, answered p99 8-12 s; without the front, Ray's proxy shed in 22-90 ms p50.)
    """
    from infra.bench.serve import closed_loop, overload

    url, settings_ = served
    bodies = [{"user_id": u, "k": 10} for u in world.users]
    closed_loop(f"{url}/v1/rank", bodies, 1, 1.0)
    cap = closed_loop(f"{url}/v1/rank", bodies, 32, 3.0)
    assert cap["errors"] == 0, cap["errors"]
    level = overload(f"{url}/v1/rank", bodies, 3 * cap["rps"], 5.0)
    print(f"capacity {cap['rps']:.0f}/s p99 {cap['p99_ms']:.0f} ms; at 3x: goodput "
          f"{level['goodput_rps']:.0f}/s, answered {level['answered']}, shed {level['shed']}")
    seen = (cap["rps"], cap["p99_ms"], level)
    assert level["other_errors"] == 0, seen
    assert level["shed"]["n"] > 0, seen
    # Regression guards, not the targets (the bench reports those): on 2 shared cores the
    # front gave 89% and shed p50 0.7 ms; Ray's proxy alone 43-83% and 22-90 ms; Ray's
    # router backoff 14-27%.
    assert level["goodput_rps"] >= 0.5 * cap["rps"], seen
    # The deadline is the replica's; a request also waits at the proxy before the replica sees
    # it (5.1 s p99 once, on a machine busy with other work). A collapse goes far past this.
    assert level["answered"]["p99_ms"] <= 1.5 * settings_.request_timeout_ms, seen
    assert level["shed"]["p50_ms"] <= 100, seen  # refused at the front, not queued


def test_rollover_drops_no_request(served, world) -> None:
    url, settings_ = served
    per_client = switch_under_load(url, world.users[2],
                                   lambda: app.rollover(settings_, world.model_b), "fm-b",
                                   warm_s=1.0, settle_s=0.5)
    for seen in per_client:
        assert seen[0] == "fm-a"
    text = httpx.get(f"{url}/metrics").text
    assert 'marquee_model_info{model_version="fm-b"} 1.0' in text
    # a goal request on the new model still re-ranks
    goal = Constraints(goal=Goal(preset="movie_night")).model_dump(exclude_defaults=True)
    r = httpx.post(f"{url}/v1/rank", json={"user_id": world.users[0], "goal": goal}, timeout=30)
    assert r.status_code == 200 and r.json()["model_version"] == "fm-b"


def test_the_front_refuses_past_its_queue_at_once_and_lets_probes_through(served, world,
                                                                           tmp_path):
    """A front with room for one ranking in flight and one waiting, before the service: of
    24 simultaneous rankings the rest get the front's 503 (the service's error shape, with
    Retry-After); /readyz is not held back."""
    from urllib.parse import urlsplit

    from infra.front import Front, FrontConfig
    from streams.launch import free_port

    url, _ = served
    parts = urlsplit(url)
    gate = Front(FrontConfig("127.0.0.1", free_port(), parts.hostname, parts.port, inflight=1,
                             queue=1), tmp_path)
    gate.start()
    try:
        results: list[tuple[int, httpx.Response]] = []
        clients = [httpx.Client(timeout=30) for _ in range(24)]
        events = [{"event_id": f"fr{i}", "user_id": world.users[5], "action": "impression",
                   "item_id": sorted(world.catalogue)[i % 20], "ts": 1_767_225_600_000 + i,
                   "device": "tv", "surface": "home"} for i in range(300)]  # a slow request

        def call(client: httpx.Client) -> None:
            r = client.post(f"{gate.url}/v1/rank",
                            json={"user_id": world.users[5], "k": 5, "events": events})
            results.append((r.status_code, r))

        threads = [threading.Thread(target=call, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        ready = httpx.get(f"{gate.url}/readyz", timeout=30)
        for t in threads:
            t.join()
        assert ready.status_code == 200
        shed = [r for code, r in results if code == 503]
        assert {code for code, _ in results} <= {200, 503} and len(results) == 24
        assert shed and len(shed) < 24, [code for code, _ in results]
        for r in shed:  # the front's answer (timing: tests/infra/test_front.py)
            assert r.headers["retry-after"] == "1" and r.headers["content-type"].startswith(
                "application/json")
            assert "retry after 1 s" in r.json()["detail"] and "MARQUEE_REPLICAS" in \
                r.json()["detail"]
    finally:
        gate.stop()
    assert not gate.alive()
