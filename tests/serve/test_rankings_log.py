"""The rankings log against a real broker: records read back keyed by user and matching their
schema; a full local queue or an unreachable broker drops and counts, never raises."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import orjson
import pytest

from serve import metrics
from serve.rankings_log import RankingRecord, RankingsLog, schema
from streams.consume import read_all
from streams.launch import free_port

pytestmark = pytest.mark.integration
SCHEMAS = Path(__file__).parents[2] / "infra" / "schemas"


def _logged(result: str) -> float:
    return metrics.RANKINGS_LOGGED.labels(result)._value.get()


def _record(i: int) -> bytes:
    return orjson.dumps({
        "v": 1, "request_id": f"{i:032x}", "ts": 1_767_225_600_000 + i, "user_id": f"u{i % 3}",
        "experiment": "e", "mode": "interleave", "variants": ["a", "b"],
        "model_versions": {"a": "fm-a", "b": "fm-b"},
        "items": [{"item_id": f"m{j}", "position": j + 1, "variant": "ab"[j % 2],
                   "score": 1.0 - j / 10} for j in range(3)],
        "degraded": False, "fallback": None})


def test_the_shipped_schema_matches_the_code() -> None:
    assert json.loads((SCHEMAS / "ranking-record.v1.json").read_text()) == schema()


def test_records_reach_the_topic_keyed_by_user(kafka, topic) -> None:
    before = _logged("delivered")
    log = RankingsLog(kafka.bootstrap_servers, topic, queue_max=1000)
    sent = [_record(i) for i in range(30)]
    assert all(log.produce(f"u{i % 3}", value) for i, value in enumerate(sent))
    assert log.flush(15) == 0
    got = read_all(kafka, topic, expected=30, timeout=20)
    log.close()
    assert sorted(r.value for r in got) == sorted(sent)
    validator = jsonschema.Draft202012Validator(schema())
    for r in got:
        assert not list(validator.iter_errors(json.loads(r.value)))
        assert r.key == RankingRecord.model_validate_json(r.value).user_id.encode()
    by_key = {}
    for r in got:  # one user's records share a partition
        by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in by_key.values())
    deadline = time.monotonic() + 5
    while _logged("delivered") < before + 30 and time.monotonic() < deadline:
        time.sleep(0.05)  # the report thread counts acknowledgements
    assert _logged("delivered") == before + 30


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    """No broker listens: the queue holds one record and the next are dropped at once."""
    dropped = _logged("dropped")
    log = RankingsLog(f"127.0.0.1:{free_port()}", "marquee.rankings", queue_max=1)
    t0 = time.perf_counter()
    results = [log.produce("u", _record(i)) for i in range(50)]
    spent = time.perf_counter() - t0
    assert results[0] and not any(results[1:])
    assert _logged("dropped") == dropped + 49
    assert spent < 0.5, spent  # never waits for the broker
    log._closed.set()  # noqa: SLF001 - nothing to deliver; do not wait for the timeout
