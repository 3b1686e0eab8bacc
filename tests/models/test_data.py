"""The data layer: loaders, the leave-one-out rule and the training targets."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from models.data import (
    I_ACTION,
    I_ITEM,
    constant_facets,
    corpus_from_events,
    corpus_from_tokens,
    eval_set,
    known_items,
    leave_one_out,
    load_sasrec,
    load_token_log,
    training_windows,
)
from streams.contract.catalogue import Title
from streams.contract.tokens import FACETS, Token, Vocab


def _sasrec(tmp_path: Path) -> Path:
    path = tmp_path / "d.txt"
    lines = ["1 10", "1 11", "1 12", "1 13", "1 14", "2 11", "2 10", "2 15", "3 10", "3 11"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_sasrec_leave_one_out(tmp_path: Path) -> None:
    corpus = load_sasrec(_sasrec(tmp_path))
    item = corpus.vocab.lookup
    split = leave_one_out(corpus)
    assert split.test["1"] == (4, item("item", "14"))
    assert split.valid["1"] == (3, item("item", "13"))
    assert split.train == {"1": 3, "2": 1, "3": 2}  # user 3 has < 3 items: training only
    assert "3" not in split.test
    # context facets are padding for SASRec data: no invented timestamps
    assert (corpus.sequences["1"][:, 2:] == 0).all()
    es = eval_set(corpus, split.test, max_len=3)
    row = es.users.index("1")
    assert es.tokens[row, :, I_ITEM].tolist() == [item("item", i) for i in ("11", "12", "13")]
    assert set(es.seen[row].tolist()) == {item("item", i) for i in ("10", "11", "12", "13")}


def test_constant_facets_are_those_the_data_never_varies(tmp_path: Path) -> None:
    corpus = load_sasrec(_sasrec(tmp_path))
    assert constant_facets(corpus) == FACETS[1:]  # every token a watch, no context at all
    seq = corpus.sequences["1"]
    seq[0, FACETS.index("device")] = 3  # one device only: still constant
    assert "device" in constant_facets(corpus)
    seq[1, FACETS.index("device")] = 4
    seq[2, I_ACTION] = seq[0, I_ACTION] + 1
    assert constant_facets(corpus) == tuple(f for f in FACETS[1:] if f not in
                                            ("action", "device"))


def test_windows_targets_next_interaction_and_mtp(tmp_path: Path) -> None:
    corpus = load_sasrec(_sasrec(tmp_path))
    split = leave_one_out(corpus)
    win = training_windows(corpus, split, max_len=4, mtp_k=3)
    ids = [corpus.vocab.lookup("item", i) for i in ("10", "11", "12")]
    row = [i for i in range(len(win)) if win.tokens[i, -1, I_ITEM] == ids[1]][0]
    # the prefix 10 11 12 ends at its last position with a target: 12 predicts nothing in
    # training, so the window is 10 11 and its newest position (where serving reads) is trained
    assert win.tokens[row, :, I_ITEM].tolist() == [0, 0, ids[0], ids[1]]
    assert win.item[row].tolist() == [0, 0, ids[1], ids[2]]
    assert win.mtp[row, :, 0].tolist() == [0, 0, ids[2], 0]
    assert (win.item[:, -1] > 0).all()  # every window's newest position has a target
    known = known_items(corpus, split)
    assert known[ids[0]] == 1 and known[ids[1]] == 1
    assert known[corpus.vocab.lookup("item", "14")] == 0  # only ever a test target


def _tok(user: str, ts: int, item: int, action: str, vocab: Vocab) -> Token:
    return Token(user_id=user, ts=ts, item_id=f"i{item}", item=item,
                 action=vocab.lookup("action", action), gap=3, hour=1, dow=1, device=2,
                 surface=2, duration=4)


def test_event_tokens_cut_before_the_discovery_of_the_target() -> None:
    vocab = Vocab()
    for i in range(10):
        vocab.id("item", f"x{i}")
    acts = [(2, "impression"), (2, "click"), (2, "complete"), (2, "rate"), (3, "impression"),
            (3, "watch"), (4, "impression"), (5, "impression"), (5, "click"), (5, "abandon"),
            (6, "impression"), (7, "click"), (7, "complete")]
    corpus = corpus_from_tokens([_tok("u", t, i, a, vocab) for t, (i, a) in enumerate(acts)],
                                vocab)
    split = leave_one_out(corpus)
    # valid target: item 5 (history ends after item 3's watch); test: item 7 (after abandon 5)
    assert split.valid["u"] == (6, 5) and split.test["u"] == (10, 7)
    win = training_windows(corpus, split, max_len=8, mtp_k=2)
    # the training prefix is the first 6 tokens, cut after its last position with a target
    seq = win.tokens[0, -4:]
    assert (win.tokens[0, :-4] == 0).all()
    assert seq[:, I_ACTION].tolist() == [vocab.lookup("action", a) for _, a in acts[:4]]
    # targets only at interactions and their follow-ups, pointing at the next interaction
    assert win.item[0, -4:].tolist() == [0, 0, 3, 3]
    # next-token targets still come from the untrimmed prefix: the rate is followed by an
    # impression
    assert win.action[0, -1] == vocab.lookup("action", "impression")


def test_cold_items_are_never_targets(tmp_path: Path) -> None:
    corpus = load_sasrec(_sasrec(tmp_path))
    cold = corpus.vocab.lookup("item", "12")
    corpus.cold_items = {cold}
    split = leave_one_out(corpus)
    win = training_windows(corpus, split, max_len=4, mtp_k=3)
    assert cold not in win.item and cold not in win.mtp
    assert known_items(corpus, split)[cold] == 0


def test_token_log_reader_sorts_and_drops_duplicates(tmp_path: Path) -> None:
    vocab = Vocab()
    rows = []
    for n, (user, ts, item) in enumerate([("b", 5, "x"), ("a", 2, "y"), ("a", 1, "x"),
                                           ("a", 3, "z")]):
        tid = vocab.id("item", item)
        rows.append({"user_id": user, "ts": ts, "item_id": item, "item": tid,
                     "action": vocab.lookup("action", "watch"), "gap": 1, "hour": 1, "dow": 1,
                     "device": 1, "surface": 1, "duration": 1, "weight": 1.0,
                     "token_id": f"t{n}"})
    logdir = tmp_path / "tokens"
    logdir.mkdir()
    pd.DataFrame(rows).to_parquet(logdir / "a.parquet")
    pd.DataFrame(rows[:2]).to_parquet(logdir / "b.parquet")  # a replay: same token ids
    vocab.save(tmp_path / "vocab.json")
    corpus = load_token_log(logdir)
    assert set(corpus.sequences) == {"a", "b"}
    assert corpus.sequences["a"][:, I_ITEM].tolist() == [vocab.lookup("item", i)
                                                        for i in ("x", "y", "z")]
    assert corpus.sequences["a"].shape[1] == len(FACETS)
    with pytest.raises(FileNotFoundError, match="parquet"):
        load_token_log(tmp_path / "missing")


def test_corpus_from_events_merges_a_play_and_attaches_the_catalogue() -> None:
    base = {"user_id": "u", "item_id": "m1", "device": "tv", "surface": "home/top_picks"}
    t0 = 1_767_225_600_000
    steps = [("impression", 1_000, 0.0), ("play", 2_000, 0.0), ("pause", 62_000, 60.0),
             ("resume", 70_000, 0.0), ("complete", 200_000, 130.0)]
    events = [{**base, "event_id": f"e{i}", "action": a, "ts": t0 + ts, "watch_seconds": w}
              for i, (a, ts, w) in enumerate(steps)]
    titles = {"m1": Title("m1", "drama", "movie", release_ms=0, duration_s=200)}
    corpus = corpus_from_events(events, titles)
    seq = corpus.sequences["u"]
    actions = [corpus.vocab.lookup("action", a) for a in ("impression", "complete")]
    assert seq[:, FACETS.index("action")].tolist() == actions
    item = corpus.vocab.lookup("item", "m1")
    assert corpus.genres == ["drama"] and corpus.kinds == ["movie"]
    assert corpus.item_meta[item, 0] == 1 and corpus.item_meta[item, 1] == 1


def test_windows_cover_each_training_position_once(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text("".join(f"1 {i}\n" for i in range(1, 24)) + "2 1\n2 2\n2 3\n2 4\n")
    corpus = load_sasrec(path)
    split = leave_one_out(corpus)
    assert split.train == {"1": 21, "2": 2}
    win = training_windows(corpus, split, max_len=5, mtp_k=2)
    # the prefixes end at their last position with a target: 20 tokens for user 1 in 4
    # windows, 1 for user 2
    assert len(win) == 4 + 1
    seen = sorted(int(t) for t in win.tokens[..., I_ITEM][win.tokens[..., I_ITEM] > 0])
    ids = [corpus.vocab.lookup("item", str(i)) for i in range(1, 22)]
    assert seen == sorted(ids[:-1] + [corpus.vocab.lookup("item", "1")])
    # every prefix position but the last predicts the next item, exactly once
    targets = sorted(int(t) for t in win.item[win.item > 0])
    assert targets == sorted(ids[1:] + [corpus.vocab.lookup("item", "2")])
