"""A stand-in tokenizer for training on the synthetic world before ``streams.tokenizer`` lands.

Same signature as the agreed ``streams.tokenizer.tokenize_events`` (CONTRACTS.md) and the same
main rules: a play .. pause/resume .. stop/complete run of one title is one token (``complete``,
``abandon`` when less than half was watched, else ``watch``); every other event is its own
token. ``models.data`` prefers the real tokenizer when it is importable.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from streams.tokens import Token, Vocab, dow_id, duration_bucket, gap_bucket, hour_id

SESSION_GAP_MS = 30 * 60_000
_CONTINUES = {"pause", "resume", "stop", "complete"}


def tokenize_events(events: Iterable[Any], vocab: Vocab, grow_vocab: bool = True,
                    durations: dict[str, int] | None = None) -> list[Token]:
    """Events (dicts or ``InteractionEvent``) -> tokens sorted by (user_id, ts)."""
    by_user: dict[str, list[dict[str, Any]]] = {}
    for ev in events:
        ev = ev if isinstance(ev, dict) else ev.model_dump(mode="json")
        by_user.setdefault(ev["user_id"], []).append(ev)
    out: list[Token] = []
    for user in sorted(by_user):
        out.extend(_user_tokens(sorted(by_user[user], key=lambda e: e["ts"]), vocab, grow_vocab,
                                durations or {}))
    return out


def _user_tokens(events: list[dict[str, Any]], vocab: Vocab, grow: bool,
                 durations: dict[str, int]) -> list[Token]:
    ids = vocab.id if grow else vocab.lookup
    groups: list[list[dict[str, Any]]] = []
    for ev in events:
        last = groups[-1] if groups else None
        if (last and ev["action"] in _CONTINUES and last[0]["action"] == "play"
                and last[-1]["action"] not in ("stop", "complete")
                and last[0]["item_id"] == ev["item_id"]):
            last.append(ev)
        else:
            groups.append([ev])
    tokens: list[Token] = []
    prev_ts: int | None = None
    for group in groups:
        first, end = group[0], group[-1]
        watched = sum(float(e.get("watch_seconds", 0.0)) for e in group)
        length = durations.get(first["item_id"], 0)
        completion = min(watched / length, 1.0) if length else 0.0
        action = first["action"]
        if action == "play":
            if end["action"] == "complete":
                action = "complete"
            elif length and completion < 0.5:
                action = "abandon"
            else:
                action = "watch"
        ts = int(first["ts"])
        gap = None if prev_ts is None else ts - prev_ts
        item_id = first.get("item_id", "") or ""
        tokens.append(Token(
            user_id=first["user_id"], ts=ts, item_id=item_id,
            item=ids("item", item_id) if item_id else 1,
            action=vocab.lookup("action", action), gap=gap_bucket(gap), hour=hour_id(ts),
            dow=dow_id(ts), device=ids("device", first["device"]),
            surface=ids("surface", first["surface"]), duration=duration_bucket(watched),
            watch_seconds=watched, completion=completion,
            session_start=gap is None or gap > SESSION_GAP_MS, n_events=len(group)))
        prev_ts = int(end["ts"])
    return tokens
