"""The streaming tokenizer as a Bytewax dataflow: Kafka events -> tokens -> Feast + token log.

Reads top to bottom (STYLE.md §5). Items are batches (``streams.records``): Bytewax's cost is
per item and per step, so one poll of a Kafka partition is one item, and the per-event work
runs in plain loops from ``streams.contract.fast_events``, ``streams.shards`` and
``streams.contract.tokenizer``:

    polls (Kafka) -> decode + route: valid events grouped by user shard, bad ones dead-lettered
                     (contract, wrong key, future time)
                  -> tokenize, per user shard (dedupe, reorder, merge) -> [late/dup: dead letter]
                     |-> user rows of changed users, every flush_s -------> Feast user_tokens
                     |-> final tokens, every log_flush_s ------------------> token log (parquet)
                     |-> (item, action, ts) per item shard -> windowed counters, every flush_s
                                                                 -----------> Feast item_stats
                     |-> events with a request_id, per user shard --.
    rankings (Kafka) -> decode: experiment rankings, per user shard -+-> join, per user shard
                        (streams.outcomes), counts every log_flush_s -> experiment table (SQLite)

Run it with ``marquee flow`` (which wraps ``python -m bytewax.run "streams.flow:from_env()"``).
Delivery is at-least-once with Bytewax recovery: rows not yet written and tokens not yet in
the log are part of the snapshot; user/item rows are last-write-wins and token log rows carry
a stable ``token_id``, so a replay after a crash changes nothing. A step that keeps crashing
on one message does not loop: the message is found and dead-lettered as ``poison``
(``streams.quarantine``, ``streams.guards``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams import compiled, dead_letters, metrics, refusals
from streams.contract.catalogue import Title, read_catalogue
from streams.contract.fast_events import decode_event, fast_event
from streams.contract.layout import DataLayout
from streams.contract.listen import BindHost, bind_host_field
from streams.contract.merge import TokenizerConfig
from streams.contract.settings import ENV_FILE
from streams.contract.tokens import KNOWN_VALUES, Vocab
from streams.drill import Drill, parse_faults
from streams.gc_tuning import tune_for_flow
from streams.guards import guard_logic, guard_router, slice_ranges, trace_counts, traced_ranges
from streams.outcome_steps import ExperimentSink, OutcomeLogic, RankingRouter
from streams.outcomes import JoinConfig
from streams.quarantine import Quarantine
from streams.records import DeadLetter, ItemRows, Outcomes, Slice, TokenBatch, UserRows
from streams.shards import PACER, ItemShard, ShardMap, UserShard
from streams.shared_vocab import SharedVocab

log = logging.getLogger(__name__)
DEAD = "!dead"  # the key of dead-letter batches out of the decode step (never a shard name)
OTHER = "other"  # the device or surface of an event whose value did not fit the vocabulary


class FlowSettings(BaseSettings):
    """The flow's knobs; each is overridable as ``MARQUEE_FLOW_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="MARQUEE_FLOW_", env_file=ENV_FILE, extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="vocab, catalogue, token log, feast")
    flush_s: float = Field(default=0.1, gt=0, description="changed users' and items' online "
                           "rows are written on this wall-clock grid (coalesced in between)")
    flush_share: float = Field(default=0.5, gt=0, le=1, description="under load, flushes "
                               "are spaced so that building and writing rows takes at most "
                               "this share of the flow's time (a backlog is then written "
                               "with more coalescing, at the cost of freshness)")
    log_flush_s: float = Field(default=5.0, gt=0, description="final tokens are appended to "
                               "the token log this often (and at every snapshot/EOF), and "
                               "changed experiment counts written to their table")
    batch_size: int = Field(default=5000, ge=1, description="Kafka messages per poll")
    shards: int = Field(default=16, ge=1, description="user shards and item shards (the unit "
                        "of state and of parallelism); fixed for a recovery directory")
    finish_at_eof: bool = Field(default=False, description="close every open token when the "
                                "input ends (replays); a tailing flow never ends")
    tail: bool = Field(default=True, description="keep waiting for new events")
    metrics_port: int = Field(default=0, ge=0, description="serve /metrics here (0 = off)")
    store_outage_s: float = Field(default=300.0, ge=0, description="a write the online store "
                                  "fails is tried again (the flow waits, reading nothing) for "
                                  "this long before the process exits to restart from recovery "
                                  "(0 = exit at once)")
    state_dir: Path | None = Field(default=None, description="user shards keep their users' "
                                   "snapshots here, versioned, so a snapshot writes only the "
                                   "users it changed (set by `marquee flow` inside the "
                                   "recovery directory; unset: snapshots carry every user)")
    bind_host: BindHost = bind_host_field("bind_host")
    max_lateness_ms: int = Field(default=10_000, ge=0, description="events are reordered "
                                 "within this window; older ones are dead-lettered as late")
    session_gap_ms: int = Field(default=30 * 60_000, ge=0, description="inactivity that ends "
                                "a session (and every open merge group)")
    accidental_weight: float = Field(default=0.0, ge=0, le=1, description="weight of "
                                     "accidental clicks and scrolled-past impressions (0 drops "
                                     "them)")
    max_future_ms: int = Field(default=300_000, ge=0, description="events dated more than "
                               "this after their arrival (Kafka timestamp, or the clock if "
                               "that is earlier) are dead-lettered as future "
                               "(they would make the user's later events late)")
    max_facet_values: int = Field(default=1000, ge=16, description="device and surface values "
                                  "with their own vocabulary id (each); later new ones become "
                                  "`other` (marquee_vocab_overflow_total)")
    dead_letter_max_bytes: int = Field(default=dead_letters.DEFAULT_MAX_BYTES,
                                       ge=dead_letters.MIN_MAX_BYTES, le=900_000,
                                       description="largest dead-letter record; a bigger "
                                       "refused message is cut (size and SHA-256 kept)")
    fetch_wait_ms: int = Field(default=10, ge=1, le=10_000, description="longest a fetch "
                               "waits at the broker; short for freshness on a memory broker, "
                               "about 500 on Tansu's S3 storage, which answers empty when it "
                               "cannot read the records in time (marquee up sets that)")
    join_window_ms: int = Field(default=30 * 60_000, ge=0, le=3_600_000, description="an "
                                "event that carries a request_id counts for its logged "
                                "ranking's experiment when within this much event time of it "
                                "(at most the tokenizer's dedupe window, 1 h; 0 turns the "
                                "experiment join off)")
    join_grace_ms: int = Field(default=30_000, ge=0, description="an event whose ranking has "
                               "not been read waits until the rankings read for its shard are "
                               "this much newer than it, then counts as not joined")
    join_max_held: int = Field(default=200_000, ge=1, description="rankings held per user "
                               "shard for the join; past it the oldest minute is dropped")
    join_max_pending: int = Field(default=100_000, ge=1, description="events per user shard "
                                  "waiting for their ranking; past it new ones are not joined "
                                  "(reason overflow)")
    fault: str | None = Field(default=None, description="fault drill, off when unset: "
                       "<event_id>:raise (the tokenize step raises) or <event_id>:kill (it "
                       "SIGKILLs its process) on that event, comma-separated; checks that "
                       "supervision restarts the flow and quarantine dead-letters the event "
                       "as poison")

    pure_python: bool = Field(default=False, validation_alias="MARQUEE_PURE_PYTHON",
                              description="run the pure-Python source of the hot modules "
                              "the install compiles (the tokenizer's merge rules and token "
                              "functions), the reference the compiled ones are tested against; "
                              "read from the environment when `streams` is imported, in every "
                              "process (`marquee version` says which path runs)")

    @field_validator("pure_python")
    @classmethod
    def _pure_python_seen_at_import(cls, value: bool) -> bool:
        if value != compiled.PURE_AT_IMPORT:
            raise ValueError(f"{compiled.PURE_ENV} is read when `streams` is first imported, "
                             "from the environment only: export it before the process starts "
                             "(not in .env, not after the import)")
        return value

    @field_validator("fault")
    @classmethod
    def _faults_parse(cls, value: str | None) -> str | None:
        parse_faults(value or "")
        return value

    def tokenizer(self) -> TokenizerConfig:
        """The tokenizer's config from these settings."""
        return TokenizerConfig(max_lateness_ms=self.max_lateness_ms,
                               session_gap_ms=self.session_gap_ms,
                               accidental_weight=self.accidental_weight,
                               dedupe_window_ms=max(3_600_000, self.max_lateness_ms))

    def join(self) -> JoinConfig:
        """The experiment join's config from these settings."""
        return JoinConfig(window_ms=self.join_window_ms, grace_ms=self.join_grace_ms,
                          lateness_ms=self.max_lateness_ms, max_held=self.join_max_held,
                          max_pending=self.join_max_pending)


