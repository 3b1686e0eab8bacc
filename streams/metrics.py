"""The flow's Prometheus metrics, defined once (STYLE.md §9); the flow serves them on a port.

Labels are low-cardinality only: the refusal reason, the partition, the feature view, the
experiment and variant (never a user or an item).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

EVENTS_CONSUMED = Counter("marquee_events_consumed_total",
                          "messages read from the events topic")
EVENTS_VALID = Counter("marquee_events_valid_total",
                       "events that passed the contract and were accepted by the tokenizer")
EVENTS_INVALID = Counter("marquee_events_invalid_total",
                         "events refused, by reason (contract field, late, duplicate)",
                         ["reason"])
EVENTS_DEAD_LETTERED = Counter("marquee_events_dead_lettered_total",
                               "events written to the dead-letter topic")
TOKENS_EMITTED = Counter("marquee_tokens_emitted_total", "final tokens released to the token log")
EVENTS_MERGED = Counter("marquee_token_events_total",
                        "accepted events inside released tokens (merge ratio = "
                        "this / marquee_tokens_emitted_total)")
MERGE_RATIO = Gauge("marquee_token_merge_ratio",
                    "events per released token since start (>= 1; higher = more merging)")
FEAST_WRITE_SECONDS = Histogram(
    "marquee_feast_write_seconds", "one coalesced online-store write", ["feature_view"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
FEAST_ROWS = Counter("marquee_feast_rows_written_total", "rows written to the online store",
                     ["feature_view"])
FRESHNESS_SECONDS = Histogram(
    "marquee_event_freshness_seconds",
    "Kafka record timestamp (producer time) -> the event's effect written online",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0))
VOCAB_OVERFLOW = Counter("marquee_vocab_overflow_total",
                         "events whose device or surface got the shared `other` id because "
                         "the facet's vocabulary was full (MARQUEE_FLOW_MAX_FACET_VALUES)",
                         ["facet"])
CONSUMER_LAG = Gauge("marquee_consumer_lag_messages",
                     "high watermark - next offset to read, per events-topic partition this "
                     "process reads (NaN while the broker does not answer: unknown, not 0)",
                     ["partition"])
OFFSET_COMMITS = Counter("marquee_offset_commits_total",
                         "events-topic offsets committed to the consumer group after a "
                         "snapshot (for lag tools), by result: ok, failed", ["result"])
STORE_UP = Gauge("marquee_online_store_up",
                 "1 when the flow's last online-store write succeeded, 0 while it waits for "
                 "the store to come back (MARQUEE_FLOW_STORE_OUTAGE_S)")
STORE_RETRIES = Counter("marquee_online_store_retries_total",
                        "online-store writes tried again after the store failed them")
BROKER_UP = Gauge("marquee_broker_up",
                  "1 when the broker answered the flow's last metadata probe, else 0")

EXPERIMENT_UNJOINED = Counter("marquee_experiment_unjoined_events_total",
                              "events with a request_id that counted for no experiment, by "
                              "reason: not_held (the ranking ran no experiment, was not "
                              "logged, or left the window), not_shown (the item is not in "
                              "it), outside_window, overflow", ["reason"])
RANKINGS_UNREADABLE = Counter("marquee_experiment_rankings_unreadable_total",
                              "records of the rankings topic that could not be read (skipped)")


class ExperimentCollector(Collector):
    """``marquee_experiment_*`` from the join state of this process's user shards, read at
    scrape time: the counts are the state's own (restored with it after a restart), so they
    are exact totals, not what this process happened to see since it started.
    """

    def __init__(self) -> None:
        self.shards: dict[str, Any] = {}  # shard name -> streams.outcomes.OutcomeShard

    def collect(self) -> Iterator[Any]:
        """The counts summed over this process's shards."""
        from streams.outcomes import ALL, Counts

        totals: dict[tuple[str, str], Counts] = {}
        for shard in list(self.shards.values()):
            for key, counts in list(shard.counts.items()):
                totals.setdefault(key, Counts()).add(counts)
        labels = ["experiment", "variant"]
        families = {
            name: CounterMetricFamily(f"marquee_experiment_{name}", doc, labels=labels)
            for name, doc in (
                ("rankings", "logged rankings of an experiment joined by the flow, per "
                             "variant in them"),
                ("impressions", "shown (ranking, item) pairs, by the variant that placed the "
                                "item"),
                ("clicks", "shown pairs clicked"), ("plays", "shown pairs played"),
                ("completes", "shown pairs played to the end"),
                ("watch_seconds", "seconds watched of shown pairs"))}
        preferred = GaugeMetricFamily("marquee_experiment_preferred_requests",
                                      "interleaved requests whose plays favour the variant "
                                      "(team-draft credit)", labels=labels)
        tied = GaugeMetricFamily("marquee_experiment_tied_requests",
                                 "interleaved requests with as many plays of each team",
                                 labels=["experiment"])
        for (experiment, variant), c in sorted(totals.items()):
            if variant == ALL:
                tied.add_metric([experiment], c.tied)
                continue
            values = {"rankings": c.rankings, "impressions": c.impressions,
                      "clicks": c.clicks, "plays": c.plays, "completes": c.completes,
                      "watch_seconds": c.watch_s}
            for name, value in values.items():
                families[name].add_metric([experiment, variant], value)
            if (experiment, ALL) in totals:
                preferred.add_metric([experiment, variant], c.preferred)
        yield from families.values()
        yield preferred
        yield tied


