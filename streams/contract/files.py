"""Where events to produce come from: JSON-lines files, SASRec-format files, the synthetic world.

Each reader yields wire-ready dicts (or raw lines for JSON-lines, so malformed lines reach the
broker untouched and the flow's dead-letter path sees them).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

SASREC_START_MS = 1_700_000_000_000
SASREC_STEP_MS = 60_000


def read_jsonl(path: Path) -> Iterator[bytes]:
    """Non-empty lines of a JSON-lines file, as bytes, unparsed."""
    with path.open("rb") as lines:
        for line in lines:
            line = line.strip()
            if line:
                yield line


def read_sasrec(path: Path) -> Iterator[dict[str, Any]]:
    """Events from ``user item`` lines in time order: each a ``play`` one minute after the last.

    SASRec-format files carry no timestamps, actions or context, so those are synthesized:
    increasing timestamps (line order is time order), action ``play``, device and surface
    ``unknown``.
    """
    with path.open() as lines:
        for lineno, line in enumerate(lines):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise ValueError(f"{path}:{lineno + 1}: expected 'user item', got {line!r}")
            yield {"event_id": f"sasrec-{lineno}", "user_id": parts[0], "item_id": parts[1],
                   "action": "play", "ts": SASREC_START_MS + lineno * SASREC_STEP_MS,
                   "device": "unknown", "surface": "unknown", "position": 0,
                   "watch_seconds": 0.0}


def read_sasrec_sequences(path: Path) -> dict[str, list[str]]:
    """``{user: [item, ...]}`` in file order, for training and evaluation."""
    sequences: dict[str, list[str]] = {}
    for event in read_sasrec(path):
        sequences.setdefault(event["user_id"], []).append(event["item_id"])
    return sequences


def key_of(value: bytes) -> bytes | None:
    """The message key (user_id) of a raw JSON event, or None if it has none."""
    try:
        user = orjson.loads(value).get("user_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return str(user).encode() if user is not None else None
