"""``marquee bench quarantine``: what the quarantine costs the flow, beside the same flow without
it, same run.

The flow runs in process (Bytewax ``run_main``, one worker) over synthetic events held as Kafka
polls of real ``confluent_kafka.Message`` objects (no broker: its time is the same in every
arm), into sinks that drop everything, so the figure is the steps' own time:

- unguarded: the steps as they are;
- guarded, nothing to watch: every step call writes its offset ranges to the worker's slot
  (the production case);
- guarded, the first poll of every partition suspect: those messages go one at a time
  through every step (the cost of a restart after a crash).

The arms alternate, best of ``repeats`` each (the machine may be shared). The guards' own
time is below what the flow's run-to-run noise resolves, so it is also measured alone: the
steps' calls of one run are recorded (inputs and outputs), then replayed through the guards
around steps that only hand back the recorded outputs, and through those steps bare.
"""

from __future__ import annotations

import json
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from bytewax.operators import StatefulBatchLogic
from bytewax.testing import TestingSource, run_main
from confluent_kafka import Message

from infra.bench.stream import NullSink
from infra.synthetic import SyntheticWorld, WorldConfig
from streams.contract.tokens import Vocab
from streams.flow import (
    DEAD,
    FlowSettings,
    ItemStatsLogic,
    Router,
    Shared,
    TokenizeLogic,
    build_flow,
)
from streams.guards import GuardedLogic, GuardedRouter, slice_ranges, trace_counts, traced_ranges
from streams.quarantine import Quarantine, Suspect


def message_polls(events: list[dict], partitions: int, batch_size: int) -> list[list[Message]]:
    """The events keyed by user into ``partitions``, polled ``batch_size`` at a time with
    the partitions taking turns (as the flow's Kafka source emits them).
    """
    parts: list[list[Message]] = [[] for _ in range(partitions)]
    for e in events:
        p = zlib.crc32(e["user_id"].encode()) % partitions
        parts[p].append(Message(topic="events", partition=p, offset=len(parts[p]),
                                key=e["user_id"].encode(),
                                value=json.dumps(e, separators=(",", ":")).encode(),
                                timestamp=(1, e["ts"])))
    chunks = [[part[i:i + batch_size] for i in range(0, len(part), batch_size)]
              for part in parts]
    return [c[i] for i in range(max(map(len, chunks))) for c in chunks if i < len(c)]


def _shared(world: SyntheticWorld, quarantine: Quarantine | None) -> Shared:
    catalogue = {t.item_id: t for t in world.catalogue}
    durations = {k: t.duration_s for k, t in catalogue.items() if t.duration_s}
    return Shared(Vocab(), durations, catalogue, FlowSettings(finish_at_eof=True), quarantine)


def flow_cpu_seconds(polls: list[list[Message]], world: SyntheticWorld,
                     quarantine: Quarantine | None) -> float:
    """CPU seconds of one run of the flow over ``polls`` (fresh state each time)."""
    shared = _shared(world, quarantine)
    flow = build_flow(TestingSource(polls), NullSink(), NullSink(), shared, "bench")
    start = time.process_time()
    run_main(flow)
    return time.process_time() - start


class _Replay(StatefulBatchLogic[Any, Any, Any]):
    """A step that hands back recorded outputs, one per call."""

    def __init__(self, outputs: list[Any]) -> None:
        self.outputs = iter(outputs)

    def on_batch(self, values: list[Any]) -> tuple[list[Any], bool]:
        return next(self.outputs), StatefulBatchLogic.RETAIN

    def __call__(self, poll: list[Any]) -> Any:
        return next(self.outputs)

    def snapshot(self) -> None:
        return None


def record_calls(polls: list[list[Message]], world: SyntheticWorld) -> list[tuple[str, Any, Any]]:
    """Each step call of a run, in order: (step, input, output); one key per stateful call."""
    shared = _shared(world, None)
    router, calls = Router(shared), []
    users: dict[str, TokenizeLogic] = {}
    items: dict[str, ItemStatsLogic] = {}
    for poll in polls:
        routed = router(poll)
        calls.append(("route", poll, routed))
        for key, sl in routed:
            if key == DEAD:
                continue
            logic = users.setdefault(key, TokenizeLogic(shared, None))
            out = list(logic.on_batch([sl])[0])
            calls.append(("tokenize", [sl], out))
            for value in out:
                if type(value) is tuple:
                    stats = items.setdefault(value[0], ItemStatsLogic(shared, None))
                    calls.append(("item_stats", [value[1]], list(stats.on_batch([value[1]])[0])))
    return calls


