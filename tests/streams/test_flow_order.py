"""Outcomes do not depend on the order in which partitions are read.

Kafka orders messages within a partition only; a flow reads its partitions in whatever order
polls return. A generated input (valid events, duplicates, late events, events dated ahead
of their Kafka timestamp, events whose key is not their user or that have no key) is laid out
on 2-4 partitions as a producer keying by user_id would (a wrong or missing key lands where
that key, or the producer, puts it), then run through the real dataflow (Bytewax with a
testing source, polls of one partition each, as ``KafkaBatchSource`` emits them) twice: one
partition after another, and in a generated interleaving of polls. Tokens, each user's final
row, each item's final row and the dead letters (partition, offset, reason and problems) must
be identical.

Vocabulary ids of values first seen during the run are assigned in arrival order, so the two
runs may number a new item differently: tokens and rows are compared with their item,
device, surface and action ids decoded back to the values they stand for.
"""

from __future__ import annotations

import json

from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.contract.tokens import Vocab
from streams.flow import FlowSettings, Shared, build_flow
from streams.records import ItemRows, TokenBatch, UserRows
from tests.streams.contract.tokenizer_reference import token_tuple
from tests.streams.messages import message, partition_of

T0 = 1_767_225_600_000
SKEW = 300_000
LATENESS = 10_000
USERS = ["u1", "u2", "u3"]
SETTINGS = dict(finish_at_eof=True, flush_s=0.01, log_flush_s=0.001, max_lateness_ms=LATENESS,
                max_future_ms=SKEW, shards=4)
DECODED = ("item", "action", "device", "surface")


@st.composite
def inputs(draw) -> tuple[int, list[list]]:
    """``(partitions, [messages of partition 0, of partition 1, ...])``."""
    n_parts = draw(st.integers(2, 4))
    clocks = {u: T0 for u in USERS}
    sent: dict[str, list[dict]] = {u: [] for u in USERS}
    parts: list[list] = [[] for _ in range(n_parts)]
    for i in range(draw(st.integers(5, 30))):
        user = draw(st.sampled_from(USERS))
        kind = draw(st.sampled_from(["valid"] * 6 + ["duplicate", "late", "future",
                                                      "wrong_key", "no_key"]))
        clocks[user] += draw(st.integers(0, 20_000))
        event = {"event_id": f"{user}-{i}", "user_id": user, "ts": clocks[user],
                 "item_id": draw(st.sampled_from(["m1", "m2", "m3", "new-item"])),
                 "action": draw(st.sampled_from(["impression", "click", "play", "stop"])),
                 "device": draw(st.sampled_from(["tv", "phone", "fridge"])),
                 "surface": draw(st.sampled_from(["home/top_picks", "row/new"]))}
        arrival = clocks[user] + draw(st.integers(0, 2_000))
        key: bytes | None = user.encode()
        if kind == "duplicate" and sent[user]:
            event = draw(st.sampled_from(sent[user]))
        elif kind == "late":
            event["ts"] = clocks[user] - LATENESS - draw(st.integers(1, 60_000))
        elif kind == "future":
            event["ts"] = arrival + SKEW + draw(st.integers(1, 10**9))
        elif kind == "wrong_key":
            key = draw(st.sampled_from([u for u in USERS if u != user])).encode()
        elif kind == "no_key":
            key = None
        sent[user].append(event)
        p = partition_of(key, n_parts, fallback=draw(st.integers(0, n_parts - 1)))
        parts[p].append(message(json.dumps(event).encode(), key, p, len(parts[p]), arrival))
    return n_parts, parts


def polls_in_order(parts: list[list], size: int) -> list[list]:
    return [part[i:i + size] for part in parts for i in range(0, len(part), size)]


@st.composite
def interleaving(draw, parts: list[list]) -> list[list]:
    """Polls of 1-4 messages from partitions picked in a generated order."""
    at = [0] * len(parts)
    polls = []
    while any(at[p] < len(parts[p]) for p in range(len(parts))):
        p = draw(st.sampled_from([p for p in range(len(parts)) if at[p] < len(parts[p])]))
        n = draw(st.integers(1, 4))
        polls.append(parts[p][at[p]:at[p] + n])
        at[p] += n
    return polls


