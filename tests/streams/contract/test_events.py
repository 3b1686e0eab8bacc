import json
from pathlib import Path

import jsonschema
import pytest

from streams.contract.events import (
    Action,
    InteractionEvent,
    json_schema,
    tansu_schema,
    validate_event,
)

GOOD = {"event_id": "e1", "user_id": "u1", "item_id": "m1", "action": "play",
        "ts": 1767225600000, "device": "TV", "surface": "home/top_picks", "position": 3,
        "watch_seconds": 0}
SCHEMAS = Path(__file__).parents[3] / "infra" / "schemas"


def test_valid_event_round_trips_through_json():
    event, problems = validate_event(json.dumps(GOOD))
    assert problems == []
    assert event.device == "tv"  # normalised
    again, problems = validate_event(event.to_json())
    assert again == event and problems == []


def test_rfc3339_timestamp_is_accepted_as_epoch_ms():
    event, problems = validate_event({**GOOD, "ts": "2026-01-01T00:00:00Z"})
    assert problems == [] and event.ts == 1767225600000
    event, _ = validate_event({**GOOD, "ts": "2026-01-01T01:00:00+01:00"})
    assert event.ts == 1767225600000


def test_missing_ts_names_the_field_and_the_fix():
    bad = {k: v for k, v in GOOD.items() if k != "ts"}
    event, problems = validate_event(bad)
    assert event is None
    assert [str(p) for p in problems] == [
        "ts: missing; epoch milliseconds or RFC 3339 expected "
        "(e.g. 1767225600000 or 2026-01-01T00:00:00Z)"]


def test_every_problem_is_reported_at_once():
    bad = {**GOOD, "action": "dance", "ts": "yesterday", "position": -1, "colour": "red"}
    bad.pop("user_id")
    _, problems = validate_event(bad)
    fields = sorted(p.field for p in problems)
    assert fields == ["action", "colour", "position", "ts", "user_id"]
    action = next(p for p in problems if p.field == "action")
    assert "impression" in action.fix and "add_to_list" in action.fix


@pytest.mark.parametrize("raw,field", [
    (b"{not json", "event"), (b"[1, 2]", "event"), (b"\xff\xfe", "event"),
    (json.dumps({**GOOD, "item_id": ""}), "item_id"),
    (json.dumps({**GOOD, "ts": 12}), "ts"),
    (json.dumps({**GOOD, "ts": True}), "ts"),
    (json.dumps({**GOOD, "v": 2}), "v"),
])
def test_malformed_input_is_a_problem_not_an_exception(raw, field):
    event, problems = validate_event(raw)
    assert event is None and problems[0].field == field and problems[0].fix


def test_search_may_omit_item():
    event, problems = validate_event({**GOOD, "action": "search", "item_id": ""})
    assert problems == [] and event.action is Action.SEARCH


def test_shipped_schema_files_match_the_code():
    assert json.loads((SCHEMAS / "interaction-event.v1.json").read_text()) == json_schema()
    assert json.loads((SCHEMAS / "marquee.events.json").read_text()) == tansu_schema()


def test_json_schema_agrees_with_the_validator():
    validator = jsonschema.Draft202012Validator(json_schema())
    assert not list(validator.iter_errors(GOOD))
    assert list(validator.iter_errors({**GOOD, "action": "dance"}))
    assert list(validator.iter_errors({k: v for k, v in GOOD.items() if k != "ts"}))
    InteractionEvent.model_validate(GOOD)


POISON = {
    "deep nesting": (b"[" * 100_000, "event"),
    "deep nesting in a field": (b'{"value": ' + b"[" * 100_000, "event"),
    "deep but parseable nesting in a field": (
        json.dumps({**GOOD, "value": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}).encode(), "value"),
    "200 KB of invalid UTF-8": (b"\xff\xfe" * 100_000, "event"),
    "an integer past Python's digit limit": (
        json.dumps(GOOD)[:-1].encode() + b', "position": ' + b"9" * 5000 + b"}", "event"),
    "NaN": (json.dumps({**GOOD, "value": float("nan")}).encode(), "event"),
    "Infinity": (json.dumps({**GOOD, "watch_seconds": float("inf")}).encode(), "event"),
    "a float that overflows to infinity": (
        json.dumps(GOOD)[:-1].encode() + b', "value": 1e999}', "value"),
    "a lone surrogate": (json.dumps({**GOOD, "user_id": "u\ud800"}).encode(), "user_id"),
}


@pytest.mark.parametrize("name", list(POISON))
def test_hostile_input_is_a_short_problem_never_an_exception(name):
    raw, field = POISON[name]
    event, problems = validate_event(raw)
    assert event is None, name
    assert problems[0].field == field and problems[0].fix
    assert all(len(str(p)) < 500 for p in problems)


def test_a_huge_unknown_field_name_is_cut_in_the_problem():
    _, problems = validate_event({**GOOD, "x" * 100_000: 1})
    assert len(problems) == 1 and problems[0].message == "unknown field"
    assert problems[0].field == "x" * 128 + "..."


def test_request_id_is_optional_and_checked():
    rid = "0123456789abcdef0123456789abcdef"
    event, problems = validate_event({**GOOD, "request_id": rid})
    assert problems == [] and event.request_id == rid
    assert validate_event(GOOD)[0].request_id is None  # events without one stay valid
    again, _ = validate_event(event.to_json())
    assert again == event
    for bad in ("", "0123", rid.upper(), rid + "0", "g" * 32, 12, True):
        event, problems = validate_event({**GOOD, "request_id": bad})
        assert event is None and [p.field for p in problems] == ["request_id"], bad
        assert "/v1/rank" in problems[0].fix
    validator = jsonschema.Draft202012Validator(json_schema())
    assert not list(validator.iter_errors({**GOOD, "request_id": rid}))
    assert list(validator.iter_errors({**GOOD, "request_id": "nope"}))
