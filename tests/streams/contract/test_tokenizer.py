"""The streaming tokenizer: its merge rules by example, and property tests against the slow
reference in ``tokenizer_reference.py``."""

from __future__ import annotations

import pickle
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.synthetic import SyntheticWorld, WorldConfig
from streams.contract.events import InteractionEvent
from streams.contract.merge import TokenizerConfig
from streams.contract.tokenizer import (
    DuplicateEvent,
    LateEvent,
    UserTokenizer,
    tokenize_events,
    tokenize_session,
)
from streams.contract.tokens import Vocab
from tests.streams.contract.tokenizer_reference import reference_tokens, token_tuple

T0 = 1_767_225_600_000
S = 1000
MIN = 60 * S


def ev(n: int, action: str, ts: int, item: str = "m1", surface: str = "home/top", user: str = "u1",
       watch: float = 0.0, session: str | None = None) -> InteractionEvent:
    return InteractionEvent(event_id=f"{user}-{n}", user_id=user,
                            item_id=item if action != "search" else "", action=action,
                            ts=T0 + ts, device="tv", surface=surface,
                            watch_seconds=watch, session_id=session)


def names(tokens, vocab):
    return [(token_tuple(t, vocab)[2], token_tuple(t, vocab)[3]) for t in tokens]


# ---- the rules by example ---------------------------------------------------------------
def test_watch_events_merge_into_one_token_with_total_time_and_completion():
    vocab = Vocab()
    events = [ev(0, "play", 0), ev(1, "pause", 10 * MIN, watch=600), ev(2, "resume", 12 * MIN),
              ev(3, "complete", 40 * MIN, watch=1680)]
    [token] = tokenize_events(events, vocab, durations={"m1": 2400})
    assert token_tuple(token, vocab)[3] == "complete"
    assert token.watch_seconds == 2280 and token.n_events == 4
    assert token.completion == pytest.approx(0.95)
    assert token.event_id == "u1-0" and token.session_start


@pytest.mark.parametrize(("watched", "durations", "action"), [
    (300.0, {"m1": 3000}, "abandon"), (2000.0, {"m1": 3000}, "watch"),
    (300.0, None, "abandon"), (900.0, None, "watch")])
def test_a_stop_is_an_abandon_below_the_threshold(watched, durations, action):
    vocab = Vocab()
    [token] = tokenize_events([ev(0, "play", 0), ev(1, "stop", 60 * MIN, watch=watched)],
                              vocab, durations=durations)
    assert token_tuple(token, vocab)[3] == action


def test_a_long_movie_without_events_is_one_session():
    vocab = Vocab()
    tokens = tokenize_events([ev(0, "play", 0), ev(1, "complete", 150 * MIN, watch=9000),
                              ev(2, "rate", 151 * MIN)], vocab)
    assert names(tokens, vocab) == [("m1", "complete"), ("m1", "rate")]
    assert [t.session_start for t in tokens] == [True, False]


def test_repeated_impressions_collapse_and_accidental_ones_drop():
    vocab = Vocab()
    events = [ev(0, "impression", 0, "a"), ev(1, "impression", 300, "b"),
              ev(2, "impression", 5 * S, "a"),  # same row again: collapses into the first
              ev(3, "impression", 9 * S, "c", surface="home/trending"),
              ev(4, "impression", 9 * S + 400, "d", surface="home/new"),  # c: 400 ms, dropped
              ev(5, "click", 20 * S, "d", surface="home/new"), ev(6, "play", 22 * S, "d")]
    tokens = tokenize_events(events, vocab)
    assert names(tokens, vocab) == [("a", "impression"), ("b", "impression"),
                                    ("d", "impression"), ("d", "click"), ("d", "abandon")]
    assert tokens[0].n_events == 2


