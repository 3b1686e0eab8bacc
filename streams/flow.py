"""The streaming tokenizer as a Bytewax dataflow: Kafka events -> tokens -> Feast + token log.

Reads top to bottom (STYLE.md §5); the logic inside each step is plain code from
``streams.tokenizer``, ``streams.item_stats`` and ``streams.sinks``:

    events (Kafka)  -> decode+validate -> [invalid: dead letter]
                    -> key by user -> tokenize (dedupe, reorder, merge) -> [late: dead letter]
                       |-> final tokens ------------------------------> token log (parquet)
                       |-> user rows (per user, at most every flush_s) -> Feast user_tokens
                    -> key by item -> windowed counters ------------------> Feast item_stats

Run it with ``marquee flow`` (which wraps ``python -m bytewax.run "streams.flow:from_env()"``).
Delivery is at-least-once with Bytewax recovery: user/item rows are last-write-wins and token
log rows carry a stable ``token_id``, so a replay after a crash changes nothing.
"""

from __future__ import annotations

import json
import logging
import pickle
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams import metrics
from streams.events import InteractionEvent, validate_event
from streams.item_stats import ItemCounter
from streams.shared_vocab import SharedVocab
from streams.synthetic import SURFACES
from streams.tokenizer import TokenizerConfig, UserTokenizer
from streams.tokens import Token, Vocab

log = logging.getLogger(__name__)


class FlowSettings(BaseSettings):
    """The flow's knobs; each is overridable as ``MARQUEE_FLOW_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="MARQUEE_FLOW_", extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="vocab, catalogue, token log, feast")
    flush_s: float = Field(default=0.25, gt=0, description="a user's/item's online row is "
                           "rewritten at most this often; sinks flush at least this often")
    batch_size: int = Field(default=5000, ge=1, description="Kafka messages per poll")
    sink_partitions: int = Field(default=4, ge=1, description="output sink partitions")
    finish_at_eof: bool = Field(default=False, description="close every open token when the "
                                "input ends (replays); a tailing flow never ends")
    tail: bool = Field(default=True, description="keep waiting for new events")
    metrics_port: int = Field(default=0, ge=0, description="serve /metrics here (0 = off)")
    max_lateness_ms: int = Field(default=10_000, ge=0)
    session_gap_ms: int = Field(default=30 * 60_000, ge=0)
    accidental_weight: float = Field(default=0.0, ge=0, le=1)

    def tokenizer(self) -> TokenizerConfig:
        """The tokenizer's config from these settings."""
        return TokenizerConfig(max_lateness_ms=self.max_lateness_ms,
                               session_gap_ms=self.session_gap_ms,
                               accidental_weight=self.accidental_weight,
                               dedupe_window_ms=max(3_600_000, self.max_lateness_ms))


# ---- items on the streams ------------------------------------------------------------------
@dataclass(frozen=True)
class Envelope:
    """One consumed message, decoded: the event or the problems, and where it came from."""

    event: InteractionEvent | None
    problems: tuple[str, ...]
    raw: bytes
    key: bytes | None
    partition: int
    offset: int
    produced_ms: int  # Kafka record timestamp (producer time), for freshness


@dataclass(frozen=True)
class DeadLetter:
    """A refused event with its reason: what goes to the dead-letter topic."""

    reason: str
    problems: tuple[str, ...]
    raw: bytes
    key: bytes | None
    partition: int
    offset: int

    def to_json(self) -> bytes:
        """The dead-letter record: reason, problems, the original message and its origin."""
        return json.dumps({"reason": self.reason, "problems": list(self.problems),
                           "partition": self.partition, "offset": self.offset,
                           "raw": self.raw.decode("utf-8", "replace")}).encode()


@dataclass
class UserRow:
    """A user's online sequence now (final + provisional tokens), and which events it makes
    visible (their producer times, for the freshness histogram).
    """

    user_id: str
    tokens: list[Token]
    event_ms: int
    produced_ms: list[int] = field(default_factory=list)


@dataclass
class ItemRow:
    """An item's ``item_stats`` row."""

    row: dict[str, Any]


