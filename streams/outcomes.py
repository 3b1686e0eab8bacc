"""Experiment outcomes: events that carry a ``request_id`` joined to the logged ranking, counted
per experiment and variant. Plain Python, no I/O; the flow runs one ``OutcomeShard`` per user
shard (``streams.flow.OutcomeLogic``).

**What is counted.** Each (ranking, item) pair keeps which outcomes it has had: shown, clicked,
played, completed. An event sets its action's outcomes (a click or a play also means the item
was shown; a pause, stop or complete also means it was played), and a count grows only when a
pair gains an outcome, so a repeated event changes nothing and every rate is a share of shown
pairs (clicks <= impressions). Watch time is the sum of the joined events' ``watch_seconds``,
with the sum of squares of each pair's total for the interval of the mean. For interleaving,
each request credits the team whose items were played more (distinct items played; equal
counts are a tie, no play is no decision): team-draft credit, kept current as plays arrive.

**The join.** A ranking is held from when the rankings topic delivers it until the shard's
events have passed its time by ``window_ms + lateness_ms`` (event time: the newest accepted
event of the shard); an event joins it when its time is within ``window_ms`` of the
ranking's. An event whose ranking is not held yet waits (the two topics are read side by side,
so a ranking may come after its events) until the rankings read for the shard have passed
its time by ``grace_ms``, or the events by the window; it is then counted as not joined. Only
rankings of an experiment are held, so memory follows experiment traffic: about one held
ranking per ranking served in the last ``window_ms``, and the events of ``grace_ms``.

**Users as the unit.** An A/B test assigns users, not impressions, and one user's impressions
are not independent trials (a user who plays a lot plays in both halves of any split). So each
variant's row also keeps, over its users, the sums that the delta method needs to test a rate
per impression with users as the unit (``infra.stats.ratio``): the number of users, and the
sums of each user's squared totals and of their products with the user's impressions. The
shard keeps each user's totals per (experiment, variant) to update those sums exactly as they
grow: about 150 bytes per exposed user, for as long as the flow runs.

Counts are absolute and part of the snapshot, so a replay after a crash recounts from the
snapshot and the written rows converge to the same values: nothing is counted twice.
Duplicate events never reach the join (the tokenizer drops them first; its dedupe window, one
hour, is at least the join window).
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Iterable
from dataclasses import astuple, dataclass, fields
from typing import Any

import msgspec

SHOWN, CLICKED, PLAYED, COMPLETED = 1, 2, 4, 8
# The outcomes each action sets on its (ranking, item) pair.
ACTION_OUTCOMES: dict[str, int] = {
    "impression": SHOWN, "click": SHOWN | CLICKED, "play": SHOWN | PLAYED,
    "resume": SHOWN | PLAYED, "pause": SHOWN | PLAYED, "stop": SHOWN | PLAYED,
    "complete": SHOWN | PLAYED | COMPLETED, "rate": SHOWN, "add_to_list": SHOWN,
}
ALL = "*"  # the variant label of an experiment's own row (interleaved requests and ties)
INTERLEAVE = "interleave"
TIE = -2
UNDECIDED = -1
BUCKET_MS = 60_000  # rankings are held in buckets of this much serving time
USER_GROUPS = 64  # per-user totals are snapshotted in this many groups (a power of two)
# Why an event with a request_id counted nothing (marquee_experiment_unjoined_events_total).
NOT_HELD = "not_held"  # its ranking ran no experiment, was not logged, or expired
NOT_SHOWN = "not_shown"  # its item is not in the ranking
OUTSIDE_WINDOW = "outside_window"  # more than window_ms from the ranking's time
OVERFLOW = "overflow"  # too many events were waiting for their rankings (max_pending)


@dataclass(frozen=True)
class JoinConfig:
    """The join's windows and bounds (``FlowSettings`` sets them)."""

    window_ms: int = 30 * 60_000
    grace_ms: int = 30_000
    lateness_ms: int = 10_000
    max_held: int = 200_000  # rankings per shard; past it the oldest minute is dropped
    max_pending: int = 100_000  # events per shard waiting for their ranking


