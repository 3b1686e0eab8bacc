"""The flow's first step: any message is routed or dead-lettered with a reason, never raised."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from streams import metrics
from streams.contract.tokens import KNOWN_VALUES, Vocab
from streams.flow import DEAD, OTHER, FlowSettings, Router, Shared
from streams.shared_vocab import SharedVocab
from tests.streams.messages import message

SENT = 1_767_225_600_000  # the messages' Kafka timestamp (arrival)
GOOD = {"event_id": "e1", "user_id": "u1", "item_id": "m1", "action": "play", "ts": SENT,
        "device": "tv", "surface": "home/top_picks"}


def router(vocab: Vocab | None = None, **settings) -> Router:
    return Router(Shared(vocab or Vocab(), {}, {}, FlowSettings(**settings)))


def routed(r: Router, msgs: list) -> tuple[list, list]:
    out = r(msgs)
    events = [ev for name, sl in out if name != DEAD for ev in sl.events]
    dead = [d for name, batch in out if name == DEAD for d in batch]
    return events, dead


def msg(event: dict, key: bytes | None = b"u1", offset: int = 0, timestamp: int = SENT):
    return message(json.dumps(event).encode(), key, 2, offset, timestamp)


def test_a_key_other_than_the_user_or_none_is_wrong_key():
    events, dead = routed(router(), [msg(GOOD), msg(GOOD, b"u2", 1), msg(GOOD, None, 2)])
    assert [e.event_id for e in events] == ["e1"]
    assert [(d.reason, d.offset, d.key) for d in dead] == [("wrong_key", 1, b"u2"),
                                                          ("wrong_key", 2, None)]
    assert dead[0].problems == ("key: message key b'u2' is not the event's user_id 'u1'; "
                                "produce with key = user_id: one user's events must share one "
                                "partition to stay in order",)
    assert dead[1].problems[0].startswith("key: the message has no key;")


def test_future_is_judged_against_the_kafka_timestamp_not_the_clock():
    r = router(max_future_ms=300_000)
    ok_ts, far_ts = SENT + 300_000, SENT + 300_001
    events, dead = routed(r, [msg({**GOOD, "ts": ok_ts}), msg({**GOOD, "ts": far_ts,
                                                                "event_id": "e2"}, offset=1)])
    # The clock reads months after SENT: only the record's timestamp can refuse e2.
    assert [e.event_id for e in events] == ["e1"]
    assert [(d.reason, d.offset, d.timestamp) for d in dead] == [("future", 1, SENT)]
    assert "300001 ms after the message's arrival" in dead[0].problems[0]
    # The same event sent later is on time: a replay decides as the first read did.
    events, dead = routed(r, [msg({**GOOD, "ts": far_ts}, timestamp=SENT + 1)])
    assert len(events) == 1 and not dead


def test_devices_and_surfaces_past_the_cap_become_other_and_are_counted(tmp_path: Path):
    for vocab in (Vocab(), SharedVocab(tmp_path / "vocab.json")):
        for facet, values in KNOWN_VALUES.items():
            for v in values:
                vocab.id(facet, v)
        r = router(vocab, max_facet_values=16)
        before = metrics.VOCAB_OVERFLOW.labels(facet="device")._value.get()
        devices = [f"dev-{i}" for i in range(20)]
        events, dead = routed(r, [msg({**GOOD, "event_id": f"e{i}", "device": d}, offset=i)
                                  for i, d in enumerate(devices + devices[:3])])
        assert not dead
        table = vocab.tables["device"]
        assert len(table) == 16 + 1 and table[OTHER] == 2 + 16  # the cap, then `other`
        kept = [d for d in devices if d in table]
        assert kept == devices[:16 - len(KNOWN_VALUES["device"])]
        assert [e.device for e in events] == [d if d in kept else OTHER
                                              for d in devices + devices[:3]]
        overflow = metrics.VOCAB_OVERFLOW.labels(facet="device")._value.get() - before
        assert overflow == len(devices) - len(kept)
        assert len(vocab.tables["surface"]) == len(KNOWN_VALUES["surface"])  # no overflow


POISON = st.one_of(
    st.binary(max_size=300), st.none(),  # None: a tombstone (a message without a value)
    st.just(b"[" * 100_000), st.just(b'{"value": ' + b"{" * 50_000),
    st.just(b"\xff" * 50_000), st.just(json.dumps({**GOOD, "item_id": "x" * 100_000}).encode()),
    st.builds(lambda d: json.dumps({**GOOD, **d}).encode(), st.dictionaries(
        st.sampled_from([*GOOD, "value", "position", "watch_seconds", "x"]),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                  st.lists(st.integers(), max_size=2)), max_size=3)),
)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(POISON, max_size=8),
       keys=st.lists(st.one_of(st.none(), st.binary(max_size=10), st.just(b"u1")), min_size=8,
                     max_size=8))
def test_no_message_value_or_key_makes_the_router_raise(values, keys):
    msgs = [message(v, keys[i], 0, i, SENT) for i, v in enumerate(values)]
    out = router()(msgs)
    routed_at = [o[3] for name, sl in out if name != DEAD for o in sl.origins]
    dead = [d for name, batch in out if name == DEAD for d in batch]
    assert sorted(routed_at + [d.offset for d in dead]) == list(range(len(msgs)))  # each once
    assert all(d.reason and d.problems for d in dead)
    assert all(msgs[at].key() == b"u1" for at in routed_at)


def test_unique_devices_and_surfaces_cannot_grow_the_vocabulary_files(tmp_path: Path):
    """The issue's case: 20,000 events, each with a new device and surface."""
    vocab = SharedVocab(tmp_path / "vocab.json")
    for facet, values in KNOWN_VALUES.items():
        vocab.ensure(facet, values)
    size = sum(p.stat().st_size for p in tmp_path.iterdir())
    r = router(vocab)
    cap = r.shared.settings.max_facet_values
    msgs = [msg({**GOOD, "event_id": f"e{i}", "device": f"d{i}", "surface": f"s{i}"},
                offset=i) for i in range(20_000)]
    events, dead = [], []
    for start in range(0, len(msgs), 5000):
        got, refused = routed(r, msgs[start:start + 5000])
        events += got
        dead += refused
    assert len(events) == 20_000 and not dead
    on_disk = Vocab.load(tmp_path / "vocab.json").tables
    assert len(on_disk["device"]) == len(on_disk["surface"]) == cap + 1  # and `other`
    assert sum(e.device == OTHER for e in events) == 20_000 - (cap - 4)
    grown = sum(p.stat().st_size for p in tmp_path.iterdir()) - size
    assert grown < 100_000, f"vocabulary files grew {grown} bytes"