def test_a_click_without_a_play_is_dropped_or_down_weighted():
    events = [ev(0, "click", 0, "a"), ev(1, "click", 2 * S, "b"), ev(2, "play", 4 * S, "b"),
              ev(3, "stop", 20 * MIN, "b", watch=1200)]
    vocab = Vocab()
    assert names(tokenize_events(events, vocab), vocab) == [("b", "click"), ("b", "watch")]
    soft = tokenize_events(events, vocab, config=TokenizerConfig(accidental_weight=0.25))
    assert [(t.item_id, t.weight) for t in soft] == [("a", 0.25), ("b", 1.0), ("b", 1.0)]


def test_sessions_split_on_idle_time_and_session_id():
    vocab = Vocab()
    events = [ev(0, "search", 0, session="s1"), ev(1, "rate", 10 * S, session="s1"),
              ev(2, "rate", 20 * S, session="s2"), ev(3, "rate", 60 * MIN)]
    tokens = tokenize_events(events, vocab)
    assert [t.session_start for t in tokens] == [True, False, True, True]
    assert tokens[0].item == 1  # a search names no item: UNKNOWN


def test_tokenize_session_starts_from_the_stored_last_ts_and_keeps_open_groups():
    vocab = Vocab()
    vocab.id("item", "m1")
    events = [ev(0, "click", 5 * S), ev(1, "play", 6 * S), ev(2, "impression", 7 * S, "new")]
    tokens = tokenize_session(events, vocab, last_ts=T0)
    assert names(tokens, vocab) == [("m1", "click"), ("m1", "watch"), ("new", "impression")]
    assert tokens[0].gap == 5 and not tokens[0].session_start  # 5 s after the stored history
    assert tokens[2].item == 1 and "new" not in vocab.tables["item"]  # read-only vocab


def test_late_and_duplicate_events_are_refused_with_a_reason():
    tok = UserTokenizer("u1", Vocab(), TokenizerConfig(max_lateness_ms=10 * S))
    assert tok.offer(ev(0, "rate", 60 * S)) == ([], None)
    assert tok.offer(ev(0, "rate", 60 * S))[1] == "duplicate"
    assert tok.offer(ev(1, "rate", 55 * S))[1] is None  # 5 s late: placed before
    assert tok.offer(ev(2, "rate", 49 * S))[1] == "late"
    with pytest.raises(LateEvent):
        tok.push(ev(3, "rate", 0))
    with pytest.raises(DuplicateEvent):
        tok.push(ev(1, "rate", 55 * S))
    assert [t.event_id for t in tok.flush()] == ["u1-1", "u1-0"]


def test_preview_shows_held_and_open_tokens_without_changing_state():
    tok = UserTokenizer("u1", Vocab())
    tok.offer(ev(0, "rate", 0))
    tok.offer(ev(1, "click", 2 * S))
    tok.offer(ev(2, "play", 3 * S))
    before = pickle.dumps(tok)
    provisional = tok.provisional()
    assert [t.event_id for t in provisional] == ["u1-0", "u1-1", "u1-2"]
    assert tok.preview() == ([t.facet_ids() for t in provisional], T0 + 3 * S)
    assert pickle.dumps(tok) == before
    assert [t.event_id for t in tok.flush()] == ["u1-0", "u1-1", "u1-2"]


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="accidental_weight"):
        TokenizerConfig(accidental_weight=2)
    with pytest.raises(ValueError, match="dedupe_window_ms"):
        TokenizerConfig(max_lateness_ms=10, dedupe_window_ms=5)


# ---- property tests against the reference -------------------------------------------------
STEPS = (0, 1, 300, 999, 1000, 1500, 30 * S, 61 * S, 5 * MIN, 11 * MIN, 31 * MIN, 5 * 60 * MIN)
ACTIONS = ("impression", "impression", "impression", "click", "play", "pause", "resume", "stop",
           "complete", "rate", "search", "add_to_list")