@dataclass
class Shared:
    """Per-process objects every step uses: the vocabulary, catalogue and config."""

    vocab: Vocab
    durations: Mapping[str, int]
    catalogue: Mapping[str, Title]
    settings: FlowSettings
    quarantine: Quarantine | None = None  # None: steps run unguarded (tests, benchmarks)
    join: JoinConfig | None = None  # None: no experiment join (tokenize emits no Outcomes)

    def __post_init__(self) -> None:
        self.user_shard = ShardMap("u", self.settings.shards)
        self.item_shard = ShardMap("i", self.settings.shards)
        self.drill = Drill.from_setting(self.settings.fault or "")
        PACER.share = self.settings.flush_share  # one pacer per process


# ---- step logic -----------------------------------------------------------------------------
class Router:
    """Decode one poll batch and group its valid events by user shard (one call per poll).

    No message can make it raise: whatever is wrong with a message (its bytes, its key, its
    time) makes it a dead letter. Besides the contract, an event is refused when its message
    key is not its ``user_id`` (``wrong_key``: a user's events must share one partition, or
    their order, and so lateness and dedupe, would depend on how partitions interleave) and
    when its time is more than ``max_future_ms`` after its arrival (``future``: it would move
    the user's watermark and make every later event late). Arrival is the earlier of the
    Kafka record's timestamp and the clock at read time: the record's timestamp makes a replay
    decide as the live run did, and the clock stops a producer whose clock (or forgery) dates
    the record ahead along with the event. A record without a timestamp (pre-0.10 message
    format) takes the clock.
    """

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.shared_vocab = shared.vocab if isinstance(shared.vocab, SharedVocab) else None

    def __call__(self, poll: list[Any]) -> list[tuple[str, Any]]:
        """``[(user shard, Slice)...]`` and ``(DEAD, [DeadLetter...])`` if any were refused.

        Messages are ``confluent_kafka.Message`` (tests build them with the same class).
        """
        now = int(time.time() * 1000)
        max_future = self.shared.settings.max_future_ms
        shard_of = self.shared.user_shard
        known = shard_of.cache  # user -> shard, read inline (a call per event costs more)
        slices: dict[str, Slice] = {}
        dead: list[DeadLetter] = []
        for msg in poll:
            raw, key, partition, offset = msg.value() or b"", msg.key(), msg.partition(), \
                msg.offset()
            produced = msg.timestamp()[1]
            if produced <= 0:
                produced = now
            try:
                ev = fast_event(raw)
                if ev is None:
                    ev, problems = decode_event(raw)
                    if ev is None:
                        reason = refusals.invalid(problems[0])
                        dead.append(DeadLetter(reason, tuple(str(p) for p in problems), raw,
                                               key, partition, offset, produced))
                        continue
                user_id = ev.user_id
                if key is None or key != user_id.encode():
                    dead.append(DeadLetter(refusals.WRONG_KEY, (refusals.wrong_key(
                        key, user_id),), raw, key, partition, offset, produced))
                    continue
                if ev.ts > min(produced, now) + max_future:
                    dead.append(DeadLetter(refusals.FUTURE, (refusals.future(
                        ev.ts, min(produced, now), max_future),), raw, key, partition, offset,
                        produced))
                    continue
                name = known.get(user_id) or shard_of(user_id)
            except Exception as exc:  # noqa: BLE001 - one message must never stop the flow
                dead.append(DeadLetter("invalid_event", (
                    f"event: could not be read ({type(exc).__name__}: {str(exc)[:200]}); "
                    "send one JSON object per message, UTF-8 encoded",), raw, key, partition,
                    offset, produced))
                continue
            sl = slices.get(name)
            if sl is None:
                sl = slices[name] = Slice(shard=name)
            sl.events.append(ev)
            sl.produced.append(produced)
            sl.origins.append((raw, key, partition, offset))
        self._count(poll, dead)
        self._number_new_values(slices.values())
        out: list[tuple[str, Any]] = list(slices.items())
        if dead:
            out.append((DEAD, dead))
        return out

    @staticmethod
    def _count(poll: list[Any], dead: list[DeadLetter]) -> None:
        metrics.EVENTS_CONSUMED.inc(len(poll))
        for reason, n in Counter(d.reason for d in dead).items():
            metrics.EVENTS_INVALID.labels(reason=reason).inc(n)

    def _number_new_values(self, slices: Iterable[Slice]) -> None:
        """Number new items, devices and surfaces in one round per batch (one lock with a
        ``SharedVocab``; the tokenizer then always finds them in memory). Devices and
        surfaces are free-form strings, so each keeps at most ``max_facet_values`` values:
        an event with a value past that is given ``OTHER`` and counted as an overflow.
        """
        vocab = self.shared.vocab
        items, devices, surfaces = (vocab.tables[f] for f in ("item", "device", "surface"))
        new: dict[str, list[str]] = {"item": [], "device": [], "surface": []}
        for sl in slices:
            for ev in sl.events:
                if ev.item_id not in items and ev.item_id:
                    new["item"].append(ev.item_id)
                if ev.device not in devices:
                    new["device"].append(ev.device)
                if ev.surface not in surfaces:
                    new["surface"].append(ev.surface)
        cap = self.shared.settings.max_facet_values
        for facet, values in new.items():
            if values:
                full = self._number(facet, values, None if facet == "item" else cap)
                if full:
                    self._overflow(facet, slices)

    def _number(self, facet: str, values: list[str], limit: int | None) -> bool:
        """Give ``values`` ids while the facet has room; whether some were left out."""
        vocab, table = self.shared.vocab, self.shared.vocab.tables[facet]
        if self.shared_vocab is not None:
            self.shared_vocab.ensure(facet, values, limit=limit)
        else:
            for value in dict.fromkeys(values):
                if limit is None or len(table) < limit:
                    vocab.id(facet, value)
        return any(v not in table for v in values)

    def _overflow(self, facet: str, slices: Iterable[Slice]) -> None:
        vocab = self.shared.vocab
        table = vocab.tables[facet]
        if OTHER not in table:  # beyond the cap: every overflow shares this one id
            if self.shared_vocab is not None:
                self.shared_vocab.ensure(facet, [OTHER])
            else:
                vocab.id(facet, OTHER)
        n = 0
        for sl in slices:
            for ev in sl.events:
                if getattr(ev, facet) not in table:
                    setattr(ev, facet, OTHER)
                    n += 1
        metrics.VOCAB_OVERFLOW.labels(facet=facet).inc(n)


