"""No message stops the flow: poison and 1,000+ malformed messages on a real broker.

The flow runs as ``marquee flow`` does (a real process, tailing, Feast SQLite) over a topic
that holds the issue's three poison messages (100,000 nested ``[``, a 1 MB string value,
200 KB of invalid UTF-8) and a generated mix of malformed messages (wrong types, NaN and
Infinity, deep nesting, oversize values, invalid UTF-8, lone surrogates, wrong, missing and
binary keys, events dated ahead of their Kafka timestamp) among valid events. Valid events
produced after all of that must still be consumed and reach Feast; each malformed message
must end as exactly one dead letter, found by its partition and offset, with a reason and its
problems, within the dead-letter size bound; and the flow's counters must balance:
consumed = valid + dead-lettered.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from feature_repo.store import open_store, read_users
from infra.synthetic import SyntheticWorld, WorldConfig
from streams import launch
from streams.config import KafkaSettings
from streams.consume import read_all
from streams.dead_letters import DEFAULT_MAX_BYTES, original
from streams.launch import Launch
from tests.streams.flow_runs import ROOT, counted_by, flow_env, wait_until
from tests.streams.messages import produce_raw

pytestmark = pytest.mark.integration

Case = tuple[bytes | None, bytes | None, str]  # value, key, the reason expected ("" = valid)


def poison(event: dict) -> list[Case]:
    """The three messages that each stopped the flow."""
    key = event["user_id"].encode()
    return [(b"[" * 100_000, key, "invalid_event"),
            (json.dumps({**event, "event_id": "p-1mb", "item_id": "x" * 1_000_000}).encode(),
             key, "invalid_item_id"),
            (b"\xff\xfe" * 100_000, key, "invalid_event")]


def malformed(events: list[dict], n: int, rng: random.Random) -> list[Case]:
    """``n`` malformed messages, cycling through the kinds of damage, built on valid events."""
    far = int(time.time() * 1000) + 86_400_000
    kinds = [
        lambda e: (json.dumps({**e, rng.choice(["ts", "position", "watch_seconds"]): "x"}),
                   "invalid_"),
        lambda e: (json.dumps({**e, "user_id": rng.choice([5, None, ["u"], {"u": 1}])}),
                   "invalid_user_id"),
        lambda e: (json.dumps(e)[:-1] + ', "value": ' + rng.choice(
            ["NaN", "Infinity", "-Infinity"]) + "}", "invalid_event"),
        lambda e: ("[" * rng.randint(1_000, 200_000), "invalid_event"),
        lambda e: (json.dumps(e)[:-1] + ', "value": ' + "[" * 5_000 + "1" + "]" * 5_000 + "}",
                   "invalid_event"),
        lambda e: (b"\xc3\x28" + bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))),
                   "invalid_event"),
        lambda e: (json.dumps({**e, rng.choice(["user_id", "device", "item_id"]): "a\ud800"}),
                   "invalid_"),
        lambda e: (json.dumps({**e, "device": "@"}).encode().replace(b'"@"', b'"\xed\xa0\x80"'),
                   "invalid_device"),  # a surrogate encoded as UTF-8 bytes (CESU-8)
        lambda e: (rng.choice([b"", b"null", b"[]", b"3", b'"x"', b"{", b'{"a": 1}']),
                   "invalid_event"),
        lambda e: (json.dumps({**e, "action": rng.choice(["fly", 1, ""])}), "invalid_action"),
    ]
    out: list[Case] = []
    for i in range(n):
        e = {**rng.choice(events), "event_id": f"bad-{i}"}
        key: bytes | None = e["user_id"].encode()
        if i % 50 == 0:  # oversize, a few: each is up to a megabyte through the broker
            out.append((json.dumps({**e, "surface": "s" * rng.randint(300_000, 1_200_000)})
                        .encode(), key, "invalid_surface"))
            continue
        if i % 13 in (1, 2, 3):  # a valid event with a wrong, missing or binary key
            wrong = [b"someone-else", None, bytes(rng.randrange(256) for _ in range(2_000))]
            out.append((json.dumps(e).encode(), wrong[i % 13 - 1], "wrong_key"))
            continue
        if i % 13 == 4:
            out.append((json.dumps({**e, "ts": far + i}).encode(), key, "future"))
            continue
        value, reason = kinds[i % len(kinds)](e)
        out.append((value.encode() if isinstance(value, str) else value, key, reason))
    rng.shuffle(out)
    return out


def produce(kafka: KafkaSettings, cases: list[Case]) -> list[tuple[int, int]]:
    """Send each case as is (value and key), in order; where each landed."""
    return produce_raw(kafka, [(value, key, None) for value, key, _ in cases])


def counters(folder: Path) -> dict[str, int]:
    """The flow's event counters, read from its multiprocess metric files."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    return {name: int(registry.get_sample_value(f"marquee_events_{name}_total") or 0)
            for name in ("consumed", "valid", "dead_lettered")}


