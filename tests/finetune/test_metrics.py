"""RankingMetrics: HR, NDCG and MRR at k from ranks, against rankings computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interestbert.finetune.metrics import RankingMetrics, target_ranks


def test_metrics_against_hand_computed_rankings():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.5, 0.3],  # target 2: one item above -> rank 1
            [0.2, 0.2, 0.2, 0.2],  # target 3: all tied, ties by index -> rank 3
            [0.0, 0.4, float("-inf"), 0.1],  # target 1: top -> rank 0
        ]
    )
    targets = torch.tensor([2, 3, 1])
    assert target_ranks(scores, targets).tolist() == [1, 3, 0]
    m = RankingMetrics(ks=(1, 2))
    m.update(scores[:2], targets[:2])
    m.update(scores[2:], targets[2:])
    out = m.compute()
    assert out["n"] == 3
    assert out["hr@1"] == pytest.approx(1 / 3) and out["hr@2"] == pytest.approx(2 / 3)
    assert out["ndcg@2"] == pytest.approx((1 / np.log2(3) + 1) / 3)
    assert out["mrr@2"] == pytest.approx((1 / 2 + 1) / 3)
    with pytest.raises(ValueError):
        RankingMetrics(ks=(0,))


def test_metrics_of_ranks_equal_the_streamed_update():
    ranks = np.array([0, 4, 9, 10, 25, 1])
    streamed = RankingMetrics(ks=(10, 20))
    streamed.update_ranks(ranks[:2])
    streamed.update_ranks(ranks[2:])
    assert RankingMetrics.of(ranks, (10, 20)) == streamed.compute()
    assert RankingMetrics.of(ranks, (10,))["hr@10"] == pytest.approx(4 / 6)  # ranks 0, 4, 9 and 1 are in the top 10