class LoggedItem(msgspec.Struct, gc=False):
    """An item of a logged ranking (the fields the join reads)."""

    item_id: str
    variant: str


class LoggedRanking(msgspec.Struct, gc=False):
    """A ranking record of the rankings topic (``infra/schemas/ranking-record.v1.json``), the
    fields the join reads; others are ignored.
    """

    request_id: str
    ts: int
    user_id: str
    items: list[LoggedItem]
    experiment: str | None = None
    mode: str | None = None
    variants: list[str] = []


RANKING = msgspec.json.Decoder(LoggedRanking)


@dataclass(slots=True)
class Counts:
    """One (experiment, variant) row of counts; on the ``ALL`` row only ``rankings`` (the
    interleaved requests) and ``tied`` are used.
    """

    rankings: int = 0  # rankings logged with this variant in them
    impressions: int = 0  # shown (ranking, item) pairs of the variant's items
    clicks: int = 0
    plays: int = 0
    completes: int = 0
    watch_s: float = 0.0
    watch_sq: float = 0.0  # sum over shown pairs of (their watch seconds) squared
    preferred: int = 0  # interleaved requests whose plays favour this variant
    tied: int = 0  # interleaved requests with as many plays of each team
    # Users as the unit (``streams.outcomes`` "Users as the unit"): the users with an
    # impression of the variant, and over them the sums of squares and of products with
    # impressions of each user's totals.
    users: int = 0
    user_impressions_sq: float = 0.0
    user_clicks_sq: float = 0.0
    user_clicks_impressions: float = 0.0
    user_plays_sq: float = 0.0
    user_plays_impressions: float = 0.0
    user_completes_sq: float = 0.0
    user_completes_impressions: float = 0.0
    user_watch_sq: float = 0.0
    user_watch_impressions: float = 0.0

    def add(self, other: Counts) -> None:
        """Add ``other`` into these counts (totals over shards)."""
        for f in COUNT_FIELDS:
            setattr(self, f, getattr(self, f) + getattr(other, f))


COUNT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Counts))
# A user's totals of one variant, in this order (``UserTotals``): the numerators of the rates
# and of watch time per impression, with impressions, their denominator, first.
USER_TOTALS = ("impressions", "clicks", "plays", "completes", "watch")
_USER_SUMS = tuple((f"user_{m}_sq", f"user_{m}_impressions", i)
                   for i, m in enumerate(USER_TOTALS) if i)


def add_user(row: Counts, after: list[float], before: list[float]) -> None:
    """Move one user's contribution to ``row``'s user sums from ``before`` to ``after``
    (their totals, ``USER_TOTALS`` order): the sums stay exact as the user's totals grow.
    """
    y0, y1 = before[0], after[0]
    if not y0 and y1:
        row.users += 1
    row.user_impressions_sq += y1 * y1 - y0 * y0
    for sq, cross, i in _USER_SUMS:
        x0, x1 = before[i], after[i]
        if x0 != x1 or y0 != y1:
            setattr(row, sq, getattr(row, sq) + x1 * x1 - x0 * x0)
            setattr(row, cross, getattr(row, cross) + x1 * y1 - x0 * y0)


class Held:
    """A held ranking: its items' variants, and each item's outcomes so far."""

    __slots__ = ("ts", "user", "experiment", "names", "items", "interleave", "outcomes",
                 "watch", "plays", "credit")

    def __init__(self, r: LoggedRanking) -> None:
        names = list(dict.fromkeys(r.variants))
        for item in r.items:
            if item.variant not in names:
                names.append(item.variant)
        self.ts = r.ts
        self.user = r.user_id
        self.experiment: str = r.experiment or ""
        self.names: tuple[str, ...] = tuple(names)
        index = {n: i for i, n in enumerate(names)}
        self.items: dict[str, int] = {i.item_id: index[i.variant] for i in r.items}
        self.interleave = r.mode == INTERLEAVE and len(names) == 2
        self.outcomes: dict[str, int] | None = None  # item -> outcome bits (once joined)
        self.watch: dict[str, float] | None = None  # item -> watch seconds
        self.plays: list[int] | None = None  # items played per team (interleave)
        self.credit = UNDECIDED