def outcome(polls: list[list]) -> dict:
    """Run the dataflow over ``polls``; what it wrote, with vocabulary ids decoded."""
    shared = Shared(Vocab(), {}, {}, FlowSettings(**SETTINGS))
    out: list = []
    dead: list = []
    run_main(build_flow(TestingSource(polls), TestingSink(out), TestingSink(dead), shared))
    names = {f: {i: v for v, i in shared.vocab.tables[f].items()} for f in DECODED}
    users, items = {}, {}
    for value in out:
        if isinstance(value, UserRows):
            users.update({r["user_id"]: r for r in value.rows})
        elif isinstance(value, ItemRows):
            items.update({r["item_id"]: r for r in value.rows})
    for row in users.values():
        for facet in DECODED:
            row[f"{facet}_seq"] = [names[facet].get(i, "?") for i in row[f"{facet}_seq"]]
    tokens = sorted(token_tuple(t, shared.vocab) + (names["item"].get(t.item),)
                    for v in out if isinstance(v, TokenBatch) for t in v.tokens)
    letters = sorted((d.partition, d.offset, d.reason, d.problems)
                     for batch in dead for d in batch)
    return {"tokens": tokens, "users": users, "items": items, "dead": letters}


def router_refusals(parts: list[list]) -> set[tuple[int, int, str]]:
    """What the router must refuse whatever the order: keys that are not the user, and
    events dated more than the skew after their Kafka timestamp."""
    want = set()
    for part in parts:
        for m in part:
            event = json.loads(m.value())
            if m.key() != event["user_id"].encode():
                want.add((m.partition(), m.offset(), "wrong_key"))
            elif event["ts"] > m.timestamp()[1] + SKEW:
                want.add((m.partition(), m.offset(), "future"))
    return want


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(data=st.data(), generated=inputs())
def test_tokens_rows_and_dead_letters_do_not_depend_on_partition_read_order(data, generated):
    _, parts = generated
    first = outcome(polls_in_order(parts, 5))
    again = outcome(data.draw(interleaving(parts)))
    assert again == first
    by_router = {(p, o, r) for p, o, r, _ in first["dead"] if r in ("wrong_key", "future")}
    assert by_router == router_refusals(parts)
    assert {r for _, _, r, _ in first["dead"]} <= {"wrong_key", "future", "late", "duplicate"}
    assert all(problems for *_, problems in first["dead"])


def keyed(user: str, i: int, ts: int, key: bytes | None, p: int, offset: int,
          arrival: int | None = None):
    event = {"event_id": f"{user}-{i}", "user_id": user, "ts": ts, "item_id": "m1",
             "action": "add_to_list", "device": "tv", "surface": "home/top_picks"}
    return message(json.dumps(event).encode(), key, p, offset, arrival or ts)


def test_unkeyed_events_read_first_no_longer_lock_a_user_out():
    """Three of a user's events without a key land on another partition that is read first;
    the user's 36 keyed events must all count, not be refused as late behind them."""
    keyed_part = [keyed("u1", i, T0 + i * 1000, b"u1", 0, i) for i in range(36)]
    unkeyed = [keyed("u1", 100 + i, T0 + 3_600_000 + i, None, 1, i) for i in range(3)]
    got = outcome([unkeyed, keyed_part])
    assert [(p, r) for p, _, r, _ in got["dead"]] == [(1, "wrong_key")] * 3
    assert len(got["tokens"]) == 36


def test_an_event_dated_2099_does_not_make_later_events_late():
    far = keyed("u1", 0, 4_070_908_800_000, b"u1", 0, 0, arrival=T0)
    normal = [keyed("u1", i, T0 + i * 1000, b"u1", 0, i) for i in range(1, 11)]
    got = outcome([[far] + normal])
    assert [(o, r) for _, o, r, _ in got["dead"]] == [(0, "future")]
    assert len(got["tokens"]) == 10
