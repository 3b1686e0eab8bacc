"""Quarantine in one process: slots on disk, how a crash is folded, and the dataflow (Bytewax's
``run_main`` over real ``confluent_kafka.Message`` polls) restarted after each crash as a
supervisor would, until the message that crashes it is dead-lettered as poison.

The same with a real broker, real processes and a SIGKILL: ``test_flow_integration.py``.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
from bytewax.errors import BytewaxRuntimeError
from bytewax.testing import TestingSink, TestingSource, run_main
from confluent_kafka import Message

from streams.flow import FlowSettings, ItemStatsLogic, Shared, build_flow
from streams.guards import GuardedLogic, Traced, traced_ranges
from streams.quarantine import Quarantine, Slot
from tests.streams.contract.tokenizer_reference import token_tuple
from tests.streams.test_flow import shared_for, world_events

PARTITIONS = 2


def polls_of(events: list[dict], poll: int = 40) -> list[list[Message]]:
    """The events as Kafka would hold them (keyed by user: a user's events in one partition,
    in order) and a consumer would poll them: one partition per poll, partitions taking turns.
    """
    parts: list[list[Message]] = [[] for _ in range(PARTITIONS)]
    for e in events:
        p = zlib.crc32(e["user_id"].encode()) % PARTITIONS
        parts[p].append(Message(topic="events", partition=p, offset=len(parts[p]),
                                key=e["user_id"].encode(), value=json.dumps(e).encode(),
                                timestamp=(1, e["ts"])))
    chunks = [[part[i:i + poll] for i in range(0, len(part), poll)] for part in parts]
    return [c[i] for i in range(max(map(len, chunks))) for c in chunks if i < len(c)]


def run(polls: list[list[Message]], shared: Shared) -> tuple[list, list]:
    """Run the flow over ``polls``; flatten what comes out."""
    out, dead = [], []
    run_main(build_flow(TestingSource(polls), TestingSink(out), TestingSink(dead), shared))
    return out, [d for batch in dead for d in batch]


def where(polls: list[list[Message]], event_id: str) -> tuple[int, int]:
    for poll in polls:
        for m in poll:
            if json.loads(m.value())["event_id"] == event_id:
                return m.partition(), m.offset()
    raise AssertionError(event_id)


def tokens_of(out: list, shared: Shared) -> list:
    return sorted(token_tuple(t, shared.vocab) for v in out for t in getattr(v, "tokens", ()))


def supervise(polls, world, folder: Path, fault: str | None, max_starts: int = 5):
    """Start the flow until it ends; returns what the last run put out, the number of
    crashes, and each start's view of the faulty message (suspect, poison)."""
    crashes, seen = 0, []
    for _ in range(max_starts):
        shared = shared_for(world, fault=fault)
        shared.quarantine = Quarantine.open(folder)
        seen.append(shared.quarantine)
        try:
            out, dead = run(polls, shared)
        except BytewaxRuntimeError:
            crashes += 1
            continue
        return out, dead, shared, crashes, seen
    raise AssertionError(f"still crashing after {max_starts} starts")


