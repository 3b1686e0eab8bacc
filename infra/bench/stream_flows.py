"""The flows ``marquee bench stream`` measures, each built inside its own process
(``infra.bench.stream_child``): two do-nothing floors, the produce -> consume latency floor,
and the production flow into Feast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from infra.bench.stream_child import Built
from infra.bench.stream_sources import NullSink, OnEnd, poll_ages, until_end
from streams import metrics
from streams.config import KafkaSettings


def floor_flow(kafka: KafkaSettings, topic: str, batch_size: int, batched: bool = False,
               on_end: OnEnd | None = None) -> Built:
    """A do-nothing flow over the topic: Bytewax's own ``KafkaSource`` (one item per
    message: the framework's floor) or, ``batched``, the flow's ``KafkaBatchSource`` (one
    item per poll: where the flow starts from).
    """
    flow = Dataflow("floor")
    stream = op.input("in", flow, until_end(kafka, topic, batch_size, batched, on_end))
    size = (lambda poll: len(poll)) if batched else (lambda m: len(m.value or b""))
    op.output("out", op.map("len", stream, size), NullSink())
    return Built(flow)


def latency_flow(kafka: KafkaSettings, topic: str, batch_size: int,
                 on_end: OnEnd | None = None) -> Built:
    """A do-nothing flow that notes each message's age (producer timestamp -> consumed):
    the part of freshness that is the broker's and the clients'.
    """
    seen: list[float] = []
    flow = Dataflow("latency")
    stream = op.input("in", flow, until_end(kafka, topic, batch_size, True, on_end))
    op.output("out", op.map("note", stream, poll_ages(seen)), NullSink())
    return Built(flow, lambda: {"samples": seen})


def full_flow(kafka: KafkaSettings, topic: str, data: Path, online: str, batch_size: int,
              flush_s: float, redis_url: str | None = None,
              on_end: OnEnd | None = None) -> tuple[Dataflow, Any]:
    """The production flow over ``topic`` with Feast opened already (outside the clock)."""
    from feature_repo.store import FeatureWriter, open_store
    from streams.flow import FlowSettings, build_flow, load_shared
    from streams.gc_tuning import tune_for_flow
    from streams.sinks import DeadLetterSink, OutputSink, shared_writer

    settings = FlowSettings(data_dir=data, flush_s=flush_s, batch_size=batch_size)
    shared = load_shared(settings)
    key = f"bench-{data}"
    writer = shared_writer(key, lambda: FeatureWriter(open_store(online=online, data_dir=data,
                                                                 redis_url=redis_url)))
    sink = OutputSink(lambda: writer, data / "tokens", key=key)
    dead = DeadLetterSink(kafka.client_config(), kafka.dead_letter_topic)
    source = until_end(kafka, topic, batch_size, batched=True, on_end=on_end)
    flow = build_flow(source, sink, dead, shared, "bench")
    tune_for_flow()  # as ``streams.flow.from_env`` does
    return flow, writer


def write_stats() -> dict[str, float]:
    """user_tokens flushes, rows and seconds spent writing them, so far (from the metrics)."""
    hist = {s.name: s.value for s in metrics.FEAST_WRITE_SECONDS.collect()[0].samples
            if s.labels.get("feature_view") == "user_tokens"}
    rows = [s.value for s in metrics.FEAST_ROWS.collect()[0].samples
            if s.labels.get("feature_view") == "user_tokens" and s.name.endswith("_total")]
    return {"flushes": hist.get("marquee_feast_write_seconds_count", 0.0),
            "seconds": hist.get("marquee_feast_write_seconds_sum", 0.0),
            "rows": rows[0] if rows else 0.0}


def _record_tokenizers() -> list[Any]:
    """Keep every user-shard logic this process builds, to weigh its state after the run.

    ``build_flow`` makes ``streams.flow.TokenizeLogic`` per shard inside Bytewax; in this
    benchmark child (and only here) that name is a subclass that also notes each instance.
    """
    import streams.flow as flow_module

    made: list[Any] = []
    base = flow_module.TokenizeLogic

    class Recorded(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    flow_module.TokenizeLogic = Recorded  # type: ignore[misc]
    return made


def measured_flow(kafka: KafkaSettings, topic: str, data: Path, online: str, batch_size: int,
                  flush_s: float, redis_url: str | None = None, freshness: bool = False,
                  state: bool = False, on_end: OnEnd | None = None) -> Built:
    """``full_flow`` in a child: after the run it reports its online writes, with
    ``freshness`` every event's produced -> online age, and with ``state`` its users'
    snapshot sizes.
    """
    logics = _record_tokenizers() if state else []
    flow, _ = full_flow(kafka, topic, data, online, batch_size, flush_s, redis_url, on_end)
    before = write_stats()
    if freshness:
        metrics.FRESHNESS_SAMPLES = []

    def finish() -> dict[str, Any]:
        out: dict[str, Any] = {"writes": {k: v - before[k] for k, v in write_stats().items()}}
        if freshness:
            out["samples"] = metrics.FRESHNESS_SAMPLES or []
        if state:
            out["state"] = _state(logics).as_dict()
        return out

    return Built(flow, finish)


def _state(logics: list[Any]) -> Any:
    from infra.bench.stream_memory import state_sizes

    users: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    for logic in logics:
        blobs = logic.shard.snapshot()["users"]  # what Bytewax would store for this shard
        users.update(logic.shard.users)
        sizes.update((u, len(b)) for u, b in blobs.items())
    return state_sizes(users, sizes)
