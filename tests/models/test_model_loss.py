"""The fused full-softmax cross-entropy equals autograd's, value and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.model import full_softmax_ce


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
