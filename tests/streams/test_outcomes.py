"""The experiment join (``streams.outcomes``): counts against a direct computation, whatever
the order the two topics deliver in, across snapshot restores; the window; team-draft credit.
"""

from __future__ import annotations

import pickle
import random
from dataclasses import astuple

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from streams.contract.events import Action
from streams.contract.fast_events import Event
from streams.outcomes import (
    ALL,
    BUCKET_MS,
    NOT_HELD,
    NOT_SHOWN,
    OUTSIDE_WINDOW,
    OVERFLOW,
    TIE,
    UNDECIDED,
    Counts,
    JoinConfig,
    LoggedItem,
    LoggedRanking,
    OutcomeShard,
    credit,
)

T0 = 1_767_225_600_000
CONFIG = JoinConfig(window_ms=30 * 60_000, grace_ms=30_000, lateness_ms=10_000)
ACTIONS = ["impression", "click", "play", "pause", "stop", "complete", "rate"]


def ranking(n: int, mode: str = "ab", ts: int = T0, items: int = 6,
            variants: tuple[str, ...] = ("a", "b")) -> LoggedRanking:
    """Request ``n``: A/B arm by parity, or the two teams alternating for interleave."""
    if mode == "interleave":
        logged = [LoggedItem(f"i{j}", variants[j % 2]) for j in range(items)]
        return LoggedRanking(f"{n:032x}", ts, f"u{n}", logged, "exp", mode, list(variants))
    arm = variants[n % len(variants)]
    return LoggedRanking(f"{n:032x}", ts, f"u{n}", [LoggedItem(f"i{j}", arm)
                                                    for j in range(items)], "exp", mode, [arm])


def event(r: LoggedRanking, item: str, action: str, ts: int, watch: float = 0.0,
          eid: str | None = None) -> Event:
    return Event(event_id=eid or f"{r.request_id[-6:]}-{item}-{action}-{ts}", user_id=r.user_id,
                 action=Action(action), ts=ts, device="tv", surface="home", item_id=item,
                 watch_seconds=watch, request_id=r.request_id)


def expected(rankings: list[LoggedRanking], events: list[Event]) -> dict[tuple[str, str], Counts]:
    """The counts computed directly: each shown pair's outcomes, each request's credit."""
    from streams.outcomes import ACTION_OUTCOMES, CLICKED, COMPLETED, PLAYED, SHOWN

    by_id = {r.request_id: r for r in rankings}
    out: dict[tuple[str, str], Counts] = {}

    def row(v: str, r: LoggedRanking) -> Counts:
        return out.setdefault((r.experiment or "", v), Counts())

    bits: dict[tuple[str, str], int] = {}
    watch: dict[tuple[str, str], float] = {}
    for r in rankings:
        for v in r.variants:
            row(v, r).rankings += 1
        if r.mode == "interleave":
            row(ALL, r).rankings += 1
    for ev in events:
        r = by_id[ev.request_id]
        key = (r.request_id, ev.item_id)
        bits[key] = bits.get(key, 0) | ACTION_OUTCOMES[ev.action.value]
        watch[key] = watch.get(key, 0.0) + ev.watch_seconds
    plays: dict[str, list[int]] = {}
    per_user: dict[tuple[str, str, str], list[float]] = {}
    for (rid, item), b in bits.items():
        r = by_id[rid]
        variant = next(i.variant for i in r.items if i.item_id == item)
        c = row(variant, r)
        c.impressions += bool(b & SHOWN)
        c.clicks += bool(b & CLICKED)
        c.plays += bool(b & PLAYED)
        c.completes += bool(b & COMPLETED)
        c.watch_s += watch[rid, item]
        c.watch_sq += watch[rid, item] ** 2
        totals = per_user.setdefault((r.experiment or "", variant, r.user_id), [0, 0, 0, 0, 0.0])
        for i, gained in enumerate((b & SHOWN, b & CLICKED, b & PLAYED, b & COMPLETED)):
            totals[i] += bool(gained)
        totals[4] += watch[rid, item]
        if b & PLAYED and r.mode == "interleave":
            plays.setdefault(rid, [0, 0])[r.variants.index(variant)] += 1
    for (exp, variant, _), (y, *xs) in per_user.items():
        c = out[exp, variant]
        c.users += bool(y)
        c.user_impressions_sq += y * y
        for name, x in zip(("clicks", "plays", "completes", "watch"), xs, strict=True):
            setattr(c, f"user_{name}_sq", getattr(c, f"user_{name}_sq") + x * x)
            setattr(c, f"user_{name}_impressions", getattr(c, f"user_{name}_impressions") + x * y)
    for rid, p in plays.items():
        won = credit(p)
        if won == TIE:
            row(ALL, by_id[rid]).tied += 1
        elif won != UNDECIDED:
            row(by_id[rid].variants[won], by_id[rid]).preferred += 1
    return out


