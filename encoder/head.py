"""StrategyHead: the item-scoring layer ``scores = A · interest + b'`` over the catalogue.

``A`` has one row per item, initialised from the encoder's embedding of the item's text (times ``init_scale``, so
that the logits of unit vectors have a useful spread); ``b'`` starts at the log popularity of each item in the
training data. Both are trained with the encoder. An item the head has never seen gets a row from its text alone
(`add_items`), the same way the catalogue was initialised. Saved by `ModelFolder` in the model folder's
``interestbert/strategy_head/`` as ``model.safetensors`` (``A``, ``b'``) and ``config.json`` (item ids, options).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .hub.folder import SavedPart
from .scoring import catalogue_matrix, mask_seen


class StrategyHead(SavedPart, nn.Module):
    """``softmax(A · interest + b')`` over a catalogue.

    Args:
        item_ids: The catalogue, in row order.
        item_embeddings: ``(n_items, dim)`` unit-norm text embeddings of the items.
        popularity: Training interactions per item (``b'`` starts at their log, smoothed by +1).
        init_scale: ``A`` starts as ``init_scale`` times the text embeddings.

    Example:
        >>> head = StrategyHead(["a", "b"], np.eye(2, dtype=np.float32), popularity=[10, 1])
        >>> head.topk(torch.tensor([[0.0, 1.0]]), k=1).indices.tolist()
        [[1]]
    """

    def __init__(self, item_ids: Sequence[str], item_embeddings, popularity=None, init_scale: float = 20.0):
        super().__init__()
        emb = catalogue_matrix(item_ids, item_embeddings)
        if init_scale <= 0:
            raise ValueError(f"`init_scale` should be positive, got {init_scale}.")
        self.item_ids = [str(i) for i in item_ids]
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        self.init_scale = float(init_scale)
        self.weight = nn.Parameter(emb * self.init_scale)  # A: (n_items, dim)
        counts = np.zeros(len(item_ids)) if popularity is None else np.asarray(popularity, dtype=np.float64)
        bias = np.log1p(counts) - np.log1p(counts).mean()
        self.bias = nn.Parameter(torch.as_tensor(bias, dtype=torch.float32))  # b': (n_items,)

    @property
    def n_items(self) -> int:
        return self.weight.shape[0]

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def forward(self, interest: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``A · interest + b'``: ``(batch, n_items)``, or ``(batch, len(items))`` for a subset of rows."""
        weight, bias = (self.weight, self.bias) if items is None else (self.weight[items], self.bias[items])
        return interest @ weight.T + bias  # (batch, n_items | n_subset)

    @torch.no_grad()
    def topk(self, interest: torch.Tensor, k: int = 10, exclude: Sequence[Sequence[int]] | None = None):
        """The ``k`` best items per row of ``interest`` (``(batch, dim)``), skipping ``exclude[row]`` (row indices,
        e.g. items already seen). Returns `torch.return_types.topk` (``values``, ``indices``)."""
        scores = self.forward(torch.as_tensor(interest, dtype=self.weight.dtype, device=self.weight.device))
        if exclude is not None:
            mask_seen(scores, exclude)
        return torch.topk(scores, k=min(k, self.n_items), dim=-1)

    def add_items(self, item_ids: Sequence[str], item_embeddings) -> None:
        """Cold start: rows for new items from their text embeddings alone (``init_scale`` · text), with the
        median bias of the catalogue, so they compete on content rather than on popularity they never had."""
        new = [str(i) for i in item_ids]
        clash = [i for i in new if i in self.index]
        if clash:
            raise ValueError(f"items {clash[:5]} are already in the head; pass only new items.")
        emb = torch.as_tensor(np.asarray(item_embeddings, dtype=np.float32), device=self.weight.device)
        if emb.shape != (len(new), self.dim):
            raise ValueError(f"`item_embeddings` should be ({len(new)}, {self.dim}), got {tuple(emb.shape)}.")
        with torch.no_grad():
            rows = torch.cat([self.weight.data, emb * self.init_scale])
            bias = torch.cat([self.bias.data, self.bias.data.median().repeat(len(new))])
        self.weight = nn.Parameter(rows)
        self.bias = nn.Parameter(bias)
        self.item_ids += new
        self.index.update({item: len(self.index) + j for j, item in enumerate(new)})

    def to_parts(self) -> tuple[dict, dict]:
        """``(tensors, config)``: what `ModelFolder` saves (``A``, ``b'``; item ids and options)."""
        return (
            {"weight": self.weight.detach(), "bias": self.bias.detach()},
            {"item_ids": self.item_ids, "init_scale": self.init_scale, "dim": self.dim, "n_items": self.n_items},
        )

    @classmethod
    def from_parts(cls, tensors: dict, config: dict, source: str = "the strategy head") -> StrategyHead:
        if tuple(tensors["weight"].shape) != (len(config["item_ids"]), config["dim"]):
            raise ValueError(
                f"{source} holds weights of shape {tuple(tensors['weight'].shape)} but its config lists "
                f"{len(config['item_ids'])} items of dim {config['dim']}; save the model again."
            )
        head = cls(
            config["item_ids"],
            np.zeros((len(config["item_ids"]), config["dim"]), np.float32),
            init_scale=config["init_scale"],
        )
        with torch.no_grad():
            head.weight.copy_(tensors["weight"])
            head.bias.copy_(tensors["bias"])
        return head