@pytest.fixture(scope="module")
def stream():
    """Events, their polls, the faulty event's place, and the tokens of the stream without it
    and with it, run without quarantine; the reasons of the first's dead letters."""
    events, world = world_events(n_users=10, days=1)
    bad = events[len(events) // 2]
    polls = polls_of(events)
    at = where(polls, bad["event_id"])
    without = polls_of([e for e in events if e is not bad])
    shared = shared_for(world)
    out, dead = run(without, shared)
    full = shared_for(world)
    return (world, polls, bad, at, tokens_of(out, shared), sorted(d.reason for d in dead),
            tokens_of(run(polls, full)[0], full))


def test_a_step_that_raises_on_one_message_gets_it_dead_lettered_as_poison(stream, tmp_path):
    world, polls, bad, at, want_tokens, want_reasons, _ = stream
    out, dead, shared, crashes, seen = supervise(polls, world, tmp_path, f"{bad['event_id']}:raise")

    # Crash 1 names the batch (a suspect range), crash 2 the message alone (a verdict, which
    # wins over the range it stays in).
    assert crashes == 2
    assert [(q.suspect(*at) is not None, q.verdict(*at) is not None) for q in seen] == [
        (False, False), (True, False), (True, True)]
    first = seen[1].suspect(*at)
    assert first.step == "tokenize" and first.last > first.first  # a batch, not one message
    assert first.error.startswith("RuntimeError: fault drill")

    poison = [d for d in dead if d.reason == "poison"]
    assert [(d.partition, d.offset) for d in poison] == [at]
    assert json.loads(poison[0].raw) == bad
    step, advice = poison[0].problems
    assert step.startswith("step tokenize: RuntimeError: fault drill: event " + bad["event_id"])
    assert "crashed the flow 2 times" in advice
    # Everything else went through once, as in a run that never saw the faulty event.
    assert tokens_of(out, shared) == want_tokens
    assert sorted(d.reason for d in dead if d.reason != "poison") == want_reasons

    # A replay (from an older snapshot, or none) dead-letters it again without crashing.
    out, dead, shared, crashes, _ = supervise(polls, world, tmp_path, f"{bad['event_id']}:raise")
    assert crashes == 0
    assert [(d.partition, d.offset) for d in dead if d.reason == "poison"] == [at]
    assert tokens_of(out, shared) == want_tokens


def test_a_run_that_dies_of_another_message_keeps_the_earlier_suspects(stream, tmp_path):
    world, polls, bad, at, want_tokens, _, _ = stream
    with pytest.raises(BytewaxRuntimeError):  # the first bug: its batch becomes suspect
        shared = shared_for(world, fault=f"{bad['event_id']}:raise")
        shared.quarantine = Quarantine.open(tmp_path)
        run(polls, shared)
    # A second bug, on a message read before those suspects: the run dies of it in a batch.
    # Had it forgotten the first suspects, the first bug would cost another batch crash.
    early = polls[0][0]
    faults = f"{bad['event_id']}:raise,{json.loads(early.value())['event_id']}:raise"
    out, dead, shared, crashes, seen = supervise(polls, world, tmp_path, faults)
    assert crashes == 3  # the second in a batch, then alone; the first alone
    assert seen[1].suspect(*at) is not None and seen[1].suspect(0, 0) is not None
    assert sorted((d.partition, d.offset) for d in dead if d.reason == "poison") == sorted(
        [at, (early.partition(), early.offset())])


def test_suspects_that_go_through_clear_and_nothing_is_dead_lettered(stream, tmp_path):
    world, polls, bad, at, _, _, want_tokens = stream
    # The drill crashes one run; the next has the bug fixed (no drill), and reads the
    # suspects one message at a time: all go through.
    with pytest.raises(BytewaxRuntimeError):
        shared = shared_for(world, fault=f"{bad['event_id']}:raise")
        shared.quarantine = Quarantine.open(tmp_path)
        run(polls, shared)
    out, dead, shared, crashes, seen = supervise(polls, world, tmp_path, None)
    assert crashes == 0 and seen[0].suspect(*at) is not None
    assert "poison" not in {d.reason for d in dead}
    assert tokens_of(out, shared) == want_tokens  # the faulty event's included
    after = Quarantine.open(tmp_path)
    assert not after.watching  # a clean end leaves nothing to suspect


def record(path: Path) -> dict:
    return json.loads(path.read_bytes())


def test_a_slot_rewrites_in_place_and_skips_what_did_not_change(tmp_path):
    slot = Slot(tmp_path / "w.json")
    slot.begin("tokenize", ((0, 100, 4999), (3, 7, 900)))
    slot.begin("tokenize", ((1, 5, 6),))  # shorter: the padding must not leave a tail
    assert record(slot.path) == {"step": "tokenize", "ranges": [[1, 5, 6]]}
    slot.path.write_bytes(b"{}")
    slot.begin("tokenize", ((1, 5, 6),))
    assert record(slot.path) == {}  # unchanged: not written
    slot.begin_one("decode_route", 1, 7, crashes=1)
    slot.done()
    assert record(slot.path) == {"step": "decode_route", "ranges": [[1, 7, 7]], "exact": True,
                                 "crashes": 1, "done": True}


def test_folding_tells_the_culprit_from_bystanders_and_keeps_verdicts(tmp_path):
    q = Quarantine(tmp_path)
    # Four worker threads' slots when the process died: a batch in flight, a suspect alone
    # whose step raised, another suspect alone (a bystander), and one that went through.
    batch, culprit, bystander, through = (Slot(tmp_path / f"w-1-{i}.json") for i in range(4))
    batch.begin("decode_route", ((2, 10, 60),))
    culprit.begin_one("tokenize", 0, 5, crashes=1)
    try:
        {}["missing"]
    except KeyError as exc:
        culprit.failed(exc)
    bystander.begin_one("item_stats", 1, 9, crashes=1)
    through.begin_one("tokenize", 3, 4, crashes=1)
    through.done()
    q = Quarantine.open(tmp_path)
    assert not list(tmp_path.glob("w-*.json"))  # folded: the next run starts clean
    assert set(q.verdicts) == {(0, 5)}
    assert q.verdict(0, 5).crashes == 2 and "KeyError: 'missing'" in q.verdict(0, 5).error
    assert q.suspect(2, 10).crashes == 1 and q.suspect(2, 61) is None
    assert q.suspect(1, 9).crashes == 2 and q.verdict(1, 9) is None
    assert q.suspect(3, 4) is None and not q.watched(3, 0, 100)
    assert q.watched(0, 0, 5) and not q.watched(0, 6, 100)

    # A second process of the same run (no slots left to fold) sees the same.
    again = Quarantine.open(tmp_path)
    assert again.verdicts == q.verdicts and again.suspects == q.suspects

    # The next crash is a hard one (no exception anywhere) with the bystander alone in
    # flight, and an interrupted one: the verdict is added, the old one kept, and the old
    # suspects too (the run died before it could tell they were fine).
    hard, stopped = Slot(tmp_path / "w-2-0.json"), Slot(tmp_path / "w-2-1.json")
    hard.begin_one("item_stats", 1, 9, crashes=2)
    stopped.begin_one("tokenize", 3, 8, crashes=1)
    stopped.failed(KeyboardInterrupt())
    q = Quarantine.open(tmp_path)
    assert set(q.verdicts) == {(0, 5), (1, 9)}
    assert q.verdict(1, 9).problems()[0].startswith("step item_stats: no exception")
    assert "crashed the flow 3 times" in q.verdict(1, 9).problems()[1]
    assert q.suspect(2, 10).crashes == 1 and q.suspect(3, 8).crashes == 2

    # A run that ends between messages processed every suspect it read: they clear.
    Slot(tmp_path / "w-3-0.json").begin("tokenize flush", ())
    q = Quarantine.open(tmp_path)
    assert not q.suspects and set(q.verdicts) == {(0, 5), (1, 9)}


def test_item_counts_carry_their_offsets_so_a_failing_count_is_found(tmp_path):
    _, world = world_events(n_users=2, days=1)
    shared = shared_for(world)
    good = [("i1", 0, 1_700_000_000_000)]
    bad = [("i2", 7, 1_700_000_000_000)]  # no such column: the count raises
    step = GuardedLogic("item_stats", ItemStatsLogic(shared, None), Quarantine.open(tmp_path),
                        traced_ranges)
    with pytest.raises(IndexError):
        step.on_batch([Traced(good, ((1, 10, 19),)), Traced(bad, ((1, 20, 29),))])
    q = Quarantine.open(tmp_path)
    assert q.suspect(1, 10).step == "item_stats" and q.suspect(1, 29).error.startswith(
        "IndexError")
    # Next run: the suspects come one message per batch (as tokenize emits them then).
    step = GuardedLogic("item_stats", ItemStatsLogic(shared, None), q, traced_ranges)
    with pytest.raises(IndexError):
        step.on_batch([Traced(good, ((1, 20, 20),)), Traced(bad, ((1, 21, 21),))])
    q = Quarantine.open(tmp_path)
    assert set(q.verdicts) == {(1, 21)} and q.verdict(1, 21).step == "item_stats"


def test_the_drill_is_off_by_default_and_a_bad_setting_names_the_fix():
    _, world = world_events(n_users=2, days=1)
    assert shared_for(world).drill is None
    assert shared_for(world, fault="e1:raise, e2:kill").drill.faults == {"e1": "raise",
                                                                         "e2": "kill"}
    with pytest.raises(ValueError, match="write <event_id>:raise or <event_id>:kill"):
        FlowSettings(fault="e1:explode")
