"""The dead-letter record: a refused message, its reason and its origin, sized to fit the topic.

A dead letter must never be what stops the flow. Kafka refuses a message larger than the
topic's ``max.message.bytes`` (about 1 MB by default), and a refused message can be any size
and any bytes, so the record is bounded here (``max_bytes``, the whole JSON value; the Kafka key
at most ``KEY_MAX`` bytes): what does not fit is cut, and the record keeps the original's size,
SHA-256, partition and offset, so the original can always be found in the events topic.

A message that is valid UTF-8 travels as text (``raw``); any other bytes as base64
(``raw_b64``, 4 bytes per 3): escaping invalid bytes one by one would make a record up to six
times larger than its message. The format is in docs/contracts.md, "The dead-letter topic".
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any

import orjson

DEFAULT_MAX_BYTES = 256 * 1024
MIN_MAX_BYTES = 32 * 1024  # room for the bounded fields below, whatever they hold
KEY_MAX = 1024  # bytes of the original key kept (record and dead-letter message key)
PROBLEMS_MAX = 10  # problems listed; the rest are counted
PROBLEM_CHARS = 300  # characters kept of each problem


def encode(reason: str, problems: Sequence[str], raw: bytes, key: bytes | None,
           partition: int, offset: int, timestamp: int,
           max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The JSON dead-letter record, at most ``max_bytes`` long (the raw message is cut to fit)."""
    if max_bytes < MIN_MAX_BYTES:
        raise ValueError(f"dead-letter max_bytes must be >= {MIN_MAX_BYTES}, got {max_bytes}")
    record: dict[str, Any] = {
        "reason": _text(reason), "problems": _problems(problems), "partition": partition,
        "offset": offset, "timestamp": timestamp, **_key_fields(key),
        "raw_bytes": len(raw), "raw_sha256": hashlib.sha256(raw).hexdigest(),
        "truncated": False}
    try:
        text: str | None = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    field = "raw" if text is not None else "raw_b64"
    room = max_bytes - len(orjson.dumps({**record, field: ""}))  # "false" > "true"
    if text is not None:
        kept = _fit_text(text, room)
        record["truncated"] = len(kept) < len(text)
        record[field] = kept
    else:
        cut = raw[:room // 4 * 3]
        record["truncated"] = len(cut) < len(raw)
        record[field] = base64.b64encode(cut).decode("ascii")
    return orjson.dumps(record)


def kafka_key(key: bytes | None) -> bytes | None:
    """The dead letter's own message key: the original key, cut to ``KEY_MAX`` bytes."""
    return key if key is None or len(key) <= KEY_MAX else key[:KEY_MAX]


def original(record: dict[str, Any]) -> bytes:
    """The message bytes a decoded record carries (all of them unless ``truncated``)."""
    if "raw_b64" in record:
        return base64.b64decode(record["raw_b64"])
    return record["raw"].encode("utf-8")


def _key_fields(key: bytes | None) -> dict[str, Any]:
    """``key`` as text when it is short UTF-8, else a base64 prefix and the key's length."""
    if key is None:
        return {"key": None}
    if len(key) <= KEY_MAX:
        try:
            return {"key": key.decode("utf-8")}
        except UnicodeDecodeError:
            pass
    return {"key_b64": base64.b64encode(key[:KEY_MAX]).decode("ascii"), "key_bytes": len(key)}


def _problems(problems: Sequence[str]) -> list[str]:
    out = [_text(p)[:PROBLEM_CHARS] for p in problems[:PROBLEMS_MAX]]
    if len(problems) > PROBLEMS_MAX:
        out.append(f"... and {len(problems) - PROBLEMS_MAX} more problems")
    return out


def _text(value: str) -> str:
    """``value`` with lone surrogates (JSON escapes of half a UTF-16 pair) spelled
    out as backslash escapes: JSON encoders refuse them.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _fit_text(text: str, room: int) -> str:
    """The longest prefix of ``text`` whose JSON string body takes at most ``room`` bytes
    (escapes make a character take 1 to 6 bytes, so cut in proportion, then check).
    """
    n = min(len(text), max(room, 0))
    while n > 0:
        size = len(orjson.dumps(text[:n])) - 2
        if size <= room:
            return text[:n]
        n = min(n - 1, n * room // size)
    return ""
