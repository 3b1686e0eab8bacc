"""Why a valid event is refused, as a problem that says what it lost to and how to fix it.

The contract judges an event alone; these refusals judge it in its stream: a message key that
is not its user (the user's events would not stay in one partition, so their order would
depend on how partitions are read), an event time ahead of the message's arrival (it would
move the user's watermark and lock the user out), and the tokenizer's late and duplicate
refusals. Each names the value it was compared with, so a producer can find the cause.
"""

from __future__ import annotations

from datetime import UTC, datetime

from streams.contract.events import FIXES, Problem

WRONG_KEY, FUTURE, LATE, DUPLICATE = "wrong_key", "future", "late", "duplicate"


def invalid(problem: Problem) -> str:
    """The reason for an event the contract refused: ``invalid_<field>`` of its first problem
    when that is a contract field, ``invalid_unknown_field`` for a field the contract does not
    have (its name is input, so it never becomes a metric label), else ``invalid_event``.
    """
    field = problem.field.split(".")[0]
    if field in FIXES:
        return f"invalid_{field}"
    return "invalid_unknown_field" if problem.message == "unknown field" else "invalid_event"


def wrong_key(key: bytes | None, user_id: str) -> str:
    """The message key is missing or is not ``user_id``."""
    said = "the message has no key" if key is None else (
        f"message key {_cut(key)!r} is not the event's user_id {user_id!r}")
    return str(Problem("key", said, "produce with key = user_id: one user's events must "
                                    "share one partition to stay in order"))


def future(ts: int, arrival: int, max_future_ms: int) -> str:
    """The event time is more than ``max_future_ms`` after the message's arrival."""
    return str(Problem(
        "ts", f"{ts} ({_when(ts)}) is {ts - arrival} ms after the message's arrival "
              f"{arrival} ({_when(arrival)}: its Kafka timestamp, or the flow's clock when "
              f"that was earlier), at most {max_future_ms} ms "
              "is allowed",
        "send the time the event happened, from a synced clock (epoch ms); if producers' "
        "clocks are that far ahead, raise MARQUEE_FLOW_MAX_FUTURE_MS"))


def late(ts: int, user_id: str, watermark: int, max_lateness_ms: int) -> str:
    """The event is older than the user's newest event time by more than the lateness bound."""
    return str(Problem(
        "ts", f"{ts} ({_when(ts)}) is {watermark - ts} ms before the watermark of user "
              f"{user_id!r}, {watermark} ({_when(watermark)}: its newest event time accepted), "
              f"more than the max lateness of {max_lateness_ms} ms",
        "deliver a user's events within the max lateness of each other in event time, or "
        "raise MARQUEE_FLOW_MAX_LATENESS_MS"))


def duplicate(event_id: str, first_ts: int) -> str:
    """An event with this id was already accepted for the user."""
    return str(Problem(
        "event_id", f"duplicate of event_id {event_id!r} first accepted with ts {first_ts} "
                    f"({_when(first_ts)})",
        "give each event its own event_id; a retried send of the same event is dropped "
        "here on purpose"))


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _cut(key: bytes, limit: int = 64) -> bytes:
    return key if len(key) <= limit else key[:limit] + b"..."
