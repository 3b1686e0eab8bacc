"""``marquee bench outcomes``: what the experiment join costs the flow, per event and per ranking.

One synthetic stream goes through the flow's own step logic (``Router`` -> ``TokenizeLogic``
-> ``OutcomeLogic``, with ``RankingRouter`` for the rankings; no Bytewax, whose timers would
make the batching depend on the clock) three ways, in one process, in rotating order:

- ``off``: the join off (``shared.join`` None), events without request_id: the tokenizer as
  before the join existed;
- ``on_plain``: the join on, the same events without request_id (what every event that does
  not take part in an experiment pays: one attribute test, and a watermark item per second of
  event time);
- ``on_joined``: the join on and every event carrying the request_id of a logged A/B ranking
  (one ranking per user and hour of events, holding that hour's items), the rankings read
  first.

CPU time covers the step calls only. The memory of a held ranking is measured apart
(``tracemalloc`` around holding them), beside its pickled size in a snapshot.
"""

from __future__ import annotations

import json
import pickle
import statistics
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from infra.synthetic import SyntheticWorld, WorldConfig
from streams.contract.tokens import KNOWN_VALUES, Vocab
from streams.flow import DEAD, FlowSettings, Router, Shared, TokenizeLogic
from streams.outcome_steps import OutcomeLogic, RankingRouter
from streams.outcomes import OutcomeShard
from streams.records import Outcomes

PARTITIONS = 4
MODES = ("off", "on_plain", "on_joined")