def _tick(period_s: float) -> datetime:
    """The next flush time: on the wall-clock grid, paced by the flush cost (``PACER``)."""
    return datetime.fromtimestamp(PACER.next_tick(period_s), UTC)


class TokenizeLogic(StatefulBatchLogic[Slice, Any, dict]):
    """A user shard inside the dataflow: emits refusals and item counts at once, user rows on
    the ``flush_s`` grid and final tokens on the ``log_flush_s`` grid.
    """

    def __init__(self, shared: Shared, resume: dict | None) -> None:
        s = shared.settings
        self.settings = s
        self.drill = shared.drill
        self.shard = UserShard(shared.vocab, s.tokenizer(), shared.durations, shared.item_shard,
                               resume, s.state_dir)
        self.join = shared.join is not None
        if self.join:
            self.shard.outcomes = []
        self.watermark = 0  # the newest event time of the shard (the join's clock)
        self.sent_watermark = 0
        now = datetime.now(UTC)  # owed before a crash: write at once
        self.rows_due = now if self.shard.dirty else None
        self.log_due = now if self.shard.tokens else None

    def on_batch(self, values: list[Slice]) -> tuple[Iterable[Any], bool]:
        """Tokenize the slices; refusals and item counts go out now."""
        out: list[Any] = []
        for sl in values:
            if self.drill is not None:
                self.drill.meet(sl.events)
            refused, counted = self.shard.offer(sl)
            if refused:
                out.append(refused)
            out.extend(counted.items())
            if self.join:
                joined = self._outcomes(sl)
                if joined is not None:
                    out.append(joined)
        if self.rows_due is None and self.shard.dirty:
            self.rows_due = _tick(self.settings.flush_s)
        if self.log_due is None and self.shard.tokens:
            self.log_due = _tick(self.settings.log_flush_s)
        out.extend(self._due(datetime.now(UTC)))
        return out, StatefulBatchLogic.RETAIN

    def _outcomes(self, sl: Slice) -> Outcomes | None:
        """The slice's accepted events with a request_id, for the join, with the shard's
        event-time watermark (its last event's time; a slice is one poll of one partition, in
        order); also sent alone when the watermark moved a second, so the join's window
        closes without such events.
        """
        if sl.events and sl.events[-1].ts > self.watermark:
            self.watermark = sl.events[-1].ts
        events = self.shard.outcomes
        if not events and self.watermark - self.sent_watermark < 1000:
            return None
        self.shard.outcomes = []
        self.sent_watermark = self.watermark
        return Outcomes(events or [], self.watermark, sl.shard)

    def _due(self, now: datetime, everything: bool = False) -> list[Any]:
        """What is due at ``now``: rows on their tick, tokens on theirs; ``everything``
        (end of input) takes all that is owed, scheduled or not.
        """
        out: list[Any] = []
        if everything or (self.rows_due is not None and self.rows_due <= now):
            start = time.perf_counter()
            tick = self.rows_due.timestamp() if self.rows_due else None
            self.rows_due = None
            rows = self.shard.take_rows()
            if rows is not None:
                out.append(rows)
            PACER.spent(time.perf_counter() - start, tick)
        if everything or (self.log_due is not None and self.log_due <= now):
            self.log_due = None
            tokens = self.shard.take_tokens()
            if tokens is not None:
                out.append(tokens)
        return out

    def on_notify(self) -> tuple[Iterable[Any], bool]:
        """A flush is due."""
        return self._due(datetime.now(UTC)), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Any], bool]:
        """End of input: optionally close every open token; write everything owed."""
        if self.settings.finish_at_eof:
            self.shard.finish()
        return self._due(datetime.now(UTC), everything=True), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        """The sooner of the pending flushes."""
        dues = [d for d in (self.rows_due, self.log_due) if d is not None]
        return min(dues) if dues else None

    def snapshot(self) -> dict:
        """Users touched since the last snapshot are pickled now (see ``streams.shards``)."""
        return self.shard.snapshot()


