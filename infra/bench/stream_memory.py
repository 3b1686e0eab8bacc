"""What the flow's state costs: per-user pickled state (what Bytewax snapshots), resident
memory growth per user, and the state of one user as their history grows.

The claim to check is that a user's state is bounded by what their online row needs (the
newest ``recent_tokens`` tokens, the open merge groups, held events and the dedupe window),
not by how many events they ever sent.
"""

from __future__ import annotations

import gc
import pickle
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from types import FunctionType, ModuleType
from typing import Any

from streams.contract.tokenizer import UserTokenizer


@dataclass(frozen=True)
class StateSizes:
    """Per-user tokenizer state at the end of a run."""

    users: int
    bytes_total: int  # pickled, as ``UserShard.snapshot`` pickles each user
    bytes_mean: float
    bytes_p99: int
    bytes_max: int
    events_mean: float  # events each user's tokenizer accepted (their history)
    events_max: int
    recent_mean: float  # final tokens kept for the row (at most recent_tokens)
    recent_max: int
    open_mean: float  # open merge groups plus held (not yet placed) events
    seen_mean: float  # event ids kept for the dedupe window

    def as_dict(self) -> dict[str, Any]:
        """For the JSON report."""
        return asdict(self)


def pickled(tok: UserTokenizer) -> bytes:
    """A user's snapshot bytes, as ``streams.shards`` makes them."""
    return pickle.dumps(tok, protocol=pickle.HIGHEST_PROTOCOL)


def _quantile(values: Sequence[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else 0


def state_sizes(users: Mapping[str, UserTokenizer], sizes: Mapping[str, int]) -> StateSizes:
    """Summarise ``users`` given each one's pickled size in bytes."""
    n = max(len(users), 1)
    toks = list(users.values())
    counts = [sizes[u] for u in users]
    events = [t.arrivals for t in toks]
    recent = [len(t.recent) for t in toks]
    return StateSizes(
        users=len(users), bytes_total=sum(counts), bytes_mean=sum(counts) / n,
        bytes_p99=_quantile(counts, 0.99), bytes_max=max(counts, default=0),
        events_mean=sum(events) / n, events_max=max(events, default=0),
        recent_mean=sum(recent) / n, recent_max=max(recent, default=0),
        open_mean=sum(len(t.machine.drafts) + len(t.buffer) for t in toks) / n,
        seen_mean=sum(len(t.seen) for t in toks) / n)


def growth_per(users_small: int, bytes_small: float, users_large: int, bytes_large: float,
               per: int = 100_000) -> float:
    """Bytes added per ``per`` more users, from two runs that differ in users (and so in
    events, at the same events per user).
    """
    if users_large <= users_small:
        raise ValueError(f"growth needs a larger run: {users_large} users <= {users_small}")
    return (bytes_large - bytes_small) / (users_large - users_small) * per


def history_curve(events: Iterable[bytes], checkpoints: Sequence[int]) -> list[dict[str, int]]:
    """Feed one user's events to a tokenizer and pickle its state after each checkpoint
    (count of events offered): the state of a user as their history grows.
    """
    from streams.contract.fast_events import decode_event
    from streams.contract.tokens import Vocab
    from streams.flow import FlowSettings

    config = FlowSettings().tokenizer()

    vocab, out = Vocab(), []
    tok: UserTokenizer | None = None
    marks = sorted(checkpoints)
    tokens = 0
    for i, raw in enumerate(events, 1):
        ev, problems = decode_event(raw)
        if ev is None:
            raise ValueError(f"history_curve: event {i} is invalid: {problems[0]}")
        if tok is None:
            tok = UserTokenizer(ev.user_id, vocab, config)
        tokens += len(tok.offer(ev)[0])  # type: ignore[arg-type]
        if marks and i == marks[0]:
            marks.pop(0)
            blob = pickled(tok)
            out.append({"events": i, "tokens_released": tokens, "recent": len(tok.recent),
                        "open": len(tok.machine.drafts) + len(tok.buffer),
                        "seen": len(tok.seen), "pickled_bytes": len(blob),
                        "memory_bytes": in_memory(blob)})
    return out


def in_memory(blob: bytes) -> int:
    """Bytes of the Python objects a pickled object becomes (``sys.getsizeof`` over every
    object it reaches, once each): what a user costs in RAM. Objects the pickle leaves out,
    such as the shared vocabulary, are not counted; classes and functions are not either.
    """
    seen: set[int] = set()
    stack: list[Any] = [pickle.loads(blob)]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type | ModuleType | FunctionType):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total
