"""The HTTP edge of the service: no input, however hostile, becomes a 5xx.

- ``BodyLimit`` answers 413 (naming the limit) before a body over ``max_body_bytes`` is read
  into memory: by ``Content-Length`` at once, by counting for a chunked upload.
- Error handlers answer with ``ApiError`` and never echo the input: FastAPI's default 422 echoes
  every bad value, and a NaN or a lone surrogate in it made that answer itself fail (500).
- ``publish_limits`` makes the OpenAPI document say what is enforced (``k`` up to ``k_max``,
  the body limit), so a client generated from it is never refused for a value it allows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.json_values import printable
from serve.schemas import ApiError
from streams.contract.events import json_schema as event_json_schema

DEFAULT_MAX_BODY_BYTES = 1 << 20
MAX_ERRORS = 20  # per answer; a body of 1,000 bad values gets the first 20 and a count
_FASTAPI_UNPARSEABLE = "There was an error parsing the body"  # FastAPI's own 400 detail

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ApiError, "description": "the body is not UTF-8 JSON"},
    413: {"model": ApiError, "description": "the body is larger than max_body_bytes "
                                            "(MARQUEE_MAX_BODY_BYTES, default 1 MiB)"},
    422: {"model": ApiError, "description": "a bad request; the detail says what to fix"},
    503: {"description": "overloaded: shed at the proxy (queue full) or dropped when the "
                         "request's deadline passed (X-Request-Timeout-Ms), or not ready; "
                         "Retry-After says when to try again"},
}


def error_response(status: int, detail: str | list[dict[str, Any]]) -> Response:
    """An ``ApiError`` body that always encodes (ASCII escapes, finite numbers only)."""
    body = json.dumps({"detail": detail}, ensure_ascii=True, allow_nan=False)
    return Response(body, status_code=status, media_type="application/json")


def field_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors as ``FieldError`` dicts: location, message, type; no input, no ctx."""
    out = []
    for err in errors[:MAX_ERRORS]:
        loc = [p if isinstance(p, int) else printable(str(p), 64) for p in err.get("loc", ())]
        msg = printable(str(err.get("msg", "")), 400)
        if err.get("type") == "json_invalid":
            why = printable(str((err.get("ctx") or {}).get("error", "")), 100)
            msg = f"the body is not JSON ({why} at character {loc[-1]}); send one JSON object"
        out.append({"loc": loc, "msg": msg, "type": str(err.get("type", "invalid"))})
    if len(errors) > MAX_ERRORS:
        out.append({"loc": ["body"], "msg": f"and {len(errors) - MAX_ERRORS} more problems; "
                    "fix these first", "type": "more_errors"})
    return out


async def on_validation_error(request: Request, exc: Exception) -> Response:
    """422 listing each problem without echoing the input."""
    assert isinstance(exc, RequestValidationError)
    return error_response(422, field_errors(list(exc.errors())))


async def on_http_error(request: Request, exc: Exception) -> Response:
    """Any ``HTTPException`` as an ``ApiError`` (FastAPI's bare 400 gets its fix)."""
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    if exc.status_code == 400 and detail == _FASTAPI_UNPARSEABLE:
        detail = "the body could not be read as JSON text; send a JSON object encoded as UTF-8"
    response = error_response(exc.status_code, printable(str(detail), 2000))
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


class BodyLimit:
    """Refuse request bodies over ``app.state.max_body_bytes`` with a 413 that names the limit.

    The body is read here, up to the limit, and handed on whole: the app never buffers more
    than the limit, and the 413 goes out before the app has started an answer.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the body up to the limit, then call the app with it (or answer 413)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = getattr(scope.get("app"), "state", None)
        limit = int(getattr(state, "max_body_bytes", DEFAULT_MAX_BODY_BYTES))
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(limit, declared)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([], message, receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(limit, None)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(chunks, None, receive), send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int, declared: int | None) -> Response:
    size = f"{declared} bytes" if declared is not None else "more than that"
    return error_response(413, f"the body is {size}; the limit is {limit} bytes "
                               "(max_body_bytes): send less (fewer events or candidates), or "
                               "raise MARQUEE_MAX_BODY_BYTES")


def _replay(chunks: list[bytes], pending: Message | None, receive: Receive
            ) -> Callable[[], Any]:
    """A ``receive`` that gives the buffered body once, then the real channel (disconnects)."""
    first: list[Message] = [pending] if pending is not None else [
        {"type": "http.request", "body": b"".join(chunks), "more_body": False}]

    async def replay() -> Message:
        return first.pop() if first else await receive()

    return replay


def install(app: FastAPI) -> None:
    """Add the error handlers and the body limit to ``app`` (before its first request)."""
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_middleware(BodyLimit)


def publish_limits(app: FastAPI, k_max: int, max_body_bytes: int) -> None:
    """Make ``app``'s OpenAPI document state the configured limits, and enforce the body one."""
    app.state.max_body_bytes = max_body_bytes
    build = FastAPI.openapi.__get__(app)
    app.openapi_schema = None

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            _set_k_max(schema, k_max)
            events = schema["components"]["schemas"].get("InteractionEvent")
            if events is not None:  # the contract's own ts: epoch ms or RFC 3339
                events["properties"]["ts"] = event_json_schema()["properties"]["ts"]
            for path in schema.get("paths", {}).values():
                for op in path.values():
                    too_large = op.get("responses", {}).get("413")
                    if too_large is not None:
                        too_large["description"] = (
                            f"the body is larger than {max_body_bytes} bytes (max_body_bytes)")
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _set_k_max(schema: dict[str, Any], k_max: int) -> None:
    try:
        k = schema["components"]["schemas"]["RankRequest"]["properties"]["k"]
    except KeyError:
        raise RuntimeError("the OpenAPI document has no RankRequest.k; update "
                           "serve.http_guard.publish_limits to the new request schema") from None
    branches = [b for b in k.get("anyOf", [k]) if b.get("type") == "integer"]
    if not branches:
        raise RuntimeError("RankRequest.k is not an integer in the OpenAPI document; update "
                           "serve.http_guard.publish_limits")
    for branch in branches:
        branch["maximum"] = k_max
