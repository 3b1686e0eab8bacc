"""The event contract: what one interaction event on the wire is, and how it is checked.

Producers write JSON objects, one per Kafka message, keyed by ``user_id`` so that a user's
events stay ordered inside one partition. ``validate_event`` returns *every* problem of a
bad event, each naming the field and the fix, so a dead-letter record tells its producer
exactly what to change.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SCHEMA_VERSION = 1
REQUEST_ID_PATTERN = "^[0-9a-f]{32}$"  # what /v1/rank answers: uuid4().hex


class Action(StrEnum):
    """What the user did. ``resume`` is a play after a pause; ``search`` may omit the item."""

    IMPRESSION = "impression"
    CLICK = "click"
    PLAY = "play"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    COMPLETE = "complete"
    RATE = "rate"
    ADD_TO_LIST = "add_to_list"
    SEARCH = "search"


def parse_ts(value: Any) -> int:
    """Epoch milliseconds from an int/float (ms) or an RFC 3339 string with a zone."""
    if isinstance(value, bool):
        raise ValueError("not a timestamp")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("not a finite number")  # int() would raise OverflowError
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("a fraction of a millisecond")  # the schema says integer
        ms = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isascii() and text.lstrip("-").isdigit():
            ms = int(text)
        else:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            if dt.tzinfo is None:
                raise ValueError("RFC 3339 timestamp without a zone")
            ms = int(dt.timestamp() * 1000)
    else:
        raise ValueError("not a timestamp")
    if not 946_684_800_000 <= ms <= 4_102_444_800_000:  # 2000-01-01 .. 2100-01-01
        raise ValueError("out of range")
    return ms


class InteractionEvent(BaseModel):
    """One user interaction, version 1 of the contract (see README, "The event contract")."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True,
                              allow_inf_nan=False)

    v: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(min_length=1, max_length=128)
    user_id: str = Field(min_length=1, max_length=128)
    item_id: str = Field(default="", max_length=128)
    action: Action
    ts: int
    device: str = Field(min_length=1, max_length=32)
    surface: str = Field(min_length=1, max_length=64)
    position: int = Field(default=0, ge=0, le=100_000)
    watch_seconds: float = Field(default=0.0, ge=0.0, le=86_400.0)
    session_id: str | None = Field(default=None, max_length=128)
    value: float | None = None
    request_id: str | None = Field(default=None, pattern=REQUEST_ID_PATTERN,
                                   description="the request_id of the /v1/rank answer that "
                                   "showed the item (impressions, and the clicks and plays "
                                   "that follow); joins the event to the logged ranking")

    @field_validator("ts", mode="before")
    @classmethod
    def _ts(cls, value: Any) -> int:
        return parse_ts(value)

    @field_validator("v", mode="before")
    @classmethod
    def _v(cls, value: Any) -> Any:
        if isinstance(value, bool):  # True == 1 in Python; the schema wants the integer
            raise ValueError("a boolean, not the integer 1")
        return value

    @field_validator("device", "surface", mode="after")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @model_validator(mode="after")
    def _item_required(self) -> InteractionEvent:
        if not self.item_id and self.action is not Action.SEARCH:
            raise ValueError("item_id: missing; every action but search names the item it is about")
        return self

    def to_json(self) -> bytes:
        """Compact JSON for the wire, without unset optional fields."""
        return self.model_dump_json(exclude_none=True).encode()