class ItemStatsLogic(StatefulBatchLogic[list, ItemRows, dict]):
    """An item shard: counts now, rows of changed items on the ``flush_s`` grid."""

    def __init__(self, shared: Shared, resume: dict | None) -> None:
        self.flush_s = shared.settings.flush_s
        self.shard = ItemShard(shared.catalogue, resume)
        self.due = datetime.now(UTC) if self.shard.dirty else None

    def on_batch(self, values: list[list]) -> tuple[Iterable[ItemRows], bool]:
        """Count ``(item_id, column, ts)`` updates."""
        for updates in values:
            self.shard.count(updates)
        if self.due is None and self.shard.dirty:
            self.due = _tick(self.flush_s)
        if self.due is not None and self.due <= datetime.now(UTC):
            return self.on_notify()
        return (), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[ItemRows], bool]:
        """Emit the changed items' rows."""
        start = time.perf_counter()
        tick, self.due = (self.due.timestamp() if self.due else None), None
        rows = self.shard.take_rows()
        PACER.spent(time.perf_counter() - start, tick)
        return ([rows] if rows else []), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[ItemRows], bool]:
        """Write what is owed before the input ends."""
        return self.on_notify()

    def notify_at(self) -> datetime | None:
        """When the pending rows are due."""
        return self.due

    def snapshot(self) -> dict:
        """Counters touched since the last snapshot are pickled now."""
        return self.shard.snapshot()