def guard_seconds(calls: list[tuple[str, Any, Any]], folder: Path, guarded: bool) -> float:
    """Seconds to replay one run's step calls (``record_calls``) through steps that hand
    back the recorded outputs, guarded or bare: the difference is the guards' own time.
    """
    by_step: dict[str, list[Any]] = {"route": [], "tokenize": [], "item_stats": []}
    for step, _, out in calls:
        by_step[step].append(out)
    q = Quarantine(folder)
    route: Any = _Replay(by_step["route"])
    tokenize: Any = _Replay(by_step["tokenize"])
    item_stats: Any = _Replay(by_step["item_stats"])
    if guarded:
        route = GuardedRouter(route, q, DEAD)
        tokenize = GuardedLogic("tokenize", tokenize, q, slice_ranges, trace_counts)
        item_stats = GuardedLogic("item_stats", item_stats, q, traced_ranges)
    start = time.perf_counter()
    for step, value, _ in calls:
        if step == "route":
            route(value)
        elif step == "tokenize":
            tokenize.on_batch(value)
        else:
            item_stats.on_batch(value)
    return time.perf_counter() - start


def slot_write_us(folder: Path, n: int = 20_000) -> float:
    """Microseconds per slot write (ranges that change every time, so none is skipped)."""
    slot = Quarantine(folder).slot()
    start = time.perf_counter()
    for i in range(n):
        slot.begin("tokenize", ((i % 4, i, i + 4999),))
    return (time.perf_counter() - start) / n * 1e6


def run_bench(n_events: int = 100_000, batch_size: int = 5000, partitions: int = 4,
              repeats: int = 3, out: Path | None = None) -> dict[str, Any]:
    """Run the benchmark; returns (and optionally writes) the figures."""
    world = SyntheticWorld(WorldConfig(n_users=2000))
    events = list(world.events(n_events))
    polls = message_polls(events, partitions, batch_size)
    firsts = {poll[0].partition(): poll for poll in reversed(polls)}  # each partition's first
    n_suspect = sum(map(len, firsts.values()))
    best = {"unguarded": float("inf"), "guarded": float("inf"), "suspects": float("inf")}
    writes = 0
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            best["unguarded"] = min(best["unguarded"], flow_cpu_seconds(polls, world, None))
            quiet = Quarantine(Path(tmp) / f"quiet{r}")
            quiet.folder.mkdir()
            best["guarded"] = min(best["guarded"], flow_cpu_seconds(polls, world, quiet))
            writes = quiet.slot().writes
            watch = Quarantine(Path(tmp) / f"watch{r}", [
                Suspect(p, poll[0].offset(), poll[-1].offset(), "tokenize", 1)
                for p, poll in firsts.items()])
            watch.folder.mkdir()
            best["suspects"] = min(best["suspects"], flow_cpu_seconds(polls, world, watch))
        write_us = slot_write_us(Path(tmp))
        calls = record_calls(polls, world)
        bare = min(guard_seconds(calls, Path(tmp), False) for _ in range(repeats))
        guarded = min(guard_seconds(calls, Path(tmp), True) for _ in range(repeats))
    n_polls = len(polls)
    result = {
        "events": len(events), "polls": n_polls, "batch_size": batch_size,
        "partitions": partitions, "repeats": repeats,
        "unguarded_cpu_s": best["unguarded"], "guarded_cpu_s": best["guarded"],
        "flow_difference": best["guarded"] / best["unguarded"] - 1,
        "guard_us_per_poll": (guarded - bare) / n_polls * 1e6,
        "guard_share": (guarded - bare) / best["unguarded"],
        "slot_writes_per_poll": writes / n_polls, "slot_write_us": write_us,
        "suspect_messages": n_suspect,
        "suspect_us_per_message": (best["suspects"] - best["guarded"]) / n_suspect * 1e6,
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result