def approx(counts: dict[tuple[str, str], Counts]) -> dict:
    return {k: tuple(round(v, 3) for v in astuple(c)) for k, c in counts.items()
            if any((c.rankings, c.impressions, c.watch_s, c.preferred, c.tied))}


@st.composite
def traffic(draw: st.DrawFn) -> tuple[list[LoggedRanking], list[Event]]:
    """Rankings a few seconds apart (A/B or interleaved) and events on their items, dated
    within the window after their ranking."""
    mode = draw(st.sampled_from(["ab", "interleave"]))
    n = draw(st.integers(1, 12))
    users = draw(st.integers(1, 4))  # a user's several rankings: their totals add up
    rankings = [msgspec.structs.replace(ranking(i, mode, T0 + 5_000 * i),
                                        user_id=f"u{draw(st.integers(0, users - 1))}")
                for i in range(n)]
    events = []
    for _ in range(draw(st.integers(0, 40))):
        r = rankings[draw(st.integers(0, n - 1))]
        item = f"i{draw(st.integers(0, 5))}"
        action = draw(st.sampled_from(ACTIONS))
        watch = draw(st.sampled_from([0.0, 0.0, 12.5, 300.0])) if action in (
            "pause", "stop", "complete") else 0.0
        ts = r.ts + draw(st.integers(0, 60_000))
        events.append(event(r, item, action, ts, watch, eid=f"e{len(events)}"))
    return rankings, sorted(events, key=lambda e: e.ts)


def feed(rankings: list[LoggedRanking], events: list[Event], seed: int,
         restore_every: int = 0) -> OutcomeShard:
    """Deliver both streams in a random interleaving of small batches (rankings in their
    order, events in theirs), restoring from a pickled snapshot every few batches."""
    rng = random.Random(seed)
    shard = OutcomeShard(CONFIG)
    ri = ei = batches = 0
    while ri < len(rankings) or ei < len(events):
        if ei >= len(events) or (ri < len(rankings) and rng.random() < 0.5):
            take = rankings[ri:ri + rng.randint(1, 3)]
            ri += len(take)
            shard.rankings(take, max(r.ts for r in take))
        else:
            take = events[ei:ei + rng.randint(1, 5)]
            ei += len(take)
            shard.events(take, max(e.ts for e in take))
        batches += 1
        if restore_every and batches % restore_every == 0:
            shard = OutcomeShard(CONFIG, pickle.loads(pickle.dumps(shard.snapshot())))
    shard.take_rows()  # as the flow does before it writes: the user sums settle
    return shard


@given(traffic(), st.integers(0, 2**32), st.sampled_from([0, 1, 3]))
def test_counts_equal_a_direct_computation_in_any_order_and_across_restores(t, seed, every):
    rankings, events = t
    shard = feed(rankings, events, seed, every)
    assert approx(shard.counts) == approx(expected(rankings, events))
    assert not shard.pending  # every event found its ranking
    for c in shard.counts.values():
        assert c.clicks <= c.impressions and c.plays <= c.impressions
        assert c.completes <= c.plays


@given(traffic(), st.integers(0, 2**32))
def test_an_event_seen_again_changes_nothing_but_its_watch_time(t, seed):
    rankings, events = t
    once = feed(rankings, events, seed)
    replayed = [e for e in events if not e.watch_seconds]
    twice = feed(rankings, sorted(events + replayed, key=lambda e: e.ts), seed)
    assert approx(twice.counts) == approx(once.counts)


def test_interleaving_credit_follows_the_plays_of_each_team():
    assert credit([0, 0]) == UNDECIDED
    assert credit([2, 2]) == TIE
    assert credit([1, 0]) == 0 and credit([1, 3]) == 1
    r = ranking(1, "interleave")  # i0, i2, i4 team a; i1, i3, i5 team b
    shard = OutcomeShard(CONFIG)
    shard.rankings([r], r.ts)
    steps = [("i1", (0, 1, 0)), ("i0", (0, 0, 1)), ("i0", (0, 0, 1)), ("i2", (1, 0, 0)),
             ("i3", (0, 0, 1)), ("i5", (0, 1, 0))]
    for n, (item, (a, b, tie)) in enumerate(steps):
        shard.events([event(r, item, "play", r.ts + n)], r.ts + n)
        got = (shard.counts["exp", "a"].preferred, shard.counts["exp", "b"].preferred,
               shard.counts["exp", ALL].tied)
        assert got == (a, b, tie), (n, item)