# ---- the dataflow ---------------------------------------------------------------------------
def build_flow(source: Source, sink: Sink, dead_letters: Sink, shared: Shared,
               name: str = "marquee", rankings: Source | None = None,
               experiments: Sink | None = None) -> Dataflow:
    """The dataflow, given its source, its output sink and its dead-letter sink.

    ``source`` yields poll batches (lists of ``confluent_kafka.Message``); ``sink`` receives
    ``UserRows``, ``ItemRows`` and ``TokenBatch`` items; ``dead_letters`` receives lists of
    ``DeadLetter``. With ``shared.join``, ``rankings`` (polls of the rankings topic) and
    ``experiments`` (``ExperimentRows``), the flow also counts experiment outcomes.
    """
    flow = Dataflow(name)
    # list[confluent_kafka.Message]: one poll of one partition
    polls = op.input("events", flow, source)
    # (user shard, Slice) | (DEAD, [DeadLetter]) for invalid, wrong_key, future and poison
    routed = op.flat_map("decode_route", polls,
                         guard_router(Router(shared), shared.quarantine, DEAD))
    bad = op.filter_map("invalid", routed, lambda kv: kv[1] if kv[0] == DEAD else None)
    slices = op.filter("valid", routed, lambda kv: kv[0] != DEAD)
    # (user shard, [DeadLetter] | (item shard, updates) | UserRows | TokenBatch)
    tokenized = op.stateful_batch("tokenize", slices, lambda resume: guard_logic(
        "tokenize", TokenizeLogic(shared, resume), shared.quarantine, slice_ranges,
        trace_counts))
    refused = op.filter_map("refused", tokenized,
                            lambda kv: kv[1] if isinstance(kv[1], list) else None)
    # (item shard, [(item_id, column, ts)])
    counts = op.filter_map("by_item", tokenized,
                           lambda kv: kv[1] if isinstance(kv[1], tuple) else None)
    user_out = op.filter_map("user_out", tokenized,
                             lambda kv: kv[1] if isinstance(kv[1], UserRows | TokenBatch)
                             else None)
    # (item shard, ItemRows)
    counted = op.stateful_batch("item_stats", counts, lambda resume: guard_logic(
        "item_stats", ItemStatsLogic(shared, resume), shared.quarantine, traced_ranges))
    item_out = op.map("item_out", counted, lambda kv: kv[1])
    op.output("outputs", op.merge("all_out", user_out, item_out), sink)
    op.output("dead_letters", op.merge("all_dead", bad, refused), dead_letters)
    if shared.join is not None:
        if rankings is None or experiments is None:
            raise ValueError("the experiment join needs the rankings source and the "
                             "experiments sink")
        # (user shard, Outcomes) from tokenize, (user shard, Rankings) from the rankings topic
        outcomes = op.filter_map("outcomes", tokenized,
                                 lambda kv: kv if type(kv[1]) is Outcomes else None)
        logged = op.flat_map("decode_rankings", op.input("rankings", flow, rankings),
                             RankingRouter(shared))
        joined = op.stateful_batch("experiments", op.merge("join_in", outcomes, logged),
                                   lambda resume: OutcomeLogic(shared, resume))
        op.output("experiment_counts", op.map("experiment_rows", joined, lambda kv: kv[1]),
                  experiments)
    return flow


