"""Continuous training's pieces: the time-based holdout cuts by time, a warm start keeps the
serving model's rows while new titles join the vocabulary, and the gate applies its margin.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infra.synthetic import WorldConfig
from infra.token_days import TokenLogDays
from models.data import I_ACTION, I_ITEM, known_items, load_corpus
from models.holdout import cut_time, time_split
from models.retrain import gate, grow, retrain
from models.train import TrainConfig, train
from streams.contract.tokens import HOUR_MS

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 1, "max_len": 20, "mtp_k": 1}


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory):
    """A tiny model trained on 3 days, and the log grown by a 4th."""
    root = tmp_path_factory.mktemp("retrain")
    days = TokenLogDays(root, WorldConfig(seed=5, n_users=40, days=4))
    days.grow_to(3)
    before = load_corpus("tokens", root / "tokens")
    base = train(before, TINY, TrainConfig(epochs=1, progress=False, device="cpu",
                                           blend_grid=())).checkpoint
    days.grow_to(4)
    return root, base, before, load_corpus("tokens", root / "tokens")


def test_the_holdout_is_cut_by_time(grown) -> None:
    _, _, _, corpus = grown
    cut = cut_time(corpus, 12)
    newest = max(int(t[-1]) for t in corpus.ts.values())
    assert cut == newest - 12 * HOUR_MS
    hold = time_split(corpus, cut)
    assert hold.recent, "the slice has targets"
    positive = corpus.positive_ids()
    for user, end in hold.split.train.items():
        assert end == 0 or corpus.ts[user][end - 1] < cut  # nothing from the slice trains
    for user, (end, item) in hold.recent.items():
        seq, ts = corpus.sequences[user], corpus.ts[user]
        pos = np.flatnonzero(np.isin(seq[:, I_ACTION], positive))
        first = pos[ts[pos] >= cut][0]  # the user's first interaction in the slice
        assert seq[first, I_ITEM] == item and ts[first] >= cut
        assert end <= first and ts[end - 1] < cut  # seen through the history before it
    for user, (end, _) in hold.split.valid.items():  # early stopping sees no slice target
        pos = np.flatnonzero(np.isin(corpus.sequences[user][:, I_ACTION], positive))
        assert corpus.ts[user][pos[pos >= end][0]] < cut


def test_warm_start_keeps_rows_and_new_titles_join(grown) -> None:
    _, base, before, corpus = grown
    assert corpus.n_items > before.n_items  # the simulated day brought new titles
    hold = time_split(corpus, cut_time(corpus, 12))
    known = known_items(corpus, hold.split)
    model = grow(base, corpus, known)
    old = base.model.state_dict()
    new = model.state_dict()
    n = before.n_items
    assert new["item_emb.weight"].shape[0] == corpus.n_items
    assert torch.equal(new["item_emb.weight"][:n], old["item_emb.weight"])
    assert torch.equal(new["blocks.0.attn.qkv.weight"], old["blocks.0.attn.qkv.weight"])
    # new titles are placed by their metadata (tower) whether or not their id trains
    assert (model.item_meta[n:, 0] > 0).all()
    with torch.no_grad():
        vec = model.item_vectors()
    cold = [i for i in range(n, corpus.n_items) if known[i] == 0]
    if cold:
        tower = model.tower(model.item_meta[cold])
        assert torch.allclose(vec[cold], tower, atol=1e-6)


def test_retrain_examines_both_models_on_both_exams(grown) -> None:
    _, base, _, corpus = grown
    out = retrain(base, corpus, TrainConfig(epochs=1, progress=False, device="cpu",
                                            blend_grid=()), holdout_hours=12)
    assert out.new_items == corpus.n_items - base.config.n_items > 0
    assert out.candidate.config.n_items == corpus.n_items
    assert out.candidate.extra["warm_start"]["parent"] == base.version
    for exam in ("recent", "standard"):
        cand, cur = out.exams[exam]["candidate"], out.exams[exam]["current"]
        assert cand["users"] == cur["users"] > 0
    assert out.train.history[0]["epoch"] == 0  # the starting point was measured first


def _exams(recent: tuple[float, float], standard: tuple[float, float]) -> dict:
    return {name: {"candidate": {"ndcg@10": c, "users": 10}, "current": {"ndcg@10": s,
                                                                         "users": 10}}
            for name, (c, s) in (("recent", recent), ("standard", standard))}


def test_gate_margin() -> None:
    assert gate(_exams((0.10, 0.10), (0.20, 0.19)), margin=0.0).promote
    within = gate(_exams((0.099, 0.10), (0.20, 0.20)), margin=0.02)
    assert within.promote  # 1% worse, 2% allowed
    worse = gate(_exams((0.097, 0.10), (0.30, 0.20)), margin=0.02)
    assert not worse.promote
    assert worse.reasons[0].startswith("recent ndcg@10 0.0970 < 0.0980")
    assert "standard ndcg@10 0.3000 >= 0.1960" in worse.reasons[1]
    assert not gate(_exams((0.2, 0.1), (0.1, 0.2)), margin=0.4).promote  # both must pass


def test_vocabulary_must_continue(grown) -> None:
    _, base, _, corpus = grown
    from streams.contract.tokens import Vocab

    shuffled = Vocab(tables={k: dict(v) for k, v in corpus.vocab.tables.items()})
    items = list(shuffled.tables["item"])
    shuffled.tables["item"] = {item: i + 2 for i, item in enumerate(reversed(items))}
    corpus_b = type(corpus)(corpus.sequences, corpus.weights, shuffled, corpus.item_meta,
                            corpus.genres, corpus.kinds, corpus.ref_ms, ts=corpus.ts)
    with pytest.raises(ValueError, match="not a continuation"):
        grow(base, corpus_b, np.ones(corpus.n_items, np.float32))