def stream(events: int, users: int, seed: int) -> tuple[list[dict], list[dict]]:
    """The world's events, each with the request_id of its user-hour's ranking, and those
    rankings (A/B, the arm by user), dated a second before the hour's first event.
    """
    world = SyntheticWorld(WorldConfig(n_users=users, seed=seed))
    evs = list(world.events(events))
    groups: dict[tuple[str, int], dict[str, Any]] = {}
    for ev in evs:
        key = (ev["user_id"], ev["ts"] // 3_600_000)
        g = groups.get(key)
        if g is None:
            n = len(groups)
            g = groups[key] = {"request_id": f"{n + 1:032x}", "ts": ev["ts"] - 1000,
                               "user_id": ev["user_id"], "items": {},
                               "arm": "ab"[zlib.crc32(ev["user_id"].encode()) % 2]}
        if ev["item_id"]:
            g["items"].setdefault(ev["item_id"], len(g["items"]) + 1)
        ev["request_id"] = g["request_id"]
    rankings = [{"v": 1, "request_id": g["request_id"], "ts": g["ts"], "user_id": g["user_id"],
                 "experiment": "bench", "mode": "ab", "variants": [g["arm"]],
                 "model_versions": {g["arm"]: "x"},
                 "items": [{"item_id": i, "position": p, "variant": g["arm"], "score": 1.0}
                           for i, p in g["items"].items()]} for g in groups.values()]
    return evs, rankings


def polls(records: list[dict], topic: str, size: int, with_rid: bool) -> list[list[Message]]:
    """Kafka messages, keyed by user, a poll per ``size`` (as ``KafkaBatchSource`` emits)."""
    out: list[list[Message]] = []
    offsets = [0] * PARTITIONS
    poll: list[Message] = []
    for r in records:
        value = r if with_rid else {k: v for k, v in r.items() if k != "request_id"}
        key = r["user_id"].encode()
        p = zlib.crc32(key) % PARTITIONS
        poll.append(Message(topic=topic, partition=p, offset=offsets[p], key=key,
                            value=json.dumps(value).encode(),
                            timestamp=(TIMESTAMP_CREATE_TIME, r["ts"] + 1000)))
        offsets[p] += 1
        if len(poll) == size:
            out.append(poll)
            poll = []
    if poll:
        out.append(poll)
    return out


def _shared(join: bool) -> Shared:
    vocab = Vocab()
    for facet, values in KNOWN_VALUES.items():
        for value in values:
            vocab.id(facet, value)
    settings = FlowSettings(shards=16, log_flush_s=3600, flush_s=3600)
    shared = Shared(vocab, {}, {}, settings)
    if join:
        shared.join = settings.join()
    return shared


def run_once(mode: str, event_polls: list[list[Message]],
             ranking_polls: list[list[Message]]) -> dict[str, float]:
    """One pass; CPU seconds of the event steps and of the ranking steps."""
    shared = _shared(mode != "off")
    router = Router(shared)
    tokenize: dict[str, TokenizeLogic] = {}
    join: dict[str, OutcomeLogic] = {}
    ranking_cpu = 0.0
    if mode == "on_joined":
        start = time.process_time()
        rankings = RankingRouter(shared)
        for poll in ranking_polls:
            for name, batch in rankings(poll):
                logic = join.get(name) or join.setdefault(name, OutcomeLogic(shared, None))
                logic.on_batch([batch])
        ranking_cpu = time.process_time() - start
    start = time.process_time()
    for poll in event_polls:
        for name, value in router(poll):
            if name == DEAD:
                continue
            logic = tokenize.get(name) or tokenize.setdefault(name, TokenizeLogic(shared, None))
            out, _ = logic.on_batch([value])
            if shared.join is not None:
                joined = [o for o in out if type(o) is Outcomes]
                if joined:
                    target = join.get(name) or join.setdefault(name,
                                                               OutcomeLogic(shared, None))
                    target.on_batch(joined)
    event_cpu = time.process_time() - start
    impressions = sum(c.impressions for j in join.values() for c in j.shard.counts.values())
    return {"event_cpu_s": event_cpu, "ranking_cpu_s": ranking_cpu, "impressions": impressions}


def held_memory(rankings: list[dict]) -> dict[str, float]:
    """Bytes of Python memory per held ranking, and per ranking in a snapshot."""
    from streams.outcomes import RANKING, JoinConfig

    decoded = [RANKING.decode(json.dumps(r).encode()) for r in rankings]
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    shard = OutcomeShard(JoinConfig(max_held=len(decoded) + 1))
    shard.rankings(decoded, max(r.ts for r in decoded))
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    snapshot = len(pickle.dumps(shard.snapshot(), protocol=pickle.HIGHEST_PROTOCOL))
    items = statistics.mean(len(r["items"]) for r in rankings)
    return {"held": shard.held(), "items_per_ranking": items,
            "memory_bytes_per_ranking": grown / shard.held(),
            "snapshot_bytes_per_ranking": snapshot / shard.held()}


def run_bench(events: int = 50_000, users: int = 2_000, poll: int = 1000, seed: int = 7,
              repeats: int = 3, out: Path | None = None) -> dict[str, Any]:
    """Every mode ``repeats`` times in rotating order; CPU microseconds per event (best and
    mean) and the join's costs per ranking.
    """
    evs, rankings = stream(events, users, seed)
    plain, with_rid = polls(evs, "events", poll, False), polls(evs, "events", poll, True)
    ranking_polls = polls(rankings, "rankings", poll, True)
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for r in range(repeats):
        for mode in MODES[r % 3:] + MODES[:r % 3]:
            runs[mode].append(run_once(mode, with_rid if mode == "on_joined" else plain,
                                       ranking_polls))
    n = len(evs)
    report: dict[str, Any] = {"events": n, "users": users, "rankings": len(rankings),
                              "poll": poll, "repeats": repeats, "modes": {}}
    for mode, results in runs.items():
        us = [1e6 * x["event_cpu_s"] / n for x in results]
        report["modes"][mode] = {"cpu_us_per_event_best": min(us),
                                 "cpu_us_per_event_mean": statistics.mean(us),
                                 "impressions_joined": results[-1]["impressions"]}
    joined = runs["on_joined"]
    report["ranking_cpu_us_each"] = 1e6 * statistics.mean(
        x["ranking_cpu_s"] for x in joined) / len(rankings)
    report["held"] = held_memory(rankings)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def lines(report: dict[str, Any]) -> Iterator[str]:
    """The report as text."""
    m = report["modes"]
    base = m["off"]["cpu_us_per_event_best"]
    yield (f"stream: {report['events']:,} events, {report['users']:,} users, "
           f"{report['rankings']:,} rankings, polls of {report['poll']}, "
           f"{report['repeats']} runs of each mode (best / mean CPU us per event)")
    for mode, what in (("off", "join off"), ("on_plain", "join on, no request_id"),
                       ("on_joined", "join on, every event joined")):
        r = m[mode]
        yield (f"  {what:<30}{r['cpu_us_per_event_best']:7.2f} / "
               f"{r['cpu_us_per_event_mean']:6.2f}  ({r['cpu_us_per_event_best'] / base:.3f}x)")
    h = report["held"]
    yield (f"  per ranking: {report['ranking_cpu_us_each']:.1f} CPU us to read and hold; "
           f"{h['memory_bytes_per_ranking']:,.0f} B held, {h['snapshot_bytes_per_ranking']:,.0f}"
           f" B in a snapshot ({h['items_per_ranking']:.1f} items each)")
