"""The dataflow with Bytewax's TestingSource/TestingSink: what comes out for what goes in."""

from __future__ import annotations

import json

import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from feature_repo.definitions import ITEM_FEATURES
from infra.synthetic import SyntheticWorld, WorldConfig
from streams.contract.events import InteractionEvent
from streams.contract.tokenizer import tokenize_events
from streams.contract.tokens import FACETS, Vocab
from streams.flow import FlowSettings, Shared, build_flow
from streams.records import DeadLetter, ItemRows, TokenBatch, UserRows
from tests.streams.contract.tokenizer_reference import token_tuple
from tests.streams.messages import as_messages, message


def world_events(n_users: int = 12, days: int = 2) -> tuple[list[dict], SyntheticWorld]:
    world = SyntheticWorld(WorldConfig(n_users=n_users, days=days))
    return list(world.events()), world


def shared_for(world: SyntheticWorld, **settings) -> Shared:
    durations = {t.item_id: t.duration_s for t in world.catalogue}
    catalogue = {t.item_id: t for t in world.catalogue}
    return Shared(Vocab(), durations, catalogue,
                  FlowSettings(finish_at_eof=True, flush_s=0.01, log_flush_s=0.001, **settings))


def run(msgs: list, shared: Shared, poll: int = 50) -> tuple[list, list]:
    """Run the flow over ``msgs`` in polls of ``poll`` messages; flatten what comes out."""
    out, dead = [], []
    polls = [msgs[i:i + poll] for i in range(0, len(msgs), poll)]
    run_main(build_flow(TestingSource(polls), TestingSink(out), TestingSink(dead), shared))
    return out, [d for batch in dead for d in batch]


@pytest.mark.parametrize("poll", [50, 5000])
def test_flow_tokens_equal_the_batch_tokenizer_and_bad_events_are_dead_lettered(poll):
    events, world = world_events()
    raw = [json.dumps(e).encode() for e in events]
    # Noise: a duplicate, broken JSON, a contract violation, an event far too late, one
    # whose key is not its user and one dated an hour after it was sent.
    late = {**events[-1], "event_id": "late-1", "ts": events[-1]["ts"] - 3_600_000}
    noisy = as_messages(raw[:100] + [raw[5], b"{not json", json.dumps(
        {**events[0], "action": "fly", "event_id": "x1"}).encode()] + raw[100:]
        + [json.dumps(late).encode()])
    sent = events[-1]["ts"] + 60_000
    future = {**events[-1], "event_id": "future-1", "ts": sent + 3_600_000}
    noisy += [message(json.dumps(future).encode(), future["user_id"].encode(), 0, 10**6, sent),
              message(raw[7], b"someone-else", 1, 10**6)]
    shared = shared_for(world)
    out, dead = run(noisy, shared, poll)

    assert all(isinstance(v, UserRows | ItemRows | TokenBatch) for v in out)
    tokens = [t for v in out if isinstance(v, TokenBatch) for t in v.tokens]
    want_vocab = Vocab()
    want = tokenize_events([InteractionEvent.model_validate(e) for e in events], want_vocab,
                           config=shared.settings.tokenizer(), durations=shared.durations)
    assert sorted(token_tuple(t, shared.vocab) for t in tokens) == sorted(
        token_tuple(t, want_vocab) for t in want)

    reasons = sorted(d.reason for d in dead)
    assert all(isinstance(d, DeadLetter) for d in dead)
    assert reasons == ["duplicate", "future", "invalid_action", "invalid_event", "late",
                       "wrong_key"]
    assert all(d.problems for d in dead), "every dead letter names its problem"
    letters = {d.reason: json.loads(d.to_json()) for d in dead}
    assert letters["invalid_event"]["raw"] == "{not json"
    assert letters["wrong_key"]["problems"][0].startswith("key: message key b'someone-else'")
    assert "3600000 ms after the message's arrival" in letters["future"]["problems"][0]
    first = next(e for e in events if e["event_id"] == events[5]["event_id"])
    assert letters["duplicate"]["problems"][0].startswith(
        f"event_id: duplicate of event_id {first['event_id']!r} first accepted with ts "
        f"{first['ts']}")
    assert f"ms before the watermark of user {late['user_id']!r}" in letters["late"][
        "problems"][0]

    # The last row per user is that user's whole token history (all final at EOF).
    rows = {}
    for value in out:
        if isinstance(value, UserRows):
            for row in value.rows:
                rows[row["user_id"]] = row
    by_user: dict[str, list] = {}
    for t in want:
        by_user.setdefault(t.user_id, []).append(t)
    assert set(rows) == set(by_user)
    for user_id, row in rows.items():
        mine = by_user[user_id][-200:]
        assert row["n_tokens"] == len(mine) and row["last_ts"] == mine[-1].ts
        for i, facet in enumerate(FACETS):
            got = row[f"{facet}_seq"]
            if facet in ("item", "device", "surface", "action"):  # vocab ids: compare names
                names = {1: "?"} | {v: k for k, v in shared.vocab.tables[facet].items()}
                want_names = {1: "?"} | {v: k for k, v in want_vocab.tables[facet].items()}
                assert [names[x] for x in got] == [want_names[t.facet_ids()[i]] for t in mine]
            else:
                assert got == [t.facet_ids()[i] for t in mine]

    # Item rows: every played item has a row with plays and catalogue metadata.
    items = {r["item_id"]: r for v in out if isinstance(v, ItemRows) for r in v.rows}
    played = {e["item_id"] for e in events if e["action"] == "play"}
    assert played <= set(items)
    some = items[sorted(played)[0]]
    assert some["plays_24h"] >= 1 and some["genre"] and some["duration_s"] > 0
    assert set(some) == {"item_id", "event_timestamp", *ITEM_FEATURES}  # the Feast view's names
    for item_id, row in items.items():  # windows end at the item's newest event (minutes)
        mine = [e for e in events if e["item_id"] == item_id
                and e["action"] in ("play", "impression", "click")]
        newest = max(e["ts"] // 60_000 for e in mine)
        recent = [e for e in mine if e["ts"] // 60_000 > newest - 24 * 60]
        assert row["plays_24h"] == sum(e["action"] == "play" for e in recent)
        assert row["impressions_24h"] == sum(e["action"] == "impression" for e in recent)


def test_flush_share_paces_the_process_flushes() -> None:
    from streams.shards import PACER

    before = PACER.share
    try:
        Shared(Vocab(), {}, {}, FlowSettings(flush_share=0.25))
        assert PACER.share == 0.25
        PACER.last = 0.1  # the last flush cost 0.1 s: at 0.25, the next waits 3x that
        assert PACER.next_tick(0.1, now=100.0) == pytest.approx(100.3, abs=1e-6)
    finally:
        PACER.share, PACER.last, PACER.cost = before, 0.0, 0.0
    with pytest.raises(ValueError):
        FlowSettings(flush_share=0)
