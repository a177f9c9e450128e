"""Full-ranking metrics as objects with `update()` / `compute()`, like RecBole's and torchmetrics'.

A target's rank is `interestbert.encoder.scoring.target_ranks`: the number of items scored above it, plus the
tied items with a smaller index (ties broken by catalogue order, deterministically). Already-seen items are
excluded by the caller (score -inf) before `update`; the evaluation (`interestbert.finetune.evaluate`) feeds the
ranks of a `Scorer` through `update_ranks`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from interestbert.encoder.scoring import target_ranks


class RankingMetrics:
    """HR@k, NDCG@k and MRR@k of one held-out item per user.

    Args:
        ks: Cut-offs (default ``(10,)``).

    Example:
        >>> m = RankingMetrics(ks=(1, 10))
        >>> m.update(torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]]), torch.tensor([2, 0]))
        >>> {k: round(v, 3) for k, v in m.compute().items()}
        {'hr@1': 0.5, 'ndcg@1': 0.5, 'mrr@1': 0.5, 'hr@10': 1.0, 'ndcg@10': 0.815, 'mrr@10': 0.75, 'n': 2}
    """

    def __init__(self, ks: Sequence[int] = (10,)):
        if not ks or any(int(k) <= 0 for k in ks):
            raise ValueError(f"`ks` should be positive cut-offs, got {ks!r}.")
        self.ks = tuple(sorted({int(k) for k in ks}))
        self._ranks: list[np.ndarray] = []

    @classmethod
    def of(cls, ranks, ks: Sequence[int] = (10,)) -> dict[str, float]:
        """The metrics of precomputed 0-based ranks (a subset of users, a peer's ranks)."""
        metrics = cls(ks)
        metrics.update_ranks(ranks)
        return metrics.compute()

    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        """Adds a batch: ``scores`` ``(batch, n_items)``, ``targets`` ``(batch,)`` item indices."""
        self.update_ranks(target_ranks(scores, targets.to(scores.device)))

    def update_ranks(self, ranks: torch.Tensor | np.ndarray) -> None:
        """Adds precomputed 0-based ranks (e.g. gathered from several processes)."""
        self._ranks.append(np.asarray(ranks.cpu() if isinstance(ranks, torch.Tensor) else ranks, dtype=np.int64))

    def reset(self) -> None:
        self._ranks = []

    @property
    def ranks(self) -> np.ndarray:
        return np.concatenate(self._ranks) if self._ranks else np.zeros(0, dtype=np.int64)

    def compute(self) -> dict[str, float]:
        ranks = self.ranks
        out: dict[str, float] = {}
        for k in self.ks:
            hit = ranks < k
            out[f"hr@{k}"] = float(hit.mean()) if len(ranks) else 0.0
            out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()) if len(ranks) else 0.0
            out[f"mrr@{k}"] = float(np.where(hit, 1.0 / (ranks + 1.0), 0.0).mean()) if len(ranks) else 0.0
        out["n"] = int(len(ranks))
        return out
