"""Pure logic of models/evaluate.py: metrics from ranks and the paired comparison."""

from __future__ import annotations

import numpy as np
import pytest

from models.evaluate import metrics_from_ranks, paired_difference


def test_metrics_from_ranks() -> None:
    ranks = np.array([0, 9, 10, 49, 50, 1000])
    m = metrics_from_ranks(ranks, cold=np.array([1, 0, 0, 0, 0, 1], bool))
    assert m["hr@10"] == round(2 / 6, 5) and m["hr@50"] == round(4 / 6, 5)
    ndcg10 = (1 / np.log2(2) + 1 / np.log2(11)) / 6
    assert m["ndcg@10"] == round(ndcg10, 5)
    assert m["cold_users"] == 2 and m["cold_recall@10"] == 0.5


def test_paired_difference_of_a_model_with_itself_is_zero() -> None:
    ranks = np.random.default_rng(0).integers(0, 200, 500)
    for lead in paired_difference(ranks, ranks, resamples=200).values():
        assert lead == {"diff": 0.0, "ci95": [0.0, 0.0]}


def test_paired_difference_tells_a_real_lead_from_luck() -> None:
    rng = np.random.default_rng(1)
    baseline = rng.integers(0, 100, 4000)
    better = np.maximum(baseline - 8, 0)  # every user's target a few places higher
    lead = paired_difference(better, baseline, resamples=500)["hr@10"]
    low, high = lead["ci95"]
    assert lead["diff"] > 0 and 0 < low <= lead["diff"] <= high
    # two models of the same quality that disagree user by user: the interval holds 0
    other = rng.permutation(baseline)
    low, high = paired_difference(other, baseline, resamples=500)["ndcg@10"]["ci95"]
    assert low < 0 < high


def test_paired_difference_needs_the_same_users() -> None:
    with pytest.raises(ValueError, match="same users"):
        paired_difference(np.zeros(3), np.zeros(4))
