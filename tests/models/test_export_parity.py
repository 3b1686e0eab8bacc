"""ONNX export vs eager PyTorch: same user embeddings, ids and scores on generated batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.checkpoint import Checkpoint, vocab_hash
from models.export import export_checkpoint, sidecar
from models.model import FoundationModel, ModelConfig, RankingGraph
from models.onnx_runtime import OnnxRanker
from streams.contract.tokens import FACETS, Vocab

N_ITEMS, MAX_LEN, K = 60, 24, 15


def _checkpoint(item_only: bool = False, constant: tuple[str, ...] = ()) -> Checkpoint:
    torch.manual_seed(0)
    vocab = Vocab()
    for i in range(N_ITEMS - 2):
        vocab.id("item", f"t{i}")
    for d in ("tv", "phone"):
        vocab.id("device", d)
    cfg = ModelConfig(n_items=vocab.size("item"), max_len=MAX_LEN, d_model=32, n_heads=2,
                      n_genres=6, n_kinds=3, n_devices=vocab.size("device"), item_only=item_only,
                      mtp_blend=0.0 if item_only else 0.5,  # the graph carries the blend
                      constant_facets=constant)
    model = FoundationModel(cfg)
    gen = torch.Generator().manual_seed(1)
    meta = torch.stack([torch.randint(0, 6, (N_ITEMS,), generator=gen),
                        torch.randint(0, 3, (N_ITEMS,), generator=gen),
                        torch.randint(0, 16, (N_ITEMS,), generator=gen),
                        torch.randint(0, 12, (N_ITEMS,), generator=gen)], dim=1)
    known = (torch.rand(N_ITEMS, generator=gen) > 0.2).float()  # some cold items
    model.set_catalogue(meta, known)
    with torch.no_grad():  # untrained weights are near zero; spread them so scores differ
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    return Checkpoint(model=model, vocab=vocab, version="parity-1")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Checkpoint, OnnxRanker]:
    ckpt = _checkpoint()
    path = export_checkpoint(ckpt, tmp_path_factory.mktemp("onnx") / "fm.onnx", k=K)
    return ckpt, OnnxRanker(path)


def _batch(seed: int, b: int, n: int, pad: list[int]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = {"item": N_ITEMS + 3, "action": 10, "gap": 16, "hour": 25, "dow": 8, "device": 6,
             "surface": 40, "duration": 12}  # beyond-table ids must read as UNKNOWN
    batch = {f: rng.integers(1, sizes[f], (b, n)).astype(np.int64) for f in FACETS}
    for row, p in enumerate(pad):
        for f in FACETS:
            batch[f][row, : min(p, n - 1)] = 0  # left padding, at least one real token
    seen = (rng.random((b, N_ITEMS)) < 0.3).astype(np.float32)
    return batch, seen


def _eager(ckpt: Checkpoint, batch: dict[str, np.ndarray], seen: np.ndarray, k: int = K):
    ranker = RankingGraph(ckpt.model, k)
    with torch.no_grad():
        return [t.numpy() for t in ranker(*(torch.from_numpy(batch[f]) for f in FACETS),
                                          torch.from_numpy(seen))]


def _assert_same_ranking(ckpt: Checkpoint, batch: dict[str, np.ndarray], seen: np.ndarray,
                         ids: np.ndarray, scores: np.ndarray, tol: float = 1e-4) -> None:
    """ONNX's (id, score) pairs against eager PyTorch's score of every item: each id carries
    its own eager score, the K ids are distinct and in descending order, and no item left out
    scores above the last one kept. Two ids may trade places only when their eager scores tie
    within ``tol``; comparing scores slot by slot alone would miss swapped ids.
    """
    _, all_ids, all_scores = _eager(ckpt, batch, seen, k=N_ITEMS)
    ref = np.empty(all_scores.shape, dtype=np.float64)  # ref[row, item id] = eager score
    np.put_along_axis(ref, all_ids, all_scores.astype(np.float64), axis=1)
    for row in range(len(ids)):
        got_ids, got = ids[row], scores[row].astype(np.float64)
        assert len(set(got_ids.tolist())) == len(got_ids), f"row {row}: repeated ids"
        assert np.abs(got - ref[row, got_ids]).max() <= tol, f"row {row}: id/score pairs"
        assert (np.diff(got) <= tol).all(), f"row {row}: not in descending order"
        left_out = np.setdiff1d(np.arange(N_ITEMS), got_ids)
        assert ref[row, left_out].max(initial=-np.inf) <= got.min() + tol, (
            f"row {row}: a better item was left out")


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 9), n=st.integers(1, MAX_LEN), seed=st.integers(0, 10_000),
       pad=st.lists(st.integers(0, MAX_LEN), min_size=9, max_size=9))
def test_onnx_matches_eager(exported, b: int, n: int, seed: int, pad: list[int]) -> None:
    ckpt, ranker = exported
    batch, seen = _batch(seed, b, n, pad[:b])
    emb, ids, scores = ranker.rank(batch, seen)
    ref_emb, ref_ids, ref_scores = _eager(ckpt, batch, seen)
    assert emb.shape == (b, 32) and ids.shape == (b, K) and ids.dtype == np.int64
    assert np.abs(emb - ref_emb).max() <= 1e-4
    assert np.abs(scores - ref_scores).max() <= 1e-4
    _assert_same_ranking(ckpt, batch, seen, ids, scores)
    # excluded items never come back while enough items remain
    for row in range(b):
        allowed = set(np.flatnonzero(seen[row] == 0)) - {0, 1}
        if len(allowed) >= K:
            assert set(ids[row].tolist()) <= allowed


def test_padding_does_not_change_the_ranking(exported) -> None:
    ckpt, ranker = exported
    batch, seen = _batch(3, 1, 6, [0])
    padded = {f: np.concatenate([np.zeros((1, 10), np.int64), v], axis=1) for f, v in batch.items()}
    a, b = ranker.rank(batch, seen), ranker.rank(padded, seen)
    assert np.abs(a[0] - b[0]).max() <= 1e-4
    assert (a[1] == b[1]).all()


def test_metadata_and_sidecars(exported) -> None:
    ckpt, ranker = exported
    assert ranker.version == "parity-1"
    assert ranker.k == K and ranker.max_len == MAX_LEN and ranker.n_items == N_ITEMS
    assert ranker.vocab.tables == ckpt.vocab.tables
    assert ranker.vocab_hash == vocab_hash(ckpt.vocab)
    assert ranker.item_embeddings.shape == (N_ITEMS, 32)
    np.testing.assert_allclose(ranker.item_embeddings,
                               ckpt.model.item_vectors().detach().numpy(), atol=1e-6)
    meta = {p.key for p in onnx.load(str(ranker.path)).metadata_props}
    assert {"model_version", "config", "vocab_hash", "max_len", "k"} <= meta
    with pytest.raises(ValueError, match="seen_mask"):
        ranker.rank(_batch(0, 1, 3, [0])[0], np.zeros((1, 5), np.float32))


def test_int8_export_stays_close(tmp_path: Path) -> None:
    ckpt = _checkpoint(item_only=True)
    fp32 = OnnxRanker(export_checkpoint(ckpt, tmp_path / "a.onnx", k=K))
    int8 = OnnxRanker(export_checkpoint(ckpt, tmp_path / "b.onnx", k=K, int8=True))
    assert sidecar(tmp_path / "b.onnx", "items.npy").exists()
    assert (tmp_path / "b.onnx").stat().st_size < (tmp_path / "a.onnx").stat().st_size
    batch, seen = _batch(1, 4, 10, [0, 2, 4, 6])
    e1, _, _ = fp32.rank(batch, seen)
    e2, _, _ = int8.rank(batch, seen)
    cos = (e1 * e2).sum(1) / np.linalg.norm(e1, axis=1) / np.linalg.norm(e2, axis=1)
    assert cos.min() > 0.9


def test_constant_facets_drop_out_of_the_graph(tmp_path: Path) -> None:
    """A model trained on SASRec data reads only ``item``; callers still pass every facet."""
    ckpt = _checkpoint(constant=FACETS[1:])
    ranker = OnnxRanker(export_checkpoint(ckpt, tmp_path / "s.onnx", k=K))
    graph_inputs = {i.name for i in ranker.session.get_inputs()}
    assert graph_inputs == {"item", "seen_mask"}
    batch, seen = _batch(5, 3, 9, [0, 3, 6])
    emb, ids, scores = ranker.rank(batch, seen)
    ref_emb, _, ref_scores = _eager(ckpt, batch, seen)
    assert np.abs(emb - ref_emb).max() <= 1e-4
    assert np.abs(scores - ref_scores).max() <= 1e-4
    _assert_same_ranking(ckpt, batch, seen, ids, scores)
