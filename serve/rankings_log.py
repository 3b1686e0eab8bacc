"""The rankings log: every served ranking as one JSON record on ``MARQUEE_RANKINGS_TOPIC``.

Events that carry a ``request_id`` join these records (later: per-variant outcomes and
interleaving credit), so a record holds what that join needs: the request id, the user (the
message key, as on the events topic, so a user's rankings and events share a partition
number), the experiment, the variants and their model versions, and every item with its
position and the variant (team) that placed it. Schema: ``infra/schemas/ranking-record.v1.json``
(``RankingRecord``).

Fire and forget: a request never waits for the broker. ``produce`` only appends to
librdkafka's bounded local queue (``MARQUEE_RANKINGS_QUEUE_MAX`` records); a full queue or a
failed produce drops the record, and a delivery the broker did not acknowledge in time is lost;
each outcome is counted in ``marquee_rankings_logged_total{result}`` and never becomes an error
of the request. A thread serves the delivery reports.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from serve import metrics

log = logging.getLogger(__name__)
RECORD_VERSION = 1
RESULTS = ("delivered", "failed", "dropped")
_LOGGED = {r: metrics.RANKINGS_LOGGED.labels(r) for r in RESULTS}

PRODUCER_CONFIG: dict[str, Any] = {
    "acks": 1,  # a log line, not an event of record: the leader's ack is enough
    "enable.idempotence": False,
    "linger.ms": 20,  # batch records: one broker request per 20 ms, not per ranking
    "compression.type": "lz4",
    "message.timeout.ms": 30_000,  # given up (counted failed) after this
    "queue.buffering.max.kbytes": 256 * 1024,
    "log.connection.close": False,
}


class LoggedItem(BaseModel):
    """One item as the user was shown it."""

    model_config = ConfigDict(extra="forbid")

    item_id: str
    position: int = Field(ge=1, description="slot in the list, from 1")
    variant: str = Field(description="the variant (for interleaving: the team) that placed it")
    score: float = Field(description="the score the list was ranked by")


class RankingRecord(BaseModel):
    """One served ranking, as logged (``v`` 1)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://marquee.dev/schemas/ranking-record/v{RECORD_VERSION}.json"})

    v: int = Field(RECORD_VERSION, description="record version")
    request_id: str = Field(pattern="^[0-9a-f]{32}$", description="what /v1/rank answered; "
                            "events carry it back")
    ts: int = Field(description="when the ranking was served, epoch ms (the service's clock)")
    user_id: str
    experiment: str | None = Field(None, description="the running experiment, if any")
    mode: str | None = Field(None, description="ab | interleave (null without experiment)")
    variants: list[str] = Field(description="the variants that made the list: one (A/B, or "
                                "`default` without experiment) or the two interleaved teams")
    model_versions: dict[str, str] = Field(description="variant -> model version (`popular` "
                                           "for the control, `none` when no model was loaded)")
    items: list[LoggedItem]
    degraded: bool = False
    fallback: str | None = None


def record(p: Any, response: Any, ts: int | None = None) -> bytes:
    """The JSON record of one answer (``p``: the ranker's ``Prepared``; ``response``: its
    ``RankResponse``); built as plain data (no model validation: this runs on every request).
    """
    plan = p.plan
    return orjson.dumps({
        "v": RECORD_VERSION, "request_id": response.request_id,
        "ts": int(time.time() * 1000) if ts is None else ts, "user_id": response.user_id,
        "experiment": plan.experiment.name if plan is not None else None,
        "mode": plan.experiment.mode.value if plan is not None else None,
        "variants": response.variants,
        "model_versions": {a.name: a.version for a in p.arms},
        "items": [{"item_id": i.item_id, "position": i.position, "variant": i.variant,
                   "score": i.score} for i in response.items],
        "degraded": response.degraded, "fallback": response.fallback})


def schema() -> dict[str, Any]:
    """The record's JSON Schema, as shipped in ``infra/schemas/``."""
    return RankingRecord.model_json_schema()


def write_schema(folder: Path) -> Path:
    """Write ``ranking-record.v1.json`` into ``folder``."""
    path = folder / f"ranking-record.v{RECORD_VERSION}.json"
    path.write_text(json.dumps(schema(), indent=2) + "\n")
    return path


class RankingsLog:
    """A non-blocking producer of ranking records (one per replica)."""

    def __init__(self, bootstrap_servers: str, topic: str, queue_max: int) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self._producer = Producer({"bootstrap.servers": bootstrap_servers, **PRODUCER_CONFIG,
                                   "queue.buffering.max.messages": queue_max,
                                   "error_cb": self._error})
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="rankings-log", daemon=True)
        self._poller.start()

    def produce(self, key: str, value: bytes) -> bool:
        """Queue one record; False (and counted ``dropped``) if it could not be queued."""
        try:
            self._producer.produce(self.topic, value, key.encode(), on_delivery=self._delivered)
            return True
        except Exception as exc:  # noqa: BLE001 - BufferError (queue full), KafkaException
            _LOGGED["dropped"].inc()
            log.debug("ranking record dropped: %s", exc)
            return False

    def flush(self, timeout: float = 5.0) -> int:
        """Wait up to ``timeout`` s for queued records; returns how many are still queued."""
        return self._producer.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (up to ``timeout``), then stop the report thread."""
        self.flush(timeout)
        self._closed.set()
        self._poller.join(timeout=2)

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.2)

    @staticmethod
    def _delivered(err: Any, _msg: Any) -> None:
        _LOGGED["failed" if err is not None else "delivered"].inc()

    @staticmethod
    def _error(err: Any) -> None:
        log.warning("rankings log: %s", err)