# ---- step logic -----------------------------------------------------------------------------
def decode(msg: Any) -> Envelope:
    """A Kafka message (or raw bytes, in tests) -> ``Envelope``; never raises."""
    if isinstance(msg, bytes | str):
        raw = msg.encode() if isinstance(msg, str) else msg
        key, partition, offset, produced = None, -1, -1, int(time.time() * 1000)
    else:
        raw, key, partition, offset = msg.value or b"", msg.key, msg.partition, msg.offset
        metrics.observe_offset(partition, offset)
        produced = msg.timestamp[1] if msg.timestamp and msg.timestamp[1] > 0 else int(
            time.time() * 1000)
    try:  # the fast path: a valid event parses straight from JSON
        event = InteractionEvent.model_validate_json(raw)
        return Envelope(event, (), raw, key, partition, offset, produced)
    except ValueError:
        pass
    event, problems = validate_event(raw)
    return Envelope(event, tuple(str(p) for p in problems), raw, key, partition, offset, produced)


def invalid_reason(env: Envelope) -> str:
    """Low-cardinality reason label of an invalid event: the first bad field."""
    return "invalid_" + env.problems[0].split(":", 1)[0].split(".")[0] if env.problems else "?"


def dead_letter(env: Envelope, reason: str) -> DeadLetter:
    """The dead-letter record of a refused envelope."""
    metrics.EVENTS_INVALID.labels(reason=reason).inc()
    if reason.startswith("invalid_"):  # valid events are counted per batch in tokenize
        metrics.EVENTS_CONSUMED.inc()
    return DeadLetter(reason, env.problems, env.raw, env.key, env.partition, env.offset)


@dataclass
class Shared:
    """Per-process objects every keyed state uses: the vocabulary, catalogue and config."""

    vocab: Vocab
    durations: Mapping[str, int]
    catalogue: Mapping[str, Mapping[str, Any]]
    settings: FlowSettings
    vocab_path: Path | None = None
    saved_size: int = -1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def save_vocab(self) -> None:
        """Persist the vocabulary if it grew (before rows using new ids are written)."""
        if self.vocab_path is None:
            return
        size = sum(len(t) for t in self.vocab.tables.values())
        if size != self.saved_size:
            with self.lock:
                self.vocab.save(self.vocab_path)
                self.saved_size = size


class TokenizeLogic(StatefulBatchLogic[Envelope, Any, bytes]):
    """One user's tokenizer inside the dataflow: releases final tokens as they come and the
    user's online row at most every ``flush_s``.
    """

    def __init__(self, shared: Shared, user_id: str, resume: bytes | None) -> None:
        self.shared = shared
        self.flush = timedelta(seconds=shared.settings.flush_s)
        self.due: datetime | None = None
        self.produced: list[int] = []
        if resume is None:
            self.tok = UserTokenizer(user_id, shared.vocab, shared.settings.tokenizer(),
                                     shared.durations)
        else:
            self.tok, dirty = pickle.loads(resume)
            self.tok.attach(shared.vocab, shared.durations)
            if dirty:  # the row of these events may not have been written before the crash
                self.due = datetime.now(UTC)

    def on_batch(self, values: list[Envelope]) -> tuple[Iterable[Any], bool]:
        """Offer each event; emit final tokens and refusals."""
        out: list[Any] = []
        n_events = 0
        metrics.EVENTS_CONSUMED.inc(len(values))
        accepted = len(self.produced)
        for env in values:
            tokens, reason = self.tok.offer(env.event)  # type: ignore[arg-type]
            if reason is not None:
                out.append(dead_letter(env, reason))
                continue
            self.produced.append(env.produced_ms)
            if env.event.item_id:  # type: ignore[union-attr]
                out.append(env.event)  # on to the item counters
            out.extend(tokens)
            n_events += sum(t.n_events for t in tokens)
        metrics.EVENTS_VALID.inc(len(self.produced) - accepted)
        metrics.observe_tokens(sum(isinstance(o, Token) for o in out), n_events)
        if self.produced and self.due is None:
            self.due = datetime.now(UTC) + self.flush
        return out, StatefulBatchLogic.RETAIN

    def _row(self) -> UserRow:
        row = UserRow(self.tok.user_id, self.tok.preview(), self.tok.max_ts or 0, self.produced)
        self.produced, self.due = [], None
        return row

    def on_notify(self) -> tuple[Iterable[Any], bool]:
        """Emit the user's row (the coalesced online write)."""
        return [self._row()], StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Any], bool]:
        """End of input: optionally close every open token; write the row now."""
        out: list[Any] = []
        if self.shared.settings.finish_at_eof and (self.tok.buffer or self.tok.machine.drafts):
            tokens = self.tok.flush()
            metrics.observe_tokens(len(tokens), sum(t.n_events for t in tokens))
            out.extend(tokens)
            self.due = self.due or datetime.now(UTC)
        if self.due is not None:
            out.append(self._row())
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        """When the pending row is due."""
        return self.due

    def snapshot(self) -> bytes:
        """Pickled now, so later mutation cannot leak into the snapshot."""
        return pickle.dumps((self.tok, self.due is not None))


