"""A slow, obvious tokenizer to check ``streams.contract.tokenizer`` against.

It sees a user's whole history at once and decides every rule by looking forward in the
list (O(n^2)), where the real tokenizer decides incrementally with deadlines and queues.
Tokens come out as plain tuples of strings and numbers, so vocabularies do not matter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from streams.contract.events import InteractionEvent
from streams.contract.merge import TokenizerConfig
from streams.contract.tokens import Token, Vocab, duration_bucket, gap_bucket

WATCH = {"play", "pause", "resume", "stop", "complete"}


@dataclass
class Group:
    kind: str
    members: list[int] = field(default_factory=list)
    action: str = ""


def reference_tokens(events: list[InteractionEvent], cfg: TokenizerConfig,
                     durations: Mapping[str, int] | None = None) -> list[tuple]:
    """One user's events, sorted by ts (stable) -> token tuples (see ``token_tuple``)."""
    durations = durations or {}
    events = sorted(events, key=lambda e: e.ts)
    session = [0] * len(events)
    groups: list[Group] = []
    group_of: dict[int, Group] = {}
    open_watch: dict[str, Group] = {}

    def close(g: Group, how: str) -> None:
        g.action = how
        del open_watch[events[g.members[0]].item_id]

    s = 0
    for i, e in enumerate(events):
        if i:
            p = events[i - 1]
            idle = e.ts - p.ts - (cfg.max_play_ms if open_watch else 0)
            split = e.session_id and p.session_id and e.session_id != p.session_id
            if idle > cfg.session_gap_ms or split:
                s += 1
                for g in list(open_watch.values()):
                    close(g, "ended")
        session[i] = s
        a = e.action.value
        if a in WATCH:
            if a == "play":
                for item, g in list(open_watch.items()):
                    if item != e.item_id:
                        close(g, "ended")
            g = open_watch.get(e.item_id)
            if g is None:
                g = Group("watch")
                groups.append(g)
                open_watch[e.item_id] = g
            g.members.append(i)
            if a in ("stop", "complete"):
                close(g, a)
        elif a == "impression":
            g = None
            for other in reversed(groups):
                first = events[other.members[0]]
                if (other.kind == "impression" and first.item_id == e.item_id
                        and first.surface == e.surface):
                    window_end = first.ts + cfg.impression_window_ms
                    if session[other.members[0]] == s and window_end >= e.ts:
                        g = other
                    break
            if g is None:
                g = Group("impression")
                groups.append(g)
            g.members.append(i)
        else:
            g = Group("click" if a == "click" else "single")
            groups.append(g)
            g.members.append(i)
        group_of[i] = g

    def later(i: int) -> list[int]:
        return [j for j in range(i + 1, len(events)) if session[j] == session[i]]

    rows = []
    for g in groups:
        first = events[g.members[0]]
        weight, action = 1.0, first.action.value
        watched = sum(events[m].watch_seconds for m in g.members) if g.kind == "watch" else 0.0
        if g.kind == "watch":
            duration = durations.get(first.item_id)
            ratio = watched / duration if duration else None
            if g.action in ("", "ended", "stop"):
                short = (ratio < cfg.abandon_completion if ratio is not None
                         else watched < cfg.abandon_seconds)
                action = "abandon" if short else "watch"
            else:
                action = "complete"
        elif g.kind == "click":
            i = g.members[0]
            played = any(events[j].action.value == "play" and events[j].item_id == first.item_id
                         and events[j].ts <= first.ts + cfg.click_play_window_ms for j in later(i))
            weight = 1.0 if played else cfg.accidental_weight
        elif g.kind == "impression":
            def seen_long_enough(k: int, surface: str = first.surface) -> bool:
                for j in later(k):
                    ev = events[j]
                    if not (ev.action.value == "impression" and ev.surface == surface):
                        return ev.ts - events[k].ts >= cfg.min_impression_ms
                return True
            weight = 1.0 if any(seen_long_enough(k) for k in g.members) else cfg.accidental_weight
        if weight > 0:
            duration = durations.get(first.item_id)
            rows.append((g.members[0], first, action, watched, len(g.members), weight,
                         min(watched / duration, 1.0) if duration else 0.0))
    out = []
    prev_ts, prev_session = None, -1
    for i, first, action, watched, n, weight, completion in rows:
        gap = None if prev_ts is None else first.ts - prev_ts
        out.append((first.user_id, first.ts, first.item_id, action, gap_bucket(gap),
                    first.device, first.surface, duration_bucket(watched), round(watched, 6),
                    round(completion, 6), session[i] != prev_session, weight, n, first.event_id))
        prev_ts, prev_session = first.ts, session[i]
    return out


def token_tuple(t: Token, vocab: Vocab) -> tuple:
    """A token with its vocab ids turned back into strings, comparable with the reference."""
    names = {facet: {i: s for s, i in table.items()} for facet, table in vocab.tables.items()}
    return (t.user_id, t.ts, t.item_id, names["action"][t.action], t.gap,
            names["device"].get(t.device, "<unk>"), names["surface"].get(t.surface, "<unk>"),
            t.duration,
            round(t.watch_seconds, 6), round(t.completion, 6), t.session_start, t.weight,
            t.n_events, t.event_id)