# The fix to print for each field, whatever the pydantic error was.
FIXES: dict[str, str] = {
    "v": f"schema version; omit it or send {SCHEMA_VERSION}",
    "event_id": "a unique non-empty string (<= 128 chars) per event; duplicates are dropped",
    "user_id": "a non-empty string (<= 128 chars); it is also the message key",
    "item_id": "the title's id as a string (<= 128 chars)",
    "action": "one of " + ", ".join(a.value for a in Action),
    "ts": "epoch milliseconds or RFC 3339 expected (e.g. 1767225600000 or 2026-01-01T00:00:00Z)",
    "device": "a short device name such as tv, phone, tablet, web",
    "surface": "the row or canvas the item was shown on, e.g. home/continue_watching",
    "position": "an integer slot index >= 0 on the surface",
    "watch_seconds": "seconds watched as a number in [0, 86400]",
    "session_id": "an optional string (<= 128 chars)",
    "value": "an optional number (a rating, say)",
    "request_id": "the request_id of the /v1/rank answer that showed the item, as it was "
                  "answered (32 lowercase hex digits); omit it when no ranking showed it",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an event: the field, what is wrong, and how to fix it."""

    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}; {self.fix}"


MAX_UNKNOWN = 10  # unknown fields past this are counted, not each described
FIX_UNKNOWN = "remove it; the contract is in infra/schemas/"


def _problems_from(error: ValidationError) -> list[Problem]:
    problems = []
    for err in error.errors(include_url=False):
        loc = ".".join(str(part) for part in err["loc"]) or "event"
        kind = err["type"]
        if kind == "missing":
            message = "missing"
        elif kind == "extra_forbidden":
            message = "unknown field"
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
        if loc == "event" and ":" in message:  # model-level checks name their own field
            loc, message = (part.strip() for part in message.split(";")[0].split(":", 1))
        fix = FIXES.get(loc, FIX_UNKNOWN)
        if len(loc) > 128:  # an unknown field's name is input: keep the problem short
            loc = loc[:128] + "..."
        problems.append(Problem(loc, message, fix))
    return problems


def _no_constant(name: str) -> float:
    """``json.loads`` hook for ``NaN``/``Infinity``: JSON has no such numbers (RFC 8259)."""
    raise ValueError(f"{name} is not a JSON number")


def validate_event(
    raw: bytes | str | dict[str, Any],
) -> tuple[InteractionEvent | None, list[Problem]]:
    """Parse and check one event; returns ``(event, [])`` or ``(None, problems)``, never raises.

    Whatever a parser can raise on hostile input (nesting too deep for the recursion limit,
    invalid UTF-8, integers past Python's digit limit, ...) is a problem with the event,
    not an error of the caller: one bad message must not stop a stream.
    """
    if isinstance(raw, bytes | str):
        try:
            raw = json.loads(raw, parse_constant=_no_constant)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            return None, [Problem("event", f"not JSON ({_short(exc)})",
                                  "send one JSON object per message, UTF-8 encoded")]
    if not isinstance(raw, dict):
        return None, [Problem("event", f"a JSON {type(raw).__name__}", "send a JSON object")]
    unknown = [k for k in raw if k not in FIXES]
    if len(unknown) > MAX_UNKNOWN:  # pydantic would build an error for each: cost bounded
        return None, [Problem(k if len(k) <= 128 else k[:128] + "...", "unknown field",
                              FIX_UNKNOWN)
                      for k in unknown[:MAX_UNKNOWN]] + [Problem(
            "event", f"{len(unknown)} unknown fields", FIX_UNKNOWN)]
    try:
        return InteractionEvent.model_validate(raw), []
    except ValidationError as exc:
        return None, _problems_from(exc)
    except Exception as exc:  # noqa: BLE001 - e.g. RecursionError in a deep field value
        return None, [Problem("event", f"could not be checked ({_short(exc)})",
                              "send one flat JSON object with the contract's fields")]


def _short(exc: BaseException, limit: int = 200) -> str:
    """The exception as one short line (a message can quote the whole input)."""
    text = f"{type(exc).__name__}: {exc}" if isinstance(exc, RecursionError) else str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the wire format, as shipped in ``infra/schemas/``."""
    schema = InteractionEvent.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://marquee.dev/schemas/interaction-event/v{SCHEMA_VERSION}.json"
    props = schema["properties"]
    props["ts"] = {
        "description": "epoch milliseconds, or an RFC 3339 string with a zone",
        "anyOf": [{"type": "integer"}, {"type": "string", "format": "date-time"}],
    }
    return schema


def tansu_schema() -> dict[str, Any]:
    """The same contract wrapped the way Tansu's file schema registry expects (``value``).

    The message key (a bare user id, not JSON) is left unchecked.
    """
    inner = json_schema()
    inner.pop("$defs", None)
    inner.pop("$schema", None)
    inner.pop("$id", None)
    inner["properties"]["action"] = {"enum": [a.value for a in Action], "type": "string"}
    return {"title": "marquee.events", "type": "object", "properties": {"value": inner}}


def write_schema_files(folder: Path, events_topic: str = "marquee.events") -> list[Path]:
    """Write the contract (``interaction-event.v1.json``) and Tansu's ``<topic>.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    contract = folder / f"interaction-event.v{SCHEMA_VERSION}.json"
    broker = folder / f"{events_topic}.json"
    contract.write_text(json.dumps(json_schema(), indent=2) + "\n")
    broker.write_text(json.dumps(tansu_schema(), indent=2) + "\n")
    return [contract, broker]
