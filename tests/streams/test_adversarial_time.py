"""A hostile (or badly clocked) producer against the flow's notion of time.

The ``future`` refusal exists so that one event dated ahead cannot move a user's watermark
and make the user's later events late (``streams.refusals``). It compares the event time with
the Kafka record's timestamp; but a CreateTime record's timestamp is set by the producer, so
the same producer (or the same fast clock) that dates the event ahead dates the record ahead
too, and the check passes. One such message then locks a user out (every real event after
it is ``late``) and freezes an item's windowed counters (every real play after it is
outside the item's 24 h window), until the wall clock reaches the forged time.

These run the real flow (Bytewax ``run_main``) over real ``confluent_kafka.Message`` objects
as the Kafka source would hand them over; the broker keeps a producer's CreateTime as sent
(see ``test_adversarial_stream_integration.py`` for the same through a broker).
"""

from __future__ import annotations

import json
import time

from bytewax.testing import TestingSink, TestingSource, run_main

from streams.contract.tokens import Vocab
from streams.flow import DEAD, FlowSettings, Router, Shared, build_flow
from streams.records import DeadLetter, ItemRows
from tests.streams.messages import message

DAY_MS = 86_400_000


def event(event_id: str, user: str, ts: int, item: str = "m1") -> dict:
    return {"event_id": event_id, "user_id": user, "item_id": item, "action": "play", "ts": ts,
            "device": "tv", "surface": "home/top_picks"}


def run(msgs: list) -> tuple[list, list[DeadLetter]]:
    shared = Shared(Vocab(), {}, {}, FlowSettings(finish_at_eof=True, flush_s=0.01,
                                                  log_flush_s=0.001))
    out, dead = [], []
    run_main(build_flow(TestingSource([msgs]), TestingSink(out), TestingSink(dead), shared))
    return out, [d for batch in dead for d in batch]


def test_a_kafka_timestamp_ahead_of_the_clock_does_not_admit_a_future_event():
    now = int(time.time() * 1000)
    ahead = now + DAY_MS
    router = Router(Shared(Vocab(), {}, {}, FlowSettings()))
    out = router([message(json.dumps(event("f1", "u1", ahead)).encode(), b"u1", 0, 0, ahead)])
    dead = [d for name, batch in out if name == DEAD for d in batch]
    assert [d.reason for d in dead] == ["future"], (
        "an event dated a day ahead was accepted because its record's (producer-set) "
        "timestamp was dated a day ahead too")


def test_one_forged_event_does_not_lock_a_user_out():
    now = int(time.time() * 1000)
    forged = now + 30 * DAY_MS
    msgs = [message(json.dumps(event("a1", "victim", now - 60_000)).encode(), b"victim", 0, 0,
                    now - 60_000),
            message(json.dumps(event("x1", "victim", forged)).encode(), b"victim", 0, 1, forged)]
    msgs += [message(json.dumps(event(f"a{i}", "victim", now + i)).encode(), b"victim", 0, 1 + i,
                     now + i) for i in range(2, 12)]
    _, dead = run(msgs)
    late = [d.offset for d in dead if d.reason == "late"]
    assert not late, (f"{len(late)} of the user's real events after one forged event were "
                      f"refused as late: {dead[-1].problems[0][:160]}")


def test_one_forged_play_does_not_freeze_an_items_counters():
    now = int(time.time() * 1000)
    forged = now + 30 * DAY_MS
    plays = [event(f"p{i}", f"user{i}", now - 1_000 + i) for i in range(5)]
    later = [event(f"q{i}", f"user{i}", now + i) for i in range(5)]
    msgs = [message(json.dumps(e).encode(), e["user_id"].encode(), 0, i, e["ts"])
            for i, e in enumerate(plays)]
    msgs.append(message(json.dumps(event("x1", "mallory", forged)).encode(), b"mallory", 0, 5,
                        forged))
    msgs += [message(json.dumps(e).encode(), e["user_id"].encode(), 0, 6 + i, e["ts"])
             for i, e in enumerate(later)]
    out, _ = run(msgs)
    rows = [r for v in out if isinstance(v, ItemRows) for r in v.rows if r["item_id"] == "m1"]
    last = rows[-1]
    assert last["plays_24h"] >= 10, (
        f"item m1 shows plays_24h={last['plays_24h']} after 10 real plays in the last minute: "
        f"one play dated {forged - now} ms ahead moved its window to "
        f"{last['event_timestamp']}")