def _group(user: str) -> int:
    """The snapshot group of a user's totals (stable across processes, unlike ``hash``)."""
    return zlib.crc32(user.encode()) & (USER_GROUPS - 1)


def credit(plays: Iterable[int]) -> int:
    """Team-draft credit of one interleaved request from its items played per team: the team
    with more (its index), ``TIE`` when equal and some were played, ``UNDECIDED`` for none.
    """
    a, b = plays
    if a == b:
        return TIE if a else UNDECIDED
    return 0 if a > b else 1


class OutcomeShard:
    """The join state of one user shard: held rankings, waiting events, counts."""

    def __init__(self, config: JoinConfig, state: dict[str, Any] | None = None) -> None:
        self.config = config
        state = state or {}
        self.buckets: dict[int, dict[str, Held]] = {}
        self.blobs: dict[int, bytes] = dict(state.get("buckets", {}))  # pickled, untouched
        self.touched: set[int] = set()
        self.where: dict[str, int] = {}  # request_id -> bucket
        for bucket, blob in self.blobs.items():
            held = self.buckets[bucket] = pickle.loads(blob)
            self.where.update(dict.fromkeys(held, bucket))
        self.pending: dict[str, list[Any]] = state.get("pending", {})
        self.n_pending = sum(map(len, self.pending.values()))
        self.counts: dict[tuple[str, str], Counts] = {
            key: Counts(*row) for key, row in state.get("counts", {}).items()}
        self.modes: dict[str, str] = dict(state.get("modes", {}))
        self.events_wm: int = state.get("events_wm", 0)
        self.rankings_wm: int = state.get("rankings_wm", 0)
        self.oldest = min((ev.ts for evs in self.pending.values() for ev in evs), default=0)
        self.dirty: set[tuple[str, str]] = set(self.counts)  # rows owed to the table
        # (user, experiment, variant) -> the user's totals now and as last added to the row's
        # user sums (USER_TOTALS order, twice); kept in groups by a stable hash of the user so
        # a snapshot pickles again only the groups that changed. An event updates the totals;
        # ``_settle`` moves the row's sums to them, once per user and flush.
        self.user_blobs: dict[int, bytes] = dict(state.get("users", {}))
        self.user_groups: dict[int, dict[tuple[str, str, str], list[float]]] = {
            group: pickle.loads(blob) for group, blob in self.user_blobs.items()}
        self.user_totals = {key: totals for by_key in self.user_groups.values()
                            for key, totals in by_key.items()}
        self.users_changed: set[tuple[str, str, str]] = set()
        self.users_touched: set[int] = set()  # groups settled since the last snapshot
        self.unjoined: dict[str, int] = {}  # reason -> events since the last take

    # ---- input ------------------------------------------------------------------------------
    def rankings(self, rankings: Iterable[LoggedRanking], max_ts: int) -> None:
        """Hold the rankings of an experiment; join the events that waited for them.
        ``max_ts``: the newest ranking time read for this shard (experiment or not).
        """
        for r in rankings:
            if r.request_id in self.where:
                continue  # logged twice (a retried produce): counted once
            held = Held(r)
            bucket = r.ts // BUCKET_MS
            self.buckets.setdefault(bucket, {})[r.request_id] = held
            self.where[r.request_id] = bucket
            self.touched.add(bucket)
            self._count_ranking(held, r.mode or "")
            waiting = self.pending.pop(r.request_id, None)
            if waiting:
                self.n_pending -= len(waiting)
                for ev in waiting:
                    self._join(held, ev)
        if max_ts > self.rankings_wm:
            self.rankings_wm = max_ts
            self._sweep()
        while len(self.where) > self.config.max_held:
            self._drop_bucket(min(self.buckets))

    def events(self, events: Iterable[Any], watermark: int) -> None:
        """Join accepted events that carry a ``request_id`` (``Event`` objects);
        ``watermark``: the newest event time of the shard so far.
        """
        where, buckets = self.where, self.buckets
        for ev in events:
            bucket = where.get(ev.request_id)
            if bucket is not None:
                self._join(buckets[bucket][ev.request_id], ev)
                self.touched.add(bucket)
            elif self.rankings_wm >= ev.ts + self.config.grace_ms:
                self._unjoined(NOT_HELD)
            elif self.n_pending >= self.config.max_pending:
                self._unjoined(OVERFLOW)
            else:
                if not self.n_pending or ev.ts < self.oldest:
                    self.oldest = ev.ts
                self.pending.setdefault(ev.request_id, []).append(ev)
                self.n_pending += 1
        if watermark > self.events_wm:
            self.events_wm = watermark
            self._expire()

    # ---- counting ---------------------------------------------------------------------------
    def _row(self, experiment: str, variant: str) -> Counts:
        key = (experiment, variant)
        row = self.counts.get(key)
        if row is None:
            row = self.counts[key] = Counts()
        self.dirty.add(key)
        return row

    def _count_ranking(self, held: Held, mode: str) -> None:
        self.modes[held.experiment] = mode
        for name in held.names:
            self._row(held.experiment, name).rankings += 1
        if held.interleave:
            self._row(held.experiment, ALL).rankings += 1

    def _join(self, held: Held, ev: Any) -> None:
        team = held.items.get(ev.item_id)
        if team is None:
            self._unjoined(NOT_SHOWN)
            return
        if abs(ev.ts - held.ts) > self.config.window_ms:
            self._unjoined(OUTSIDE_WINDOW)
            return
        item = ev.item_id
        outcomes = held.outcomes
        if outcomes is None:
            outcomes = held.outcomes = {}
        before = outcomes.get(item, 0)
        after = before | ACTION_OUTCOMES.get(ev.action._value_, SHOWN)
        gained = after & ~before
        watch = ev.watch_seconds
        if not gained and not watch:
            return
        outcomes[item] = after
        variant = held.names[team]
        row = self._row(held.experiment, variant)
        key = (getattr(held, "user", ""), held.experiment, variant)
        user = self.user_totals.get(key)
        if user is None:
            user = self._new_user(key)
        self.users_changed.add(key)
        if gained & SHOWN:
            row.impressions += 1
            user[0] += 1
        if gained & CLICKED:
            row.clicks += 1
            user[1] += 1
        if gained & PLAYED:
            user[2] += 1
        if gained & COMPLETED:
            row.completes += 1
            user[3] += 1
        if watch:
            user[4] += watch
            totals = held.watch
            if totals is None:
                totals = held.watch = {}
            was = totals.get(item, 0.0)
            now = totals[item] = was + watch
            row.watch_s += watch
            row.watch_sq += now * now - was * was
        if gained & PLAYED:
            row.plays += 1
            if held.interleave:
                self._credit(held, team)

    def _new_user(self, key: tuple[str, str, str]) -> list[float]:
        totals = self.user_totals[key] = [0, 0, 0, 0, 0.0] * 2
        self.user_groups.setdefault(_group(key[0]), {})[key] = totals
        return totals

    def _settle(self) -> set[int]:
        """Add the users whose totals changed to their rows' user sums; the groups touched."""
        groups = set()
        n = len(USER_TOTALS)
        for key in self.users_changed:
            totals = self.user_totals[key]
            add_user(self._row(key[1], key[2]), totals[:n], totals[n:])
            totals[n:] = totals[:n]
            groups.add(_group(key[0]))
        self.users_changed = set()
        return groups

    def _credit(self, held: Held, team: int) -> None:
        plays = held.plays
        if plays is None:
            plays = held.plays = [0, 0]
        plays[team] += 1
        new = credit(plays)
        old, held.credit = held.credit, new
        if new == old:
            return
        for outcome, step in ((old, -1), (new, 1)):
            if outcome == TIE:
                self._row(held.experiment, ALL).tied += step
            elif outcome != UNDECIDED:
                self._row(held.experiment, held.names[outcome]).preferred += step

    def _unjoined(self, reason: str) -> None:
        self.unjoined[reason] = self.unjoined.get(reason, 0) + 1

    # ---- bounds -----------------------------------------------------------------------------
    def _expire(self) -> None:
        """Drop the buckets of rankings the shard's events have passed by the window."""
        horizon = self.events_wm - self.config.window_ms - self.config.lateness_ms
        for bucket in [b for b in self.buckets if (b + 1) * BUCKET_MS <= horizon]:
            self._drop_bucket(bucket)
        self._sweep()

    def _drop_bucket(self, bucket: int) -> None:
        for request_id in self.buckets.pop(bucket):
            del self.where[request_id]
        self.blobs.pop(bucket, None)
        self.touched.discard(bucket)

    def _sweep(self) -> None:
        """Count as not joined the waiting events whose ranking cannot come any more: the
        rankings read have passed them by ``grace_ms``, or the events by the window.
        """
        cfg = self.config
        cutoff = max(self.rankings_wm - cfg.grace_ms,
                     self.events_wm - cfg.window_ms - cfg.lateness_ms)
        if not self.n_pending or self.oldest > cutoff:
            return
        for request_id in list(self.pending):
            waiting = self.pending[request_id]
            kept = [ev for ev in waiting if ev.ts > cutoff]
            if len(kept) != len(waiting):
                self.n_pending -= len(waiting) - len(kept)
                for _ in range(len(waiting) - len(kept)):
                    self._unjoined(NOT_HELD)
                if kept:
                    self.pending[request_id] = kept
                else:
                    del self.pending[request_id]
        self.oldest = min((ev.ts for evs in self.pending.values() for ev in evs), default=0)

    def finish(self) -> None:
        """End of input (replays): the events still waiting will not find their ranking."""
        for waiting in self.pending.values():
            for _ in waiting:
                self._unjoined(NOT_HELD)
        self.pending, self.n_pending = {}, 0

    # ---- output -----------------------------------------------------------------------------
    def take_rows(self) -> list[tuple[Any, ...]]:
        """``(experiment, variant, mode, *counts)`` of every row changed since the last call."""
        self.users_touched |= self._settle()
        rows = [(exp, variant, self.modes.get(exp, ""), *astuple(self.counts[exp, variant]))
                for exp, variant in sorted(self.dirty)]
        self.dirty = set()
        return rows

    def take_unjoined(self) -> dict[str, int]:
        """Events not joined since the last call, by reason."""
        out, self.unjoined = self.unjoined, {}
        return out

    def held(self) -> int:
        """Rankings held now."""
        return len(self.where)

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to resume; only the buckets touched since the last snapshot are
        pickled again (a held minute that no event joined keeps its bytes).
        """
        for bucket in self.touched:
            if bucket in self.buckets:
                self.blobs[bucket] = pickle.dumps(self.buckets[bucket],
                                                  protocol=pickle.HIGHEST_PROTOCOL)
        self.touched = set()
        for group in self._settle() | self.users_touched:
            self.user_blobs[group] = pickle.dumps(self.user_groups[group],
                                                  protocol=pickle.HIGHEST_PROTOCOL)
        self.users_touched = set()
        return {"buckets": dict(self.blobs), "users": dict(self.user_blobs),
                "pending": {k: list(v) for k, v in self.pending.items()},
                "counts": {k: astuple(c) for k, c in self.counts.items()},
                "modes": dict(self.modes), "events_wm": self.events_wm,
                "rankings_wm": self.rankings_wm}
