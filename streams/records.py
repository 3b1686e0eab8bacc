"""What travels between the flow's steps: batches, never single events.

Bytewax charges a few microseconds per item and per operator, so the flow moves one item per
poll batch and user shard (``Slice``), per flush (``UserRows``, ``ItemRows``) and per token
log write (``TokenBatch``); the per-event work is plain Python inside the steps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from streams.contract.fast_events import Event
from streams.contract.tokens import Token


@dataclass(frozen=True)
class DeadLetter:
    """A refused event with its reason: what goes to the dead-letter topic."""

    reason: str
    problems: tuple[str, ...]
    raw: bytes
    key: bytes | None
    partition: int
    offset: int

    def to_json(self) -> bytes:
        """The dead-letter record: reason, problems, the original message and its origin."""
        return json.dumps({"reason": self.reason, "problems": list(self.problems),
                           "partition": self.partition, "offset": self.offset,
                           "raw": self.raw.decode("utf-8", "replace")}).encode()


@dataclass
class Slice:
    """The valid events of one poll batch that belong to one user shard, in arrival order,
    with what a refusal needs (the raw message and where it came from) and the producer
    timestamps (ms) for the freshness histogram.
    """

    events: list[Event] = field(default_factory=list)
    produced: list[int] = field(default_factory=list)
    origins: list[tuple[bytes, bytes | None, int, int]] = field(default_factory=list)


@dataclass
class UserRows:
    """``user_tokens`` rows (``feature_repo.store.user_row`` shape) of one flush, and the
    producer timestamps (ms) of the events they make visible.
    """

    rows: list[dict[str, Any]]
    produced: list[int]


@dataclass
class ItemRows:
    """``item_stats`` rows of one flush."""

    rows: list[dict[str, Any]]


@dataclass
class TokenBatch:
    """Final tokens for the parquet token log."""

    tokens: list[Token]
