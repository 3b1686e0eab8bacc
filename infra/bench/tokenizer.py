"""``marquee bench tokenizer``: the compiled hot modules beside their pure-Python reference.

One generated stream (synthetic events with merges, plus duplicates, reordered, late, future,
wrong-key and invalid messages) goes through the flow's tokenizer (``Router`` ->
``UserShard`` -> ``ItemShard``: the step logic of ``streams.flow`` without Bytewax, whose
timers would make the batching depend on the clock) twice: in a process that imports the
compiled modules and in one with ``MARQUEE_PURE_PYTHON=1``. After every poll the user rows,
final tokens, item rows and dead letters are serialized canonically and hashed; the two
paths must give the same digests. Every ``snapshot_every`` polls the shards are snapshotted,
pickled and rebuilt from the pickle, as after a recovery, and a run can stop at a poll with
its state in a file and another process (of the other path) go on from it.

CPU time counts the tokenizer's calls only (not generating the stream, not hashing).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import operator
import os
import pickle
import random
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from infra.synthetic import SyntheticWorld, WorldConfig
from streams import compiled
from streams.contract.catalogue import Title
from streams.contract.tokens import KNOWN_VALUES, Token, Vocab
from streams.flow import DEAD, FlowSettings, Router, Shared
from streams.records import DeadLetter
from streams.shards import ItemShard, UserShard

TOKEN_FIELDS = operator.attrgetter(*(f.name for f in fields(Token)))
_USER_ID, _ITEM_ID = operator.itemgetter("user_id"), operator.itemgetter("item_id")
_TOKEN_USER = operator.attrgetter("user_id")
PARTITIONS = 4


@dataclass(frozen=True)
class StreamSpec:
    """The generated stream and how it is replayed."""

    events: int = 20_000  # synthetic events before the noise is added
    users: int = 300
    seed: int = 7
    poll: int = 1000  # messages per poll
    snapshot_every: int = 5  # polls between snapshot + restore


def noisy_records(spec: StreamSpec) -> Iterator[tuple[bytes, bytes, int]]:
    """``(value, key, Kafka timestamp)`` in arrival order: the world's events (sent a second
    after they happened), some held back a few messages, and duplicates, late, future,
    wrong-key, broken and contract-breaking messages among them.
    """
    rng = random.Random(spec.seed)
    world = SyntheticWorld(WorldConfig(n_users=spec.users, seed=spec.seed))
    recent: list[tuple[bytes, bytes, int]] = []
    held: list[tuple[int, tuple[bytes, bytes, int]]] = []
    for i, ev in enumerate(world.events(spec.events)):
        key, sent = ev["user_id"].encode(), ev["ts"] + 1000
        record = (json.dumps(ev).encode(), key, sent)
        if rng.random() < 0.02:  # arrives 1-20 messages late: reordered, or refused as late
            held.append((i + rng.randint(1, 20), record))
        else:
            yield record
        recent.append(record)
        del recent[:-50]
        while held and held[0][0] <= i:
            yield held.pop(0)[1]
        held.sort(key=lambda entry: entry[0])
        r, other = rng.random(), {**ev, "event_id": f"{ev['event_id']}-x"}
        if r < 0.01:
            yield rng.choice(recent)  # a resend
        elif r < 0.013:
            yield json.dumps({**other, "ts": ev["ts"] - 3_600_000}).encode(), key, sent
        elif r < 0.015:
            yield record[0][: len(record[0]) // 2], key, sent  # cut short
        elif r < 0.017:
            yield json.dumps({**other, "action": "fly"}).encode(), key, sent
        elif r < 0.018:
            yield json.dumps(other).encode(), b"someone-else", sent
        elif r < 0.019:
            yield json.dumps({**other, "ts": sent + 3_600_000}).encode(), key, sent
    for _, record in held:
        yield record


def polls(spec: StreamSpec) -> Iterator[list[Message]]:
    """The records as Kafka messages (partition by key, offsets per partition), in polls."""
    offsets = [0] * PARTITIONS
    poll: list[Message] = []
    for value, key, ts in noisy_records(spec):
        p = zlib.crc32(key) % PARTITIONS
        poll.append(Message(topic="events", partition=p, offset=offsets[p], key=key,
                            value=value, timestamp=(TIMESTAMP_CREATE_TIME, ts)))
        offsets[p] += 1
        if len(poll) == spec.poll:
            yield poll
            poll = []
    if poll:
        yield poll


class Replay:
    """The flow's tokenizer steps over one process's shards, poll by poll."""

    def __init__(self, catalogue: list[Title], state: dict[str, Any] | None = None) -> None:
        state = state or {}
        vocab = Vocab(tables=state["vocab"]) if state else Vocab()
        for item in sorted(t.item_id for t in catalogue):  # as streams.flow.load_shared
            vocab.id("item", item)
        for facet, values in KNOWN_VALUES.items():
            for value in values:
                vocab.id(facet, value)
        settings = FlowSettings(shards=16, max_lateness_ms=10_000, session_gap_ms=30 * 60_000,
                                accidental_weight=0.0, max_future_ms=300_000,
                                max_facet_values=1000)
        durations = {t.item_id: t.duration_s for t in catalogue if t.duration_s}
        self.shared = Shared(vocab, durations, {t.item_id: t for t in catalogue}, settings)
        self.router = Router(self.shared)
        config = settings.tokenizer()
        users, items = state.get("users", {}), state.get("items", {})
        self.users = {n: UserShard(vocab, config, durations, self.shared.item_shard, users.get(n))
                      for n in self.shared.user_shard.names}
        self.items = {n: ItemShard(self.shared.catalogue, items.get(n))
                      for n in self.shared.item_shard.names}
        self.cpu = 0.0
        self.counts: Counter[str] = Counter()

    def poll(self, messages: list[Message]) -> bytes:
        """Route and tokenize one poll; everything it released, canonically serialized."""
        start = time.process_time()
        dead: list[DeadLetter] = []
        for name, value in self.router(messages):
            if name == DEAD:
                dead.extend(value)
                continue
            refused, counted = self.users[name].offer(value)
            dead.extend(refused)
            for item_shard, updates in counted.items():
                self.items[item_shard].count(updates)
        out = self._take()
        self.cpu += time.process_time() - start
        self.counts["messages"] += len(messages)
        self.counts.update(f"dead:{d.reason}" for d in dead)
        return self._encode(dead, *out)

    def finish(self) -> bytes:
        """End of input: close every open token (``finish_at_eof``) and take what is owed."""
        start = time.process_time()
        for shard in self.users.values():
            shard.finish()
        out = self._take()
        self.cpu += time.process_time() - start
        return self._encode([], *out)

    def _take(self) -> tuple[list[dict], list[Token], list[dict]]:
        rows: list[dict] = []
        tokens: list[Token] = []
        items: list[dict] = []
        for shard in self.users.values():
            if (user_rows := shard.take_rows()) is not None:
                rows += user_rows.rows
            if (batch := shard.take_tokens()) is not None:
                tokens += batch.tokens
        for item_shard in self.items.values():
            if (item_rows := item_shard.take_rows()) is not None:
                items += item_rows.rows
        return rows, tokens, items

    def _encode(self, dead: list[DeadLetter], rows: list[dict], tokens: list[Token],
                items: list[dict]) -> bytes:
        """Rows by user, tokens by user (each user's in release order) and item rows by
        item: the order users come in within a shard follows set iteration after a restore,
        which varies with the process's hash seed.
        """
        self.counts.update(rows=len(rows), tokens=len(tokens), item_rows=len(items),
                           merged_tokens=sum(t.n_events > 1 for t in tokens))
        rows.sort(key=_USER_ID)
        tokens.sort(key=_TOKEN_USER)
        items.sort(key=_ITEM_ID)
        return orjson.dumps({"dead": [d.to_json().decode() for d in dead], "rows": rows,
                             "tokens": [TOKEN_FIELDS(t) for t in tokens], "items": items},
                            option=orjson.OPT_SORT_KEYS)

    def state(self) -> dict[str, Any]:
        """What a snapshot holds (as Bytewax would pickle it), with the vocabulary."""
        return {"users": {n: s.snapshot() for n, s in self.users.items()},
                "items": {n: s.snapshot() for n, s in self.items.items()},
                "vocab": self.shared.vocab.tables}


def replay(spec: StreamSpec, state_in: Path | None = None, state_at: int | None = None,
           state_out: Path | None = None) -> dict[str, Any]:
    """Replay the stream from its start (or from the state in ``state_in``); with
    ``state_out``, the state after poll ``state_at`` is written there. Returns the digest of
    every poll's output, counts, CPU seconds and which path ran.
    """
    if state_out is not None and (state_at is None or state_at % spec.snapshot_every):
        raise ValueError(f"state_at must be a multiple of snapshot_every ({spec.snapshot_every})")
    world = SyntheticWorld(WorldConfig(n_users=spec.users, seed=spec.seed))
    saved = pickle.loads(state_in.read_bytes()) if state_in else {"next": 0, "state": None}
    run = Replay(world.catalogue, saved["state"] and pickle.loads(saved["state"]))
    digests, stream, restores = [], hashlib.sha256(), 0
    for i, messages in enumerate(polls(spec)):
        for m in messages:
            stream.update(b"%d %d %d %b %b" % (m.partition(), m.offset(), m.timestamp()[1],
                                               m.key(), m.value()))
        if i < saved["next"]:
            continue
        digests.append(hashlib.sha256(run.poll(messages)).hexdigest())
        if (i + 1) % spec.snapshot_every == 0:  # a snapshot and a recovery from it
            state = pickle.dumps(run.state(), protocol=pickle.HIGHEST_PROTOCOL)
            cpu, counts = run.cpu, run.counts
            run = Replay(world.catalogue, pickle.loads(state))
            run.cpu, run.counts, restores = cpu, counts, restores + 1
            if state_out is not None and i + 1 == state_at:
                state_out.write_bytes(pickle.dumps({"next": i + 1, "state": state}))
    digests.append(hashlib.sha256(run.finish()).hexdigest())
    return {"path": compiled.describe(), "compiled": all(compiled.loaded_paths().values()),
            "spec": asdict(spec), "start_poll": saved["next"], "cpu_s": run.cpu,
            "stream_sha256": stream.hexdigest(), "digests": digests,
            "counts": dict(run.counts), "restores": restores}


def run_child(spec: StreamSpec, pure: bool, state_in: Path | None = None,
              state_at: int | None = None, state_out: Path | None = None) -> dict[str, Any]:
    """``replay`` in a fresh interpreter, pure (``MARQUEE_PURE_PYTHON=1``) or compiled."""
    env = {k: v for k, v in os.environ.items() if k != compiled.PURE_ENV}
    if pure:
        env[compiled.PURE_ENV] = "1"
    root = str(compiled.ROOT)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "replay.json"
        args = [sys.executable, "-m", "infra.bench.tokenizer", "--out", str(out),
                *(f"--{k.replace('_', '-')}={v}" for k, v in asdict(spec).items())]
        if state_in is not None:
            args.append(f"--state-in={state_in}")
        if state_out is not None:
            args += [f"--state-out={state_out}", f"--state-at={state_at}"]
        done = subprocess.run(args, env=env, cwd=root, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"replay ({'pure' if pure else 'compiled'}) failed:\n"
                               f"{done.stderr[-3000:]}")
        return json.loads(out.read_text())


def first_difference(a: list[str], b: list[str]) -> int | None:
    """The first poll whose outputs differ (None: identical)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def run_bench(spec: StreamSpec, repeats: int = 1, out: Path | None = None) -> dict[str, Any]:
    """Both paths over the same stream, ``repeats`` runs each in ABBA order (pure,
    compiled, compiled, pure...: on a shared machine whose load drifts, the means then
    compare the paths at the same average load).
    """
    runs: dict[str, list[dict[str, Any]]] = {"pure": [], "compiled": []}
    for r in range(repeats):
        for label in (("pure", "compiled") if r % 2 == 0 else ("compiled", "pure")):
            runs[label].append(run_child(spec, pure=label == "pure"))
    pure, fast = runs["pure"][0], runs["compiled"][0]
    if not fast["compiled"]:
        raise RuntimeError(f"the compiled path is not available here: {fast['path']}")
    messages = pure["counts"]["messages"]
    best = {label: min(r["cpu_s"] for r in rs) for label, rs in runs.items()}
    mean = {label: sum(r["cpu_s"] for r in rs) / len(rs) for label, rs in runs.items()}
    result = {
        "spec": asdict(spec), "paths": {k: v[0]["path"] for k, v in runs.items()},
        "stream_sha256": pure["stream_sha256"], "polls": len(pure["digests"]),
        "identical": pure["digests"] == fast["digests"]
        and pure["stream_sha256"] == fast["stream_sha256"],
        "first_difference": first_difference(pure["digests"], fast["digests"]),
        "messages": messages, "counts": pure["counts"], "restores": pure["restores"],
        "pure_cpu_us_per_event": mean["pure"] / messages * 1e6,
        "compiled_cpu_us_per_event": mean["compiled"] / messages * 1e6,
        "speedup": mean["pure"] / mean["compiled"],
        "speedup_best_runs": best["pure"] / best["compiled"], "repeats": repeats,
        "all_cpu_s": {k: [r["cpu_s"] for r in v] for k, v in runs.items()},
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    """The child process of ``run_child``: one replay, its result as JSON in ``--out``."""
    p = argparse.ArgumentParser(prog="python -m infra.bench.tokenizer")
    for f in fields(StreamSpec):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=int, default=f.default)
    p.add_argument("--state-in", type=Path, default=None)
    p.add_argument("--state-at", type=int, default=None)
    p.add_argument("--state-out", type=Path, default=None)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    spec = StreamSpec(**{f.name: getattr(a, f.name) for f in fields(StreamSpec)})
    result = replay(spec, a.state_in, a.state_at, a.state_out)
    a.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