# ---- wiring for production ------------------------------------------------------------------
def load_shared(settings: FlowSettings) -> Shared:
    """Vocabulary (persisted ids first, then catalogue titles in id order) and catalogue.

    Seeding the vocabulary from the catalogue in sorted order (and the known devices and
    surfaces) makes ids the same in every run, whatever the order events arrive in. Values
    seen for the first time are numbered through the shared, locked ``vocab.json``
    (``SharedVocab``), so every worker process on the machine gives them the same id.
    """
    layout = DataLayout(settings.data_dir)
    vocab = SharedVocab(layout.vocab)
    catalogue = read_catalogue(layout.catalogue)
    vocab.ensure("item", sorted(catalogue))
    for facet, values in KNOWN_VALUES.items():
        vocab.ensure(facet, values)
    durations = {k: t.duration_s for k, t in catalogue.items() if t.duration_s}
    return Shared(vocab, durations, catalogue, settings)


def production_flow(settings: FlowSettings | None = None, kafka: Any = None,
                    online: str | None = None, name: str = "marquee") -> Dataflow:
    """The flow over the configured Kafka topics, Feast store and token log."""
    from streams.config import KafkaSettings

    settings = settings or FlowSettings()  # a bad setting fails before seconds of imports
    kafka = kafka or KafkaSettings()
    from feature_repo.store import FeatureWriter, open_store
    from streams.kafka_batches import KafkaBatchSource
    from streams.sinks import DeadLetterSink, OutputSink

    shared = load_shared(settings)
    shared.quarantine = Quarantine.open(DataLayout(settings.data_dir).quarantine(
        kafka.events_topic))
    rankings, experiments = _experiment_join(settings, kafka, shared)
    if shared.drill is not None:
        log.warning("fault drill on: the tokenize step fails on events %s "
                    "(MARQUEE_FLOW_FAULT; unset it to turn it off)", shared.drill.faults)
    source = KafkaBatchSource([kafka.bootstrap_servers], [kafka.events_topic], tail=settings.tail,
                              batch_size=settings.batch_size,
                              add_config=consumer_config(settings.fetch_wait_ms),
                              group_id=kafka.consumer_group)
    data_dir = settings.data_dir
    sink = OutputSink(lambda: FeatureWriter(open_store(online=online, data_dir=data_dir)),
                      DataLayout(data_dir).tokens, key=str(data_dir.resolve()),
                      outage_s=settings.store_outage_s)
    dead = DeadLetterSink(kafka.client_config(), kafka.dead_letter_topic,
                          settings.dead_letter_max_bytes)
    if settings.metrics_port:
        metrics.serve(settings.metrics_port, settings.bind_host)
        metrics.watch_lag(kafka.client_config(), kafka.events_topic)
    log.info("flow %s: %s -> feast (%s) + %s; dead letters -> %s; hot modules %s; %s", name,
             kafka.events_topic, online or "env", DataLayout(data_dir).tokens,
             kafka.dead_letter_topic, compiled.describe(), settings.model_dump_json())
    return build_flow(source, sink, dead, shared, name, rankings, experiments)