EXPERIMENTS = ExperimentCollector()
REGISTRY.register(EXPERIMENTS)


# When a list, every freshness observation is also appended here (benchmarks read it).
FRESHNESS_SAMPLES: list[float] | None = None
_partitions: set[int] = set()  # the events-topic partitions this process reads


def observe_freshness(seconds: float) -> None:
    """One event became visible online ``seconds`` after it was produced."""
    FRESHNESS_SECONDS.observe(seconds)
    if FRESHNESS_SAMPLES is not None:
        FRESHNESS_SAMPLES.append(seconds)


def observe_freshness_many(done_ms: float, produced_ms: list[int]) -> None:
    """Events produced at ``produced_ms`` became visible online at ``done_ms``: one
    histogram update per bucket, not per event (a flush can make thousands visible).
    """
    if not produced_ms:
        return
    import numpy as np

    ages = np.maximum(done_ms - np.asarray(produced_ms, dtype=np.float64), 0.0) / 1000
    if FRESHNESS_SAMPLES is not None:
        FRESHNESS_SAMPLES.extend(ages.tolist())
    bounds = getattr(FRESHNESS_SECONDS, "_upper_bounds", None)
    buckets = getattr(FRESHNESS_SECONDS, "_buckets", None)
    if bounds is None or buckets is None:  # prometheus_client changed: the slow way
        for age in ages.tolist():
            FRESHNESS_SECONDS.observe(age)
        return
    # observe() counts a value in the first bucket whose upper bound is >= it.
    counts = np.bincount(np.searchsorted(np.asarray(bounds), ages, side="left"),
                         minlength=len(bounds))
    for bucket, n in zip(buckets, counts.tolist(), strict=False):
        if n:
            bucket.inc(n)
    FRESHNESS_SECONDS._sum.inc(float(ages.sum()))


def observe_lag(partition: int, high: int, next_offset: int) -> None:
    """Lag of one partition from its reader: the high watermark of the last fetch response
    minus the next offset to read. Fetch responses carry the true high watermark on every
    broker; a ListOffsets ("latest") request does not on Tansu's S3 storage. While the probe
    finds the broker down, the gauge stays NaN (a cached watermark would claim "caught up").
    """
    _partitions.add(partition)
    if _broker_up and high >= 0:
        CONSUMER_LAG.labels(partition=str(partition)).set(max(high - next_offset, 0))


_broker_up = True


def probe_broker(consumer: Any, topic: str, timeout_s: float = 2.0) -> bool:
    """One probe: ``marquee_broker_up``; when the broker does not answer, every read
    partition's lag reads NaN (unknown, which alerts can tell from "caught up").
    """
    global _broker_up
    try:
        consumer.list_topics(topic, timeout=timeout_s)
    except Exception:  # noqa: BLE001 - any failure means the broker is not answering
        _broker_up = False
        BROKER_UP.set(0)
        for partition in list(_partitions):
            CONSUMER_LAG.labels(partition=str(partition)).set(float("nan"))
        return False
    _broker_up = True
    BROKER_UP.set(1)
    return True


def watch_lag(client_config: dict[str, object], topic: str, every_s: float = 2.0) -> None:
    """Keep ``marquee_broker_up`` current from a daemon thread (the readers keep the lag:
    ``observe_lag``), and say in the log (once per state change, then every minute) when the
    broker stops answering, instead of leaving it to librdkafka's reconnect lines.
    """
    import logging
    import threading
    import time

    from confluent_kafka import Consumer

    log = logging.getLogger(__name__)

    def loop() -> None:
        consumer = Consumer({**client_config, "group.id": "marquee-lag-probe",
                             "enable.auto.commit": False})
        down_since: float | None = None
        said_at = 0.0
        while True:
            up = probe_broker(consumer, topic)
            now = time.monotonic()
            if up and down_since is not None:
                log.warning("broker %s answers again after %.0f s",
                            client_config.get("bootstrap.servers"), now - down_since)
                down_since = None
            elif not up and (down_since is None or now - said_at > 60):
                down_since = down_since or now
                said_at = now
                log.error("broker %s does not answer (for %.0f s); the flow waits and "
                          "resumes when it is back. Check the broker (marquee up restarts "
                          "its embedded one)", client_config.get("bootstrap.servers"),
                          now - down_since)
            threading.Event().wait(every_s)

    threading.Thread(target=loop, name="marquee-lag", daemon=True).start()


def observe_tokens(n_tokens: int, n_events: int) -> None:
    """Count released tokens and keep the merge-ratio gauge current."""
    if n_tokens:
        TOKENS_EMITTED.inc(n_tokens)
        EVENTS_MERGED.inc(n_events)
        MERGE_RATIO.set(EVENTS_MERGED._value.get() / TOKENS_EMITTED._value.get())


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Expose ``/metrics`` on ``host:port`` (0 = don't); loopback unless told otherwise
    (``MARQUEE_BIND_HOST``), prometheus_client's own default being every interface.
    """
    if port:
        start_http_server(port, addr=host)