class ItemLogic(StatefulBatchLogic[InteractionEvent, ItemRow, bytes]):
    """One item's windowed counters; emits its row at most every ``flush_s``."""

    def __init__(self, shared: Shared, item_id: str, resume: bytes | None) -> None:
        self.shared = shared
        self.flush = timedelta(seconds=shared.settings.flush_s)
        self.counter, dirty = pickle.loads(resume) if resume else (ItemCounter(item_id), False)
        self.due: datetime | None = datetime.now(UTC) if dirty else None

    def on_batch(self, values: list[InteractionEvent]) -> tuple[Iterable[ItemRow], bool]:
        """Count the events."""
        changed = False
        for ev in values:
            changed |= self.counter.add(ev)
        if changed and self.due is None:
            self.due = datetime.now(UTC) + self.flush
        return (), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[ItemRow], bool]:
        """Emit the row."""
        self.due = None
        meta = self.shared.catalogue.get(self.counter.item_id)
        return [ItemRow(self.counter.row(meta))], StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[ItemRow], bool]:
        """Write what is pending before the input ends."""
        return self.on_notify() if self.due is not None else ((), StatefulBatchLogic.RETAIN)

    def notify_at(self) -> datetime | None:
        """When the pending row is due."""
        return self.due

    def snapshot(self) -> bytes:
        """Pickled now (see ``TokenizeLogic.snapshot``)."""
        return pickle.dumps((self.counter, self.due is not None))


# ---- the dataflow ---------------------------------------------------------------------------
def build_flow(source: Source, sink: Sink, dead_letters: Sink, shared: Shared,
               name: str = "marquee") -> Dataflow:
    """The dataflow, given its source, its output sink and its dead-letter sink.

    ``sink`` receives ``(key, UserRow | ItemRow | Token)`` with keys ``u:<user>``,
    ``i:<item>`` and ``t:<user>``; ``dead_letters`` receives ``DeadLetter`` records.
    """
    flow = Dataflow(name)
    # KafkaSourceMessage | bytes
    messages = op.input("events", flow, source)
    # Envelope (event or problems)
    decoded = op.map("decode", messages, decode)
    checked = op.branch("valid", decoded, lambda env: env.event is not None)
    # DeadLetter of events that break the contract
    bad = op.map("invalid", checked.falses, lambda env: dead_letter(env, invalid_reason(env)))
    # (user_id, Envelope)
    by_user = op.key_on("by_user", checked.trues, lambda env: env.event.user_id)
    # (user_id, Token | UserRow | DeadLetter | InteractionEvent accepted)
    tokenized = _stateful_by_key("tokenize", by_user, lambda key, resume: TokenizeLogic(
        shared, key, resume))
    refused = op.filter_map("refused", tokenized,
                            lambda kv: kv[1] if isinstance(kv[1], DeadLetter) else None)
    user_out = op.filter_map("user_out", tokenized, _user_out)
    # (item_id, InteractionEvent) of accepted events that name an item
    by_item = op.filter_map("by_item", tokenized,
                            lambda kv: (kv[1].item_id, kv[1])
                            if isinstance(kv[1], InteractionEvent) else None)
    counted = _stateful_by_key("item_stats", by_item,
                               lambda key, resume: ItemLogic(shared, key, resume))
    item_out = op.map("item_out", counted, lambda kv: (f"i:{kv[0]}", kv[1]))
    op.output("outputs", op.merge("all_out", user_out, item_out), sink)
    op.output("dead_letters", op.merge("all_dead", bad, refused), dead_letters)
    return flow


def _user_out(kv: tuple[str, Any]) -> tuple[str, Any] | None:
    user_id, value = kv
    if isinstance(value, Token):
        return f"t:{user_id}", value
    if isinstance(value, UserRow):
        return f"u:{user_id}", value
    return None


