"""The fast decoder against the contract: same accept/reject decisions, values and problems."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.synthetic import SyntheticWorld, WorldConfig
from streams.contract.events import validate_event
from streams.contract.fast_events import Event, decode_event, fast_event

BASE = {"event_id": "e1", "user_id": "u1", "item_id": "m1", "action": "play",
        "ts": 1_767_225_600_000, "device": "tv", "surface": "home/top", "position": 3,
        "watch_seconds": 12.5, "session_id": "s1"}

TEXT = st.sampled_from(["a", "TV", "home/Top", "", " a", "a ", "\t", "\x1ca", "a\u00a0", "İx",
                        "\ud800", "x" * 32, "x" * 33, "x" * 64, "x" * 65, "x" * 128, "x" * 129,
                        "play", "search", "Play", " play", "0123456789abcdef" * 2,
                        " " + "0123456789abcdef" * 2, "0123456789ABCDEF" * 2])
NUMBER = st.sampled_from([0, 1, -1, 3, 1.0, 3.5, -0.0, 86_400, 86_400.5, 100_000, 100_001,
                          True, False, 10**20, float("nan"), float("inf"), 1e300,
                          946_684_800_000, 946_684_799_999, 4_102_444_800_000,
                          4_102_444_800_001, 1_767_225_600_000.7])
TS_TEXT = st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "1767225600000",
                           " 1767225600000", "-5", "yesterday"])
ANY = st.one_of(TEXT, NUMBER, TS_TEXT, st.none(), st.just([1]), st.just({"a": 1}))
DUPLICATE_KEYS = (b'{"event_id": "a", "user_id": "u", "action": "play", "ts": 1767225600000, '
                  b'"device": "tv", "surface": "s", "item_id": "m", "event_id": " b"}')
FIELD = st.sampled_from([*BASE, "v", "value", "request_id", "extra"])


@st.composite
def raw_events(draw) -> bytes:
    """A valid event with a few fields replaced, removed or added, or something not an event."""
    if draw(st.integers(0, 20)) == 0:
        return draw(st.sampled_from([b"{oops", b"[]", b"3", b"null", b'"x"', b"\xff\xfe",
                                     b'{"a": 1}', b"", DUPLICATE_KEYS, b'{"ts": Infinity}']))
    event = dict(BASE)
    for _ in range(draw(st.integers(0, 3))):
        name = draw(FIELD)
        if draw(st.integers(0, 5)) == 0:
            event.pop(name, None)
        else:
            event[name] = draw(ANY)
    return json.dumps(event).encode()


def assert_same_answer(raw: bytes) -> None:
    got, got_problems = decode_event(raw)
    model, problems = validate_event(raw)
    assert [str(p) for p in got_problems] == [str(p) for p in problems]
    if model is None:
        assert got is None
        return
    want = Event.of(model)
    assert got == want
    for name in Event.__struct_fields__:
        assert type(getattr(got, name)) is type(getattr(want, name)), name


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_events())
def test_fast_decoding_agrees_with_the_contract(raw):
    assert_same_answer(raw)


def test_plain_events_take_the_fast_path_and_round_trip():
    world = SyntheticWorld(WorldConfig(n_users=20, days=1))
    raws = [json.dumps(e).encode() for e in world.events()]
    assert all(fast_event(r) is not None for r in raws)
    for raw in raws[:200]:
        assert_same_answer(raw)
        event = fast_event(raw)
        assert event is not None and Event.of(event.to_model()) == event


def test_a_request_id_takes_the_fast_path():
    raw = json.dumps({**BASE, "request_id": "ab" * 16}).encode()
    event = fast_event(raw)
    assert event is not None and event.request_id == "ab" * 16
    assert_same_answer(raw)
    assert fast_event(json.dumps({**BASE, "request_id": "AB" * 16}).encode()) is None


def test_odd_but_valid_events_are_judged_by_the_contract():
    for odd in ({"ts": "2026-01-01T00:00:00Z"}, {"device": " TV "}, {"position": 3.0},
                {"v": 1.0}, {"value": True}, {"request_id": " " + "ab" * 16}):
        raw = json.dumps({**BASE, **odd}).encode()
        assert fast_event(raw) is None  # not plain: left to pydantic
        event, problems = decode_event(raw)
        assert event is not None and not problems
        assert_same_answer(raw)
