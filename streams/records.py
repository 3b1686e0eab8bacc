"""What travels between the flow's steps: batches, never single events.

Bytewax charges a few microseconds per item and per operator, so the flow moves one item per
poll batch and user shard (``Slice``), per flush (``UserRows``, ``ItemRows``) and per token
log write (``TokenBatch``); the per-event work is plain Python inside the steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams import dead_letters
from streams.contract.fast_events import Event
from streams.contract.tokens import Token


@dataclass(frozen=True)
class DeadLetter:
    """A refused message with its reason and origin: what goes to the dead-letter topic."""

    reason: str
    problems: tuple[str, ...]
    raw: bytes
    key: bytes | None
    partition: int
    offset: int
    timestamp: int = -1  # the Kafka record's timestamp (ms), -1 when unknown

    def to_json(self, max_bytes: int = dead_letters.DEFAULT_MAX_BYTES) -> bytes:
        """The dead-letter record (``streams.dead_letters``), at most ``max_bytes`` long."""
        return dead_letters.encode(self.reason, self.problems, self.raw, self.key,
                                   self.partition, self.offset, self.timestamp, max_bytes)


@dataclass
class Slice:
    """The valid events of one poll batch that belong to one user shard, in arrival order,
    with what a refusal needs (the raw message and where it came from) and the producer
    timestamps (ms) for the freshness histogram.
    """

    events: list[Event] = field(default_factory=list)
    produced: list[int] = field(default_factory=list)
    origins: list[tuple[bytes, bytes | None, int, int]] = field(default_factory=list)
    shard: str = ""  # the user shard's name (its state store is named after it)


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


@dataclass
class Outcomes:
    """Accepted events of one user shard that carry a ``request_id`` (for the experiment
    join), and the newest event time the shard has seen (its clock for the join window).
    """

    events: list[Event]
    watermark: int
    shard: str = ""


@dataclass
class Rankings:
    """Logged rankings of one user shard's users that ran an experiment, and the newest
    ranking time read for the shard (experiment or not).
    """

    rankings: list[Any]  # streams.outcomes.LoggedRanking
    max_ts: int
    shard: str = ""


@dataclass
class ExperimentRows:
    """Changed experiment counts of one user shard: ``(experiment, variant, mode, *counts)``
    rows (``streams.outcome_table``), absolute, so writing them again changes nothing.
    """

    shard: str
    rows: list[tuple[Any, ...]]
