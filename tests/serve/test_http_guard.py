"""The HTTP edge without Ray: the service's own guards on a small FastAPI app that takes a
``RankRequest``, driven over ASGI. Each hostile input of the issue gets a 4xx that names the fix,
never a 500."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, HTTPException

from serve import http_guard
from serve.schemas import RankRequest

LIMIT = 4096
EVENT = {"event_id": "e1", "user_id": "u", "item_id": "i1", "action": "play",
         "ts": 1767300000000, "device": "tv", "surface": "home"}


def _app() -> FastAPI:
    app = FastAPI()
    http_guard.install(app)

    @app.post("/v1/rank", responses=http_guard.ERROR_RESPONSES)
    async def rank(req: RankRequest) -> dict[str, object]:
        if req.k == 99:  # a check past validation, as Ranker.prepare raises for k > k_max
            raise HTTPException(422, "k=99 is more than k_max=50; ask for fewer")
        return {"user_id": req.user_id, "k": req.k, "explain": req.explain}

    http_guard.publish_limits(app, k_max=50, max_body_bytes=LIMIT)
    return app


APP = _app()


def _post(content: bytes | str | AsyncIterator[bytes],
          headers: dict[str, str] | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=APP, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/v1/rank", content=content, headers={
                "content-type": "application/json", **(headers or {})})

    return asyncio.run(go())


@pytest.mark.parametrize(("body", "where", "fix"), [
    ('{"user_id": "\\ud800"}', "user_id", "send valid Unicode"),
    ('{"user_id": "u", "k": NaN}', "k is nan", "send a finite number"),
    ('{"user_id": "u", "k": -Infinity}', "k is -inf", "send a finite number"),
    (json.dumps({"user_id": "u", "events": [EVENT]})[:-1].replace(
        '"surface": "home"}', '"surface": "home", "watch_seconds": NaN}') + "}",
     "events[0].watch_seconds is nan", "send a finite number"),
    ('{"user_id": "u", "goal": {"\\udfff": 1}}', "goal has a key", "send valid Unicode"),
    ('{"user_id": "u", "explain": 0}', "explain", "valid boolean"),
    ('{"user_id": "u", "k": "5"}', "k", "valid integer"),
    (json.dumps({"user_id": "u", "events": [{**EVENT, "position": True}]}),
     "events[0].position is a JSON boolean", "send a JSON integer"),
    (json.dumps({"user_id": "u", "events": [{**EVENT, "watch_seconds": "1.5"}]}),
     "events[0].watch_seconds is a JSON string", "send a JSON number"),
    (json.dumps({"user_id": "u", "goal": {"min_new_share": False}}), "min_new_share",
     "valid number"),
])
def test_hostile_values_get_422_naming_the_fix(body: str, where: str, fix: str) -> None:
    r = _post(body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    text = json.dumps(detail)
    assert where in text and fix in text, text
    assert "input" not in detail[0]
    json.dumps(detail, ensure_ascii=False).encode("utf-8")  # no lone surrogate in the answer


def test_the_422_never_echoes_the_input() -> None:
    secret = "x" * 1000 + "-secret"
    r = _post(json.dumps({"user_id": "u", "colour": secret}))
    assert r.status_code == 422 and "colour" in r.text and "secret" not in r.text


def test_many_problems_are_counted_not_listed() -> None:
    r = _post(json.dumps({"user_id": "u", "candidates": [""] * 100}))
    detail = r.json()["detail"]
    assert r.status_code == 422 and len(detail) == http_guard.MAX_ERRORS + 1
    assert detail[-1]["msg"].startswith("and 80 more problems")


def test_unparseable_bodies_get_400_or_422_with_the_fix() -> None:
    r = _post(b'{"user_id": "\xff"}')
    assert r.status_code == 400 and "UTF-8" in r.json()["detail"]
    r = _post('{"user_id": ')
    assert r.status_code == 422 and "send one JSON object" in r.text


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_limit_gets_413_naming_the_limit(chunked: bool) -> None:
    body = json.dumps({"user_id": "u", "candidates": ["c" * 100] * 60}).encode()
    assert len(body) > LIMIT

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    r = _post(chunks() if chunked else body)
    assert r.status_code == 413 and f"the limit is {LIMIT} bytes" in r.json()["detail"]
    assert ("more than that" if chunked else f"is {len(body)} bytes") in r.json()["detail"]


def test_a_body_under_the_limit_passes_whole() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"user_id": "u",'
        yield b' "k": 7, "explain": true}'

    r = _post(chunks())
    assert r.status_code == 200 and r.json() == {"user_id": "u", "k": 7, "explain": True}


def test_the_openapi_document_states_the_enforced_limits() -> None:
    doc = APP.openapi()
    k = doc["components"]["schemas"]["RankRequest"]["properties"]["k"]
    assert [b["maximum"] for b in k["anyOf"] if b.get("type") == "integer"] == [50]
    responses = doc["paths"]["/v1/rank"]["post"]["responses"]
    assert {"400", "413", "422", "503"} <= set(responses)
    assert str(LIMIT) in responses["413"]["description"]
    ts = doc["components"]["schemas"]["InteractionEvent"]["properties"]["ts"]
    assert {b["type"] for b in ts["anyOf"]} == {"integer", "string"}  # as the contract takes
    rfc3339 = {**EVENT, "ts": "2026-01-01T00:00:00Z", "user_id": "u"}
    assert _post(json.dumps({"user_id": "u", "events": [rfc3339]})).status_code == 200
    assert _post('{"user_id": "u", "k": 99}').json() == {
        "detail": "k=99 is more than k_max=50; ask for fewer"}