def _stateful_by_key(step_id: str, up: Any, make: Any) -> Any:
    """``op.stateful_batch`` whose logic knows its key: Bytewax 0.21 builders only get the
    resume state, so the key is stored in it on first sight.
    """

    class Keyed(StatefulBatchLogic):
        def __init__(self, resume: tuple[str, bytes] | None) -> None:
            self.inner = None if resume is None else make(resume[0], resume[1])
            self.key = None if resume is None else resume[0]

        def on_batch(self, values: list[Any]) -> tuple[Iterable[Any], bool]:
            return self.inner.on_batch([v for _, v in values])  # type: ignore[union-attr]

        def on_notify(self) -> tuple[Iterable[Any], bool]:
            return self.inner.on_notify() if self.inner else ((), self.RETAIN)

        def on_eof(self) -> tuple[Iterable[Any], bool]:
            return self.inner.on_eof() if self.inner else ((), self.RETAIN)

        def notify_at(self) -> datetime | None:
            return self.inner.notify_at() if self.inner else None

        def snapshot(self) -> tuple[str, bytes]:
            return (self.key, self.inner.snapshot())  # type: ignore[return-value,union-attr]

    # Carry the key in the value so the logic can build itself on the first batch.
    with_key = op.map(f"{step_id}_key", up, lambda kv: (kv[0], (kv[0], kv[1])))

    class FirstSight(Keyed):
        def on_batch(self, values: list[Any]) -> tuple[Iterable[Any], bool]:
            if self.inner is None:
                self.key = values[0][0]
                self.inner = make(self.key, None)
            return super().on_batch(values)

    return op.stateful_batch(step_id, with_key, FirstSight)


# ---- wiring for production ------------------------------------------------------------------
KNOWN_VALUES: dict[str, tuple[str, ...]] = {
    "device": ("tv", "phone", "tablet", "web"),
    "surface": SURFACES + ("search",),
}


def load_shared(settings: FlowSettings) -> Shared:
    """Vocabulary (persisted ids first, then catalogue titles in id order) and catalogue.

    Seeding the vocabulary from the catalogue in sorted order (and the usual devices and
    surfaces) makes ids the same in every run, whatever the order events arrive in. Values
    seen for the first time are numbered through the shared, locked ``vocab.json``
    (``SharedVocab``), so every worker process on the machine gives them the same id.
    """
    data = settings.data_dir
    vocab_path = data / "vocab.json"
    vocab = SharedVocab(vocab_path)
    catalogue: dict[str, dict[str, Any]] = {}
    cat_path = data / "catalogue.jsonl"
    if cat_path.exists():
        for line in cat_path.read_text().splitlines():
            if line.strip():
                title = json.loads(line)
                catalogue[title["item_id"]] = title
    vocab.ensure("item", sorted(catalogue))
    for facet, values in KNOWN_VALUES.items():
        vocab.ensure(facet, values)
    durations = {k: int(v.get("duration_s", 0)) for k, v in catalogue.items()
                 if v.get("duration_s")}
    return Shared(vocab, durations, catalogue, settings, None)


def production_flow(settings: FlowSettings | None = None, kafka: Any = None,
                    online: str | None = None, name: str = "marquee") -> Dataflow:
    """The flow over the configured Kafka topics, Feast store and token log."""
    from bytewax.connectors.kafka import KafkaSource

    from feature_repo.store import FeatureWriter, open_store
    from streams.config import KafkaSettings
    from streams.sinks import DeadLetterSink, OutputSink

    settings = settings or FlowSettings()
    kafka = kafka or KafkaSettings()
    shared = load_shared(settings)
    source = KafkaSource([kafka.bootstrap_servers], [kafka.events_topic], tail=settings.tail,
                         batch_size=settings.batch_size, add_config=_consumer_config())
    data_dir = settings.data_dir
    sink = OutputSink(lambda: FeatureWriter(open_store(online=online, data_dir=data_dir)),
                      data_dir / "tokens", settings.flush_s, settings.sink_partitions,
                      shared.save_vocab, key=str(data_dir.resolve()))
    dead = DeadLetterSink(kafka.client_config(), kafka.dead_letter_topic)
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
        metrics.watch_lag(kafka.client_config(), kafka.events_topic)
    log.info("flow %s: %s -> feast (%s) + %s; dead letters -> %s; %s", name,
             kafka.events_topic, online or "env", data_dir / "tokens", kafka.dead_letter_topic,
             settings.model_dump_json())
    return build_flow(source, sink, dead, shared, name)


def _consumer_config() -> dict[str, str]:
    return {"fetch.wait.max.ms": "50"}


def from_env() -> Dataflow:
    """Factory for ``python -m bytewax.run "streams.flow:from_env()"``: all from the env."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return production_flow()
