"""The fused full-softmax cross-entropy equals autograd's; the multi-token blend of the query."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.model import FoundationModel, ModelConfig, full_softmax_ce


@pytest.mark.parametrize("chunk", [7, 64, None])
def test_full_softmax_ce_matches_cross_entropy(chunk: int | None) -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(50, 8, generator=gen, requires_grad=True)
    items = torch.randn(300, 8, generator=gen, requires_grad=True)
    target = torch.randint(2, 300, (50,), generator=gen)
    weight = torch.rand(50, generator=gen)
    loss = full_softmax_ce(x * 2, items, target, weight, chunk=chunk)  # non-leaf input
    (loss * 3).backward()
    got = (x.grad.clone(), items.grad.clone())
    x.grad = items.grad = None
    ref = (F.cross_entropy((x * 2) @ items.T, target, reduction="none") * weight).sum()
    ref = ref / weight.sum()
    (ref * 3).backward()
    assert torch.allclose(loss, ref, atol=1e-5)
    assert torch.allclose(got[0], x.grad, atol=1e-5)
    assert torch.allclose(got[1], items.grad, atol=1e-5)
    with torch.no_grad():  # evaluation path: plain cross-entropy, no gradients kept
        assert torch.allclose(full_softmax_ce(x * 2, items, target, weight), ref, atol=1e-5)


def test_mtp_blend_adds_each_heads_state_to_the_query() -> None:
    torch.manual_seed(0)
    model = FoundationModel(ModelConfig(n_items=30, max_len=6, d_model=8, mtp_k=3)).eval()
    tokens = {f: torch.randint(1, 3, (2, 5)) for f in ("action", "gap", "hour", "dow", "device",
                                                        "surface", "duration")}
    tokens["item"] = torch.randint(2, 30, (2, 5))
    with torch.no_grad():
        h = model(tokens)[:, -1]
        assert torch.equal(model.user_embedding(tokens), h)  # blend 0: next-item state only
        model.cfg.mtp_blend = 0.5
        want = h + 0.5 * (model.mtp_proj[0](h) + model.mtp_proj[1](h))
        assert torch.allclose(model.user_embedding(tokens), want, atol=1e-6)
        scores = model.score(tokens, torch.zeros(2, 30))
        assert torch.allclose(scores[:, 2:], want @ model.item_vectors()[2:].T, atol=1e-5)


def test_detached_multi_token_heads_do_not_steer_the_trunk() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(n_items=30, max_len=6, d_model=8, mtp_k=2, mtp_detach=True, w_item=0.0,
                      w_action=0.0, w_duration=0.0)
    model = FoundationModel(cfg)
    tokens = {f: torch.randint(1, 3, (2, 5)) for f in ("action", "gap", "hour", "dow", "device",
                                                        "surface", "duration")}
    tokens["item"] = torch.randint(2, 30, (2, 5))
    targets = {"item": torch.randint(2, 30, (2, 5)), "mtp": torch.randint(2, 30, (2, 5, 1)),
               "action": torch.randint(1, 3, (2, 5)), "duration": torch.randint(1, 3, (2, 5)),
               "weight": torch.ones(2, 5)}
    model.losses(tokens, targets)["loss"].backward()
    assert model.mtp_proj[0].weight.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        if not name.startswith("mtp_proj"):
            assert p.grad is None or not p.grad.any(), name
    model.zero_grad()
    model.cfg.mtp_detach = False  # heads that steer: the look-ahead also trains the trunk
    model.losses(tokens, targets)["loss"].backward()
    assert model.item_emb.weight.grad.abs().sum() > 0


def test_shared_multi_token_targets_score_the_next_item_query() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(n_items=30, max_len=6, d_model=8, mtp_k=3, mtp_shared=True,
                      mtp_detach=False, w_item=0.0,
                      w_action=0.0, w_duration=0.0, w_mtp=1.0, mtp_negatives=0)
    model = FoundationModel(cfg).eval()
    assert not any(p.numel() for p in model.mtp_proj.parameters())  # no projection
    tokens = {f: torch.randint(1, 3, (2, 5)) for f in ("action", "gap", "hour", "dow", "device",
                                                        "surface", "duration")}
    tokens["item"] = torch.randint(2, 30, (2, 5))
    mtp = torch.randint(2, 30, (2, 5, 2))
    targets = {"item": torch.randint(2, 30, (2, 5)), "mtp": mtp,
               "action": torch.randint(1, 3, (2, 5)), "duration": torch.randint(1, 3, (2, 5)),
               "weight": torch.ones(2, 5)}
    with torch.no_grad():
        out = model.losses(tokens, targets)
        logits = model(tokens) @ model.item_vectors().T  # [2, 5, 30]: the next-item scores
        for j in range(2):
            want = F.cross_entropy(logits.reshape(-1, 30), mtp[..., j].reshape(-1))
            assert torch.allclose(out[f"mtp{j + 2}"], want, atol=1e-5)
        model.cfg.mtp_blend = 2.0  # a blend only scales a shared query: not applied
        assert torch.equal(model.user_embedding(tokens), model(tokens)[:, -1])
    with pytest.raises(ValueError, match="mtp_shared with mtp_detach"):
        ModelConfig(n_items=30, mtp_shared=True, mtp_detach=True)


def test_id_dropout_hides_ids_in_training_only() -> None:
    torch.manual_seed(0)
    model = FoundationModel(ModelConfig(n_items=400, d_model=8, id_dropout=0.25))
    with torch.no_grad():
        model.item_emb.weight.add_(1.0)  # every id part non-zero
        tower = model.tower(model.item_meta)
        tower_only = (model.item_vectors() - tower).abs().sum(1) == 0  # id part dropped
        assert 0.1 < tower_only[2:].float().mean() < 0.4
        assert not ((model.eval().item_vectors() - tower).abs().sum(1) == 0)[2:].any()
        item_only = FoundationModel(ModelConfig(n_items=400, d_model=8, item_only=True))
        assert (item_only.item_vectors()[2:] != 0).all(1).all()  # no tower: ids always kept
    with pytest.raises(ValueError, match="id_dropout"):
        ModelConfig(n_items=400, id_dropout=1.0)  # every id hidden: nothing learns the ids


def test_constant_facets_get_no_embedding_and_no_head() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(n_items=30, max_len=6, d_model=8, mtp_k=2,
                      constant_facets=("action", "gap", "duration"))
    model = FoundationModel(cfg)
    assert cfg.facets == ("item", "hour", "dow", "device", "surface")
    assert set(model.facet_emb) == set(cfg.facets[1:])
    assert model.action_head is None and model.duration_head is None
    tokens = {f: torch.randint(1, 3, (2, 5)) for f in ("action", "gap", "hour", "dow", "device",
                                                        "surface", "duration")}
    tokens["item"] = torch.randint(2, 30, (2, 5))
    targets = {"item": torch.randint(2, 30, (2, 5)), "mtp": torch.randint(2, 30, (2, 5, 1)),
               "action": torch.randint(1, 3, (2, 5)), "duration": torch.randint(1, 3, (2, 5)),
               "weight": torch.ones(2, 5)}
    assert set(model.losses(tokens, targets)) == {"item", "mtp2", "loss"}
    with torch.no_grad():  # what a constant facet holds does not change the output
        model.eval()
        before = model(tokens)
        tokens["gap"] = torch.randint(1, 9, (2, 5))
        assert torch.equal(model(tokens), before)
    with pytest.raises(ValueError, match="only context facets"):
        ModelConfig(n_items=30, constant_facets=("item",))
