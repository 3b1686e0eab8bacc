"""A hostile producer against the real flow: a real broker, a real flow process, Feast SQLite.

One stream, run once (the module fixture): odd but valid events that must all be accepted
(NUL in ids, ids at their length limits, non-ASCII ids, a user id padded with blanks around
its key, a BOM, a key repeated in one object, one event id shared by three users, the
oldest allowed time, an RFC 3339 time at +14:00, a huge rating, 2,000 users in one poll),
messages that must each be one dead letter (300 events with a fresh unknown field each,
tombstones, empty and non-object values, binary and huge keys), and two forgeries: a record
whose producer-set timestamp and event time are a month ahead, once for a user and once for
a popular item. Each test checks one promise against what the flow wrote.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from feature_repo.store import open_store, read_items
from streams import launch
from streams.config import KafkaSettings
from streams.consume import read_all
from streams.contract.events import FIXES
from streams.dead_letters import DEFAULT_MAX_BYTES
from streams.launch import Launch
from streams.topics import create_topics, delete_topics
from tests.streams.flow_runs import ROOT, counted_by, flow_env
from tests.streams.messages import produce_raw

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)
FORGED = NOW + 30 * 86_400_000  # a month ahead
LO = 946_684_800_000  # the oldest time the contract allows


@dataclass
class Case:
    """One message: value, key, the record timestamp (None: the producer's clock), and what
    should become of it ("" accepted, else the reason's prefix, "forged" for the forgeries).
    """

    value: bytes | None
    key: bytes | None
    expect: str
    timestamp: int | None = None


def ev(event_id: str, user: str, **kw) -> dict:
    return {"event_id": event_id, "user_id": user, "item_id": "m1", "action": "play",
            "ts": NOW, "device": "tv", "surface": "home/top_picks", **kw}


def ok(e: dict, key: str | None = None) -> Case:
    return Case(json.dumps(e).encode(), (key or e["user_id"]).encode(), "")


def oddities() -> list[Case]:
    """Valid events at the contract's edges: each must be accepted."""
    dup_key = json.dumps(ev("dup-key", "someone")).replace(
        '"user_id": "someone"', '"user_id": "someone", "user_id": "dup-key-user"')
    return [
        ok(ev("nul", "odd\x00user", item_id="m\x00")),
        ok(ev("E" * 128, "U" * 128, item_id="I" * 128, session_id="S" * 128,
              device="d" * 32, surface="s" * 64)),
        ok(ev("unicode", "ユーザー", item_id="🎬", device="ТВ")),
        ok(ev("padded", "  pad-user  "), key="pad-user"),
        Case(b"\xef\xbb\xbf" + json.dumps(ev("bom", "bom-user")).encode(), b"bom-user", ""),
        Case(dup_key.encode(), b"dup-key-user", ""),
        *[ok(ev("shared-eid", f"sharer-{i}")) for i in range(3)],
        ok(ev("oldest", "old-user", ts=LO)),
        ok(ev("plus14", "tz-user", ts="2026-01-01T13:59:59.999+14:00")),
        ok(ev("rating", "rater", action="rate", value=1e308)),
        *[ok(ev(f"crowd-{i}", f"crowd-{i:04d}")) for i in range(2_000)],
    ]


def hostile() -> list[Case]:
    """Messages that must each end as one dead letter."""
    unknown = [Case(json.dumps(ev(f"x{i}", "prober", **{f"probe_{i:04d}": 1})).encode(),
                    b"prober", "invalid_") for i in range(300)]
    return [*unknown,
            Case(None, b"tomb", "invalid_event"), Case(b"", b"empty", "invalid_event"),
            Case(b"null", b"null", "invalid_event"), Case(b"\xef\xbb\xbf", b"bom", "invalid_event"),
            Case(json.dumps(ev("bin-key", "u-bin")).encode(), b"\xff\xfe\x00", "wrong_key"),
            Case(json.dumps(ev("huge-key", "u-huge")).encode(), b"\xfe" * 100_000, "wrong_key")]


def forgeries() -> tuple[list[Case], list[Case]]:
    """A user's and an item's real events around one record dated a month ahead."""
    victim = [ok(ev("v0", "victim", ts=NOW - 60_000)),
              Case(json.dumps(ev("v-forged", "victim", ts=FORGED)).encode(), b"victim",
                   "forged", FORGED),
              *[ok(ev(f"v{i}", "victim", ts=NOW + i)) for i in range(1, 11)]]
    item = [*[ok(ev(f"t{i}", f"fan-{i}", item_id="m-target", ts=NOW - 1_000)) for i in range(5)],
            Case(json.dumps(ev("t-forged", "mallory", item_id="m-target", ts=FORGED)).encode(),
                 b"mallory", "forged", FORGED),
            *[ok(ev(f"t{i}", f"fan-{i}", item_id="m-target", ts=NOW + i)) for i in range(5, 10)]]
    return victim, item


def produce(kafka: KafkaSettings, cases: list[Case]) -> list[tuple[int, int]]:
    """Send each case in order (with its record timestamp, when it has one); where each
    landed.
    """
    return produce_raw(kafka, [(c.value, c.key, c.timestamp) for c in cases], 2_000_000)


@dataclass
class Run:
    cases: list[Case]
    where: list[tuple[int, int]]
    letters: dict[tuple[int, int], list[dict]]
    raw_letters: list[bytes]
    metrics: Path
    data: Path


@pytest.fixture(scope="module")
def run(kafka: KafkaSettings, tmp_path_factory: pytest.TempPathFactory):
    """The stream produced, then read to its end by one flow process."""
    suffix = uuid.uuid4().hex[:12]
    topics = kafka.model_copy(update={"events_topic": f"events-{suffix}",
                                      "dead_letter_topic": f"dlq-{suffix}"})
    create_topics(topics, {topics.events_topic: 4, topics.dead_letter_topic: 1})
    try:
        victim, item = forgeries()
        cases = oddities() + hostile() + victim + item
        where = produce(topics, cases)
        data = tmp_path_factory.mktemp("adversarial") / "data"
        data.mkdir()
        folder = data / "metrics"
        err = data / "flow.err"
        with err.open("wb") as log:
            code = launch.run(Launch(), flow_env(topics, data, MARQUEE_FLOW_BATCH_SIZE="5000",
                                                 **counted_by(folder)),
                              timeout=120, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        assert code == 0, err.read_text()[-3000:]
        raw = [r.value for r in read_all(topics, topics.dead_letter_topic, timeout=30)]
        letters: dict[tuple[int, int], list[dict]] = {}
        for value in raw:
            record = json.loads(value)
            letters.setdefault((record["partition"], record["offset"]), []).append(record)
        yield Run(cases, where, letters, raw, folder, data)
    finally:
        delete_topics(topics, [topics.events_topic, topics.dead_letter_topic])


def samples(folder: Path) -> list:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    return [s for m in registry.collect() for s in m.samples]


def total(folder: Path, name: str) -> int:
    return int(sum(s.value for s in samples(folder) if s.name == f"marquee_events_{name}_total"))


def test_each_message_is_accepted_or_one_bounded_dead_letter(run: Run):
    consumed, valid, dead = (total(run.metrics, n) for n in ("consumed", "valid",
                                                              "dead_lettered"))
    assert consumed == len(run.cases) and consumed == valid + dead
    assert dead == len(run.raw_letters)
    for value in run.raw_letters:
        assert len(value) <= DEFAULT_MAX_BYTES
        record = json.loads(value)
        assert record["reason"] and record["problems"]
    for case, at in zip(run.cases, run.where, strict=True):
        got = run.letters.get(at, [])
        if case.expect == "":
            if case.key != b"victim":  # the victim's fate is the forgery test's
                assert not got, (case.value[:80], got[0]["problems"][:1])
        elif case.expect != "forged":
            assert len(got) == 1 and got[0]["reason"].startswith(case.expect), (
                (case.value or b"")[:80], got)


def test_unknown_fields_do_not_become_reason_labels_in_the_flow_process(run: Run):
    labels = {s.labels["reason"] for s in samples(run.metrics)
              if s.name == "marquee_events_invalid_total"}
    allowed = {f"invalid_{f}" for f in FIXES} | {"invalid_event", "invalid_unknown_field",
                                                 "wrong_key", "future",
                                                 "late", "duplicate", "poison"}
    assert labels <= allowed, (f"{len(labels - allowed)} reason label values chosen by the "
                               f"producer, e.g. {sorted(labels - allowed)[:3]}")


def test_a_forged_record_timestamp_does_not_lock_out_a_user(run: Run):
    reasons = Counter(run.letters[at][0]["reason"] for case, at in zip(run.cases, run.where,
                                                                        strict=True)
                      if case.key == b"victim" and at in run.letters)
    assert reasons.get("late", 0) == 0, (
        f"the victim's real events were refused: {dict(reasons)}; one record dated a month "
        "ahead by its producer passed the future check")


def test_a_forged_record_timestamp_does_not_freeze_an_items_counters(run: Run):
    store = open_store(online="sqlite", data_dir=run.data)
    row = read_items(store, ["m-target"])["m-target"]
    assert (row["plays_24h"] or 0) >= 10, (
        f"m-target shows plays_24h={row['plays_24h']} after 10 real plays around now: one "
        "play dated a month ahead moved its window")