@st.composite
def histories(draw, min_step: int = 0):
    """One or two users' events with time steps that straddle every window of the rules."""
    n = draw(st.integers(1, 40))
    out, clock = [], {"u1": 0, "u2": 0}
    for i in range(n):
        user = draw(st.sampled_from(("u1", "u2")))
        clock[user] += max(draw(st.sampled_from(STEPS)), min_step)
        out.append(ev(i, draw(st.sampled_from(ACTIONS)), clock[user],
                      draw(st.sampled_from(("a", "b", "c"))),
                      draw(st.sampled_from(("home/top", "home/new"))), user,
                      draw(st.sampled_from((0.0, 30.0, 700.0, 2000.0))),
                      draw(st.sampled_from((None, None, "s1", "s2")))))
    return out


DURATIONS = {"a": 1200, "b": 6000}
CONFIGS = (TokenizerConfig(), TokenizerConfig(accidental_weight=0.5))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.sampled_from(CONFIGS))
def test_batch_tokenizer_matches_the_reference(events, cfg):
    vocab = Vocab()
    got = [token_tuple(t, vocab) for t in tokenize_events(events, vocab, config=cfg,
                                                        durations=DURATIONS)]
    want = []
    for user in sorted({e.user_id for e in events}):
        want += reference_tokens([e for e in events if e.user_id == user], cfg, DURATIONS)
    assert got == want


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(min_step=1), st.randoms(use_true_random=False), st.booleans())
def test_out_of_order_within_the_bound_gives_the_same_tokens(events, rnd, snapshot):
    """Shuffle each user's arrivals by up to the lateness bound, replay some duplicates and
    pickle/unpickle the state midway (recovery): the tokens are those of the sorted stream."""
    cfg = TokenizerConfig(max_lateness_ms=2 * MIN)
    vocab = Vocab()
    want = [token_tuple(t, vocab) for t in tokenize_events(events, vocab, config=cfg,
                                                         durations=DURATIONS)]
    arrivals = sorted(events, key=lambda e: e.ts + rnd.randint(0, cfg.max_lateness_ms))
    arrivals += rnd.sample(arrivals, k=len(arrivals) // 4)  # duplicates
    users: dict[str, UserTokenizer] = {}
    got = []
    for i, e in enumerate(arrivals):
        tok = users.setdefault(e.user_id, UserTokenizer(e.user_id, vocab, cfg, DURATIONS))
        tokens, reason = tok.offer(e)
        assert reason in (None, "duplicate")
        got += tokens
        if snapshot and i == len(arrivals) // 2:
            for user, state in list(users.items()):
                users[user] = pickle.loads(pickle.dumps(state))
                users[user].attach(vocab, DURATIONS)
    for user in sorted(users):
        got += users[user].flush()
    got_rows = sorted(token_tuple(t, vocab) for t in got)
    assert got_rows == sorted(want)


@settings(max_examples=60, deadline=None)
@given(histories(min_step=1))
def test_preview_is_a_prefix_consistent_rendering(events):
    """Final tokens never change: each preview's tokens that were already final stay put."""
    vocab = Vocab()
    users: dict[str, UserTokenizer] = {}
    for e in events:
        tok = users.setdefault(e.user_id, UserTokenizer(e.user_id, vocab))
        tok.offer(e)
        recent = list(tok.recent)
        assert tok.preview()[0][:len(recent)] == recent[-tok.config.recent_tokens:]


@settings(max_examples=60, deadline=None)
@given(histories(), st.sampled_from(CONFIGS))
def test_facets_only_rendering_equals_the_tokens_rendering(events, cfg):
    """Rows render open groups as facet ids only: the same ids and newest ts as the tokens."""
    vocab = Vocab()
    users: dict[str, UserTokenizer] = {}
    for e in events:
        tok = users.setdefault(e.user_id, UserTokenizer(e.user_id, vocab, cfg))
        tok.offer(e)
        tokens = tok.provisional()
        assert tok.provisional_facets() == ([t.facet_ids() for t in tokens],
                                            tokens[-1].ts if tokens else None)
        opened = tok.machine.render_open()
        assert tok.machine.render_open_facets() == ([t.facet_ids() for t in opened],
                                                    opened[-1].ts if opened else None)


class _OldFormat:
    """Pickles a ``TokenMachine`` as pickle's default path did before its ``__reduce__``: a
    bare instance, then its ``__getstate__`` dict as its ``__dict__``, as older snapshots hold.
    """

    def __init__(self, machine: object) -> None:
        self.machine = machine

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        import copyreg

        return (copyreg._reconstructor, (type(self.machine), object, None),
                self.machine.__getstate__())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(min_step=1), st.floats(0, 1))
