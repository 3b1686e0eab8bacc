"""The flow's Prometheus metrics, defined once (STYLE.md §9); the flow serves them on a port.

Labels are low-cardinality only: the refusal reason, the partition, the feature view.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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
CONSUMER_LAG = Gauge("marquee_consumer_lag_messages",
                     "high watermark - next offset to read, per events-topic partition",
                     ["partition"])


def observe_tokens(n_tokens: int, n_events: int) -> None:
    """Count released tokens and keep the merge-ratio gauge current."""
    if n_tokens:
        TOKENS_EMITTED.inc(n_tokens)
        EVENTS_MERGED.inc(n_events)
        MERGE_RATIO.set(EVENTS_MERGED._value.get() / TOKENS_EMITTED._value.get())


def serve(port: int) -> None:
    """Expose ``/metrics`` on ``port`` (0 = don't)."""
    if port:
        start_http_server(port)