def test_the_window_and_what_does_not_join():
    cfg = JoinConfig(window_ms=60_000, grace_ms=5_000, lateness_ms=1_000, max_pending=3)
    shard = OutcomeShard(cfg)
    r = ranking(2, ts=T0)
    shard.rankings([r], r.ts)
    shard.events([event(r, "i0", "click", T0 + 60_000)], T0 + 60_000)  # at the edge: joins
    shard.events([event(r, "i1", "click", T0 + 60_001)], T0 + 60_001)  # past it
    shard.events([event(r, "nope", "click", T0 + 1)], T0 + 60_001)
    assert shard.counts["exp", "a"].clicks == 1
    assert shard.take_unjoined() == {OUTSIDE_WINDOW: 1, NOT_SHOWN: 1}
    # The shard's events pass the ranking by window + lateness: it is dropped.
    assert shard.held() == 1
    shard.events([], T0 + 60_000 + 1_000 + BUCKET_MS)
    assert shard.held() == 0
    shard.events([event(r, "i0", "play", T0 + 2)], T0 + 200_000)  # its ranking is gone
    assert shard.take_unjoined() == {NOT_HELD: 1}
    unread = ranking(3, ts=T0 + 200_000)
    shard.events([event(unread, "i0", "play", T0 + 200_001)], T0 + 200_001)
    # Not held, and the rankings read so far are not past it: it waits for its ranking...
    assert shard.n_pending == 1 and not shard.take_unjoined()
    shard.rankings([], T0 + 200_001 + 4_999)
    assert shard.n_pending == 1
    # ...until the rankings read for the shard are grace_ms past it.
    shard.rankings([], T0 + 200_001 + 5_000)
    assert shard.n_pending == 0 and shard.take_unjoined() == {NOT_HELD: 1}
    # Waiting is bounded.
    ghosts = [event(ranking(10 + i, ts=T0 + 300_000), "i0", "click", T0 + 300_000)
              for i in range(5)]
    shard.events(ghosts, T0 + 300_000)
    assert shard.n_pending == 3 and shard.take_unjoined() == {OVERFLOW: 2}
    shard.finish()
    assert shard.n_pending == 0 and shard.take_unjoined() == {NOT_HELD: 3}


def test_a_ranking_after_its_events_still_counts_them():
    shard = OutcomeShard(CONFIG)
    r = ranking(4, "interleave", ts=T0)
    shard.events([event(r, "i1", "impression", T0 + 10), event(r, "i1", "play", T0 + 20)],
                 T0 + 20)
    assert shard.n_pending == 2
    shard.rankings([r], r.ts)
    b = shard.counts["exp", "b"]
    assert (b.impressions, b.plays, b.preferred) == (1, 1, 1) and shard.n_pending == 0


def test_memory_is_bounded_by_max_held_and_snapshots_reuse_untouched_minutes():
    shard = OutcomeShard(JoinConfig(max_held=50))
    rankings = [ranking(i, ts=T0 + i * 10_000) for i in range(60)]  # 10 s apart: 6 a minute
    shard.rankings(rankings, rankings[-1].ts)
    assert shard.held() <= 50
    first = shard.snapshot()
    r = rankings[-1]
    shard.events([event(r, "i0", "click", r.ts + 1)], r.ts + 1)
    second = shard.snapshot()
    touched = [b for b in second["buckets"] if second["buckets"][b] is not first["buckets"][b]]
    assert touched == [r.ts // BUCKET_MS]


def test_rows_are_absolute_and_only_the_changed_ones_are_taken():
    shard = OutcomeShard(CONFIG)
    a, b = ranking(0), ranking(1)
    shard.rankings([a, b], b.ts)
    first = shard.take_rows()
    assert [row[:2] for row in first] == [("exp", "a"), ("exp", "b")]
    shard.events([event(b, "i0", "click", b.ts + 5)], b.ts + 5)
    (row,) = shard.take_rows()
    assert row[:5] == ("exp", "b", "ab", 1, 1)  # rankings 1, impressions 1 (a click shows it)
    assert shard.take_rows() == []
    restored = OutcomeShard(CONFIG, pickle.loads(pickle.dumps(shard.snapshot())))
    assert sorted(restored.take_rows()) == sorted(first[:1] + [row])


def test_the_rankings_decode_step_forwards_experiment_rankings_by_user_shard():
    import msgspec
    from confluent_kafka import Message

    from streams import metrics
    from streams.contract.tokens import Vocab
    from streams.flow import FlowSettings, Shared
    from streams.outcome_steps import RankingRouter

    shared = Shared(Vocab(), {}, {}, FlowSettings(shards=4))
    with_exp, plain = ranking(1, ts=T0), ranking(2, ts=T0 + 9)
    plain.experiment, plain.mode = None, None
    values = [msgspec.json.encode(with_exp), msgspec.json.encode(plain), b"{not json"]
    before = metrics.RANKINGS_UNREADABLE._value.get()
    routed = dict(RankingRouter(shared)([Message(topic="r", partition=0, offset=i, value=v)
                                         for i, v in enumerate(values)]))
    assert metrics.RANKINGS_UNREADABLE._value.get() == before + 1
    mine, theirs = shared.user_shard(with_exp.user_id), shared.user_shard(plain.user_id)
    assert [r.request_id for r in routed[mine].rankings] == [with_exp.request_id]
    assert routed[mine].shard == mine
    # A ranking without experiment is not held, but it moves its shard's rankings clock.
    assert routed[theirs].max_ts == T0 + 9 and (mine == theirs or not routed[theirs].rankings)