def test_a_pickled_machine_resumes_exactly_in_either_format(events, at):
    """Snapshot every user midway (the tuple format, and the dict format of older snapshots),
    restore, feed the rest to the original and both restored copies: the same tokens, and
    the two restored copies pickle to the same bytes.
    """
    cut = int(len(events) * at)
    vocab = Vocab()
    users: dict[str, UserTokenizer] = {}
    for e in events[:cut]:
        users.setdefault(e.user_id, UserTokenizer(e.user_id, vocab, durations=DURATIONS)).offer(e)
    copies: dict[str, list[UserTokenizer]] = {}
    for user, tok in users.items():
        state = tok.__getstate__()
        state["machine"] = _OldFormat(tok.machine)
        old = UserTokenizer.__new__(UserTokenizer)
        old.__setstate__(pickle.loads(pickle.dumps(state)))
        new = pickle.loads(pickle.dumps(tok))
        assert pickle.dumps(new) == pickle.dumps(old)  # the same state, byte for byte
        for twin in (new, old):
            twin.attach(vocab, DURATIONS)
        copies[user] = [tok, new, old]
    for e in events[cut:]:
        if e.user_id not in copies:
            continue
        outs = [twin.offer(e) for twin in copies[e.user_id]]
        assert [[token_tuple(t, vocab) for t in o[0]] for o in outs] == [
            [token_tuple(t, vocab) for t in outs[0][0]]] * 3
        assert {o[1] for o in outs} == {outs[0][1]}
    for tok, new, old in copies.values():
        assert [token_tuple(t, vocab) for t in new.flush()] == [
            token_tuple(t, vocab) for t in tok.flush()] == [
            token_tuple(t, vocab) for t in old.flush()]


def test_a_draft_copy_carries_every_slot():
    from streams.contract.merge import _Draft

    draft = _Draft.__new__(_Draft)
    for i, slot in enumerate(_Draft.__slots__):
        setattr(draft, slot, f"value {i}")
    twin = draft.copy()
    assert twin is not draft
    assert [getattr(twin, s) for s in _Draft.__slots__] == [
        getattr(draft, s) for s in _Draft.__slots__]


def test_synthetic_world_streaming_equals_batch():
    world = SyntheticWorld(WorldConfig(n_users=30, days=4))
    events = [InteractionEvent.model_validate(e) for e in world.events()]
    durations = {t.item_id: t.duration_s for t in world.catalogue}
    vocab = Vocab()
    batch = [token_tuple(t, vocab) for t in tokenize_events(events, vocab, durations=durations)]
    users: dict[str, UserTokenizer] = {}
    stream = []
    for e in events:
        stream += users.setdefault(e.user_id, UserTokenizer(e.user_id, vocab,
                                                            durations=durations)).push(e)
    for tok in users.values():
        stream += tok.flush()
    assert sorted(token_tuple(t, vocab) for t in stream) == sorted(batch)
    assert len(batch) < len(events)  # merges happened
    actions = {row[3] for row in batch}
    assert {"impression", "click", "complete", "abandon"} <= actions
    assert random.Random(0)  # deterministic world: nothing random here


def test_fast_token_construction_is_a_token():
    from dataclasses import fields

    from streams.contract.merge import _new_token
    from streams.contract.tokens import Token

    values = {f.name: i for i, f in enumerate(fields(Token))}
    fast, slow = _new_token(values), Token(**values)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert pickle.loads(pickle.dumps(fast)) == slow
    assert set(fast.__dict__) == set(values)