def _experiment_join(settings: FlowSettings, kafka: Any, shared: Shared
                     ) -> tuple[Source | None, Sink | None]:
    """The rankings source and the experiment table's sink, and ``shared.join`` set, when the
    join is on (``join_window_ms`` > 0) and the rankings topic exists (``marquee up`` and
    ``marquee topics`` create it with the others); else nothing.
    """
    from streams.kafka_batches import KafkaBatchSource
    from streams.topics import topic_exists

    if not settings.join_window_ms:
        return None, None
    if not topic_exists(kafka, kafka.rankings_topic):
        log.warning("no rankings topic %r: experiment outcomes are not counted (create it "
                    "with the other topics, then restart the flow)", kafka.rankings_topic)
        return None, None
    shared.join = settings.join()
    source = KafkaBatchSource([kafka.bootstrap_servers], [kafka.rankings_topic],
                              tail=settings.tail, batch_size=settings.batch_size,
                              add_config=consumer_config(settings.fetch_wait_ms))
    table = DataLayout(settings.data_dir).experiments
    log.info("experiment join: %s + events with a request_id -> %s (window %d ms)",
             kafka.rankings_topic, table, settings.join_window_ms)
    return source, ExperimentSink(table)


def consumer_config(fetch_wait_ms: int = 10) -> dict[str, str]:
    """Consumer settings: a fetch comes back within ``fetch_wait_ms`` (10 ms: low latency on
    a memory broker; Tansu on S3 needs ~500 ms to read stored records into one answer).
    """
    return {"fetch.wait.max.ms": str(fetch_wait_ms)}


def from_env() -> Dataflow:
    """Factory for ``python -m bytewax.run "streams.flow:from_env()"``: all from the env."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    flow = production_flow()
    tune_for_flow()
    return flow