def test_no_message_stops_the_flow_and_each_bad_one_is_one_dead_letter(kafka_topics, tmp_path):
    kafka = kafka_topics
    rng = random.Random(15)
    world = SyntheticWorld(WorldConfig(n_users=30, days=1))
    events = list(world.events())
    half = len(events) // 2
    before = [(json.dumps(e).encode(), e["user_id"].encode(), "") for e in events[:half]]
    bad = poison(events[0]) + malformed(events, 1_100, rng)
    mix = list(before)  # the malformed at random places; each user's events stay in order
    for case in bad[3:]:
        mix.insert(rng.randrange(len(mix) + 1), case)
    first = bad[:3] + mix
    after = [(json.dumps(e).encode(), e["user_id"].encode(), "") for e in events[half:]]

    data = tmp_path / "data"
    world.write_catalogue(data / "catalogue.jsonl")
    where_first = produce(kafka, first)
    folder = data / "metrics"
    err = (data / "flow.err").open("wb")
    (proc,) = launch.start(Launch(), flow_env(kafka, data, MARQUEE_FLOW_TAIL="true",
                                              MARQUEE_FLOW_BATCH_SIZE="200",
                                              **counted_by(folder)),
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_until(lambda: counters(folder)["consumed"] >= len(first), "the poison", proc)
        where_after = produce(kafka, after)  # valid events sent once the poison was read
        total, n_bad = len(first) + len(after), len(bad)
        wait_until(lambda: counters(folder)["valid"] + counters(folder)["dead_lettered"]
                   >= total, "every message accounted for", proc)
        got = counters(folder)
        assert got == {"consumed": total, "valid": total - n_bad, "dead_lettered": n_bad}
        store = open_store(online="sqlite", data_dir=data)
        late_users = sorted({e["user_id"] for e in events[half:]})
        wait_until(lambda: all((r["n_tokens"] or 0) > 0 for r in read_users(
            store, late_users).values()), "rows of events sent after the poison", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        err.close()

    letters = read_all(kafka, kafka.dead_letter_topic, expected=n_bad, timeout=60)
    by_origin: dict[tuple[int, int], list[dict]] = {}
    for r in letters:
        assert len(r.value) <= DEFAULT_MAX_BYTES
        record = json.loads(r.value)
        by_origin.setdefault((record["partition"], record["offset"]), []).append(record)
    cases = first + after
    for (value, _, reason), at in zip(cases, where_first + where_after, strict=True):
        if not reason:
            assert at not in by_origin, (at, by_origin.get(at))
            continue
        assert len(by_origin.get(at, [])) == 1, f"{value[:60]!r} at {at}: {by_origin.get(at)}"
        (record,) = by_origin[at]
        assert record["reason"].startswith(reason) and record["problems"], (value[:60], record)
        assert record["raw_bytes"] == len(value or b"")
        assert record["raw_sha256"] == hashlib.sha256(value or b"").hexdigest()
        assert (value or b"").startswith(original(record))
    assert len(letters) == n_bad
    big = [r for r in by_origin.values() if r[0]["raw_bytes"] > DEFAULT_MAX_BYTES]
    assert len(big) >= 10 and all(r[0]["truncated"] for r in big)
