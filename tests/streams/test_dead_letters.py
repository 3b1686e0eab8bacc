"""Dead-letter records fit the topic whatever the refused message was, and still find it."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.dead_letters import KEY_MAX, MIN_MAX_BYTES, kafka_key, original
from streams.records import DeadLetter

BOUND = 64 * 1024


def letter(raw: bytes, key: bytes | None = b"u1", problems: tuple[str, ...] = ("event: x; y",),
           max_bytes: int = BOUND) -> tuple[bytes, dict]:
    encoded = DeadLetter("invalid_event", problems, raw, key, 3, 1234, 1767225600000).to_json(
        max_bytes)
    return encoded, json.loads(encoded)


def assert_finds_original(record: dict, raw: bytes) -> None:
    assert record["raw_bytes"] == len(raw)
    assert record["raw_sha256"] == hashlib.sha256(raw).hexdigest()
    assert (record["partition"], record["offset"]) == (3, 1234)
    kept = original(record)
    assert raw.startswith(kept)
    assert record["truncated"] == (kept != raw)


def test_a_small_message_travels_whole_as_text():
    raw = json.dumps({"user_id": "u1", "action": "dance", "note": "é\u0000"}).encode()
    _, record = letter(raw)
    assert record["raw"].encode() == raw and not record["truncated"]
    assert record["key"] == "u1" and record["timestamp"] == 1767225600000
    assert_finds_original(record, raw)


@pytest.mark.parametrize("name,raw", [
    ("a 1 MB string value", b'{"item_id": "' + b"x" * 1_000_000 + b'"}'),
    ("200 KB of invalid UTF-8", b"\xff\xfe" * 100_000),
    ("200 KB of NUL characters (6 bytes each as a JSON escape)", b"\x00" * 200_000),
    ("emoji (4 bytes each)", "🎬".encode() * 100_000),
])
def test_an_oversize_message_is_cut_to_the_bound_with_its_size_and_hash(name, raw):
    encoded, record = letter(raw)
    assert len(encoded) <= BOUND, name
    assert record["truncated"], name
    assert len(original(record)) > BOUND // 8, f"{name}: most of the room should be used"
    assert_finds_original(record, raw)


def test_invalid_utf8_travels_as_base64_not_escapes():
    raw = b"\xff" * 30_000
    encoded, record = letter(raw)
    assert "raw" not in record and original(record) == raw and not record["truncated"]
    assert len(encoded) < 30_000 * 4 / 3 + 1_000


def test_a_huge_key_and_problem_list_stay_bounded():
    key = b"k" * 1_000_000
    problems = tuple(f"f{i}: unknown field; remove it \ud800" + "x" * 1000 for i in range(10_000))
    encoded, record = letter(b"{}", key=key, problems=problems)
    assert len(encoded) <= BOUND
    assert record["key_bytes"] == len(key) and len(record["key_b64"]) <= KEY_MAX * 4 // 3 + 4
    assert len(record["problems"]) == 11 and record["problems"][-1] == "... and 9990 more problems"
    assert kafka_key(key) == key[:KEY_MAX] and kafka_key(b"u1") == b"u1" and kafka_key(None) is None


def test_a_bound_too_small_for_the_fixed_fields_is_refused():
    with pytest.raises(ValueError, match=str(MIN_MAX_BYTES)):
        letter(b"{}", max_bytes=1000)


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(st.binary(max_size=3000), st.text(max_size=1500).map(
    lambda t: t.encode("utf-8", "surrogatepass"))),
       key=st.one_of(st.none(), st.binary(max_size=2000)),
       max_bytes=st.integers(MIN_MAX_BYTES, MIN_MAX_BYTES + 4000))
def test_any_message_gives_a_record_within_the_bound_that_finds_it(raw, key, max_bytes):
    raw = raw * (max_bytes // max(len(raw), 1) + 1)  # about the bound: under or over it
    encoded, record = letter(raw, key=key, max_bytes=max_bytes)
    assert len(encoded) <= max_bytes
    assert_finds_original(record, raw)
