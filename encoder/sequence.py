"""SequenceHead: next-item scores from the order of a user's recent items, on top of the encoder's item texts.

The StrategyHead scores items against one pooled interest vector, which sees a history as a bag of texts. The
sequence head reads the newest ``max_events`` items in order, as SASRec does, but each item enters as the
encoder's embedding of its text (projected to ``dim``) plus a learned item vector that starts at zero, so an item
the head never trained on still has a representation from its text alone (cold start). A small causal
transformer turns the sequence into the interest at the newest event; scores are that interest against the same
item representations, plus a bias:

    rows = P · text(item) + id(item)          # (n_items, dim), the input and output item representations
    interest = Transformer(rows[history] + position)[newest]
    scores = rows · interest + b + w · similarity(newest events, item) / (1 + count(item) / k)

The last term is the text prior: the item text's cosine to the texts of the newest ``last`` events (clipped at 0,
raised to ``power``, weighted ``decay ** age``), scaled down for items seen often in training. Rare and new items
have no learned vector worth the name, and the head's projected texts rank them poorly; the raw text similarity
ranks them better (on amazon-beauty, targets with at most 2 training events: NDCG@10 0.02 from the head, 0.07
from the zero-shot text cosine). ``w`` and ``k`` are fitted on the validation split after training
(`interestbert.finetune.sequence.fit_text_prior`; ``w = 0`` is among the choices, and is the default of a head
built by hand).

Trained by `interestbert.finetune` with ``--sequence_head`` (cross-entropy of the next item at every position, as
SASRec). Saved by `ModelFolder` in the model folder's ``interestbert/sequence_head/`` as ``model.safetensors``
(weights and the item text embeddings it was built on) and ``config.json`` (options, item ids), beside the encoder
and the strategy head; the folder still loads as a plain sentence-transformers model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .hub.folder import SavedPart
from .scoring import catalogue_matrix, mask_seen

_MASKED = -1e9  # additive attention mask (a large negative rather than -inf: never a NaN)


@dataclass(frozen=True)
class SequenceOptions:
    """The shape of a sequence head (saved in ``sequence_head.json``)."""

    dim: int = 128
    layers: int = 2
    heads: int = 2
    dropout: float = 0.3
    max_events: int = 50

    def __post_init__(self):
        for name in ("dim", "layers", "heads", "max_events"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` of the sequence head should be positive, got {getattr(self, name)}.")
        if self.dim % self.heads:
            raise ValueError(f"the sequence head's `dim` ({self.dim}) should be a multiple of `heads` ({self.heads}).")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"the sequence head's `dropout` should be in [0, 1), got {self.dropout}.")


@dataclass(frozen=True)
class TextPrior:
    """The sequence head's text prior (module docstring); saved in the head's ``config.json``."""

    weight: float = 0.0
    half_count: float = 10.0
    last: int = 5
    decay: float = 0.8
    power: float = 3.0

    def __post_init__(self):
        if self.weight < 0 or self.half_count <= 0 or self.last <= 0 or not 0 < self.decay <= 1 or self.power <= 0:
            raise ValueError(
                f"the text prior needs weight >= 0, half_count > 0, last > 0, 0 < decay <= 1 and power > 0; got {self}."
            )


class _Block(nn.Module):
    """Post-norm transformer layer (self-attention, then a GELU feed-forward), as in SASRec."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, newest_only: bool = False) -> torch.Tensor:
        """``(b, n, d)``, or with ``newest_only`` ``(b, 1, d)``: the newest position alone, which still attends to
        every earlier one (the last layer of a scorer needs no other)."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (b, h, n, d/h) each
        if newest_only:
            q, mask, x, n = q[:, :, -1:], mask[:, :, -1:], x[:, -1:], 1
        p = self.drop.p if self.training else 0.0
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # mask: (b, 1, n, n_keys)
        x = self.norm1(x + self.drop(self.out(att.transpose(1, 2).reshape(b, n, d))))
        return self.norm2(x + self.drop(self.ff(x)))


class SequenceHead(SavedPart, nn.Module):
    """Scores the catalogue from the order of a user's newest items (see the module docstring).

    Args:
        item_ids: The catalogue, in row order.
        item_embeddings: ``(n_items, text_dim)`` embeddings of the item texts (the encoder's).
        popularity: Training interactions per item (the bias starts at their log, centred; the text prior scales
            down with them).
        options: Width, depth, dropout, and how many of the newest events are read.
        text_prior: The text prior's weight and shape (default: off until `fit_text_prior` sets it).

    Example:
        >>> head = SequenceHead(["a", "b", "c"], np.eye(3, dtype=np.float32), options=SequenceOptions(dim=4, heads=1))
        >>> head.eval().scores(torch.tensor([[-1, 0, 1]])).shape
        torch.Size([1, 3])
    """

    def __init__(
        self,
        item_ids: Sequence[str],
        item_embeddings,
        popularity=None,
        options: SequenceOptions | None = None,
        text_prior: TextPrior | None = None,
    ):
        super().__init__()
        opts = options or SequenceOptions()
        text = catalogue_matrix(item_ids, item_embeddings)
        self.options = opts
        self.item_ids = [str(i) for i in item_ids]
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        self.register_buffer("text", text.clone())  # (n_items, text_dim), fixed
        self.project = nn.Linear(text.shape[1], opts.dim)
        self.item = nn.Parameter(torch.zeros(len(item_ids), opts.dim))  # learned per-item part, 0 = text alone
        counts = np.zeros(len(item_ids)) if popularity is None else np.asarray(popularity, dtype=np.float64)
        bias = np.log1p(counts) - np.log1p(counts).mean()
        self.bias = nn.Parameter(torch.as_tensor(bias, dtype=torch.float32))
        self.register_buffer("counts", torch.as_tensor(counts, dtype=torch.float32))  # for the text prior
        self.text_prior = text_prior or TextPrior()
        self.position = nn.Parameter(torch.randn(opts.max_events, opts.dim) * 0.02)
        self.blocks = nn.ModuleList(_Block(opts.dim, opts.heads, opts.dropout) for _ in range(opts.layers))
        self.norm = nn.LayerNorm(opts.dim)
        self.drop = nn.Dropout(opts.dropout)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def dim(self) -> int:
        return self.options.dim

    def rows(self) -> torch.Tensor:
        """``(n_items, dim)``: each item's representation, ``P · text + id`` (input and output side). Outside
        training and autograd the result is kept until a weight changes, so scoring one history at a time (the
        live service) does not recompute the whole catalogue's rows for every answer."""
        if self.training or torch.is_grad_enabled():
            return self.project(self.text) + self.item
        return self._frozen("rows", lambda: self.project(self.text) + self.item)

    def _unit_text(self) -> torch.Tensor:
        """The item texts at unit norm (kept like `rows`)."""
        if self.training or torch.is_grad_enabled():
            return F.normalize(self.text, dim=-1)
        return self._frozen("unit", lambda: F.normalize(self.text, dim=-1))

    def _frozen(self, name: str, compute) -> torch.Tensor:
        tensors = (self.text, self.item, self.project.weight, self.project.bias)
        version = tuple((id(t), t._version) for t in tensors)  # `_version` counts in-place changes
        cache = self.__dict__.setdefault("_frozen_cache", {})
        if name not in cache or cache[name][0] != version:
            cache[name] = (version, compute())
        return cache[name][1]

    def hidden(
        self, histories: torch.Tensor, rows: torch.Tensor | None = None, newest_only: bool = False
    ) -> torch.Tensor:
        """``(batch, max_events, dim)`` interest after every position of right-aligned ``histories`` (``(batch,
        max_events)`` catalogue rows, -1 for padding on the left); with ``newest_only`` ``(batch, 1, dim)``, the
        newest position's alone (the last layer computes no other)."""
        rows = self.rows() if rows is None else rows
        pad = histories < 0
        n = histories.shape[1]
        if n > self.options.max_events:
            raise ValueError(
                f"histories of {n} positions are longer than the head's max_events "
                f"({self.options.max_events}); keep the newest {self.options.max_events}."
            )
        if not self.training and n > 1:
            # columns of padding in every row change no real position's output (padding is masked as a key, and the
            # positions are right-aligned): a short history costs its own length, not max_events
            filled = int((~pad).any(0).nonzero()[0, 0]) if bool((~pad).any()) else n - 1
            if filled:
                out = self.hidden(histories[:, filled:], rows, newest_only)
                if newest_only:
                    return out
                return torch.cat([out.new_zeros(out.shape[0], filled, out.shape[2]), out], dim=1)
        x = rows[histories.clamp(min=0)] * (~pad).unsqueeze(-1) + self.position[-n:]
        x = self.drop(self.norm(x))
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=x.device), 1)
        own = torch.eye(n, dtype=torch.bool, device=x.device)  # padding attends to itself: no row is all masked
        mask = torch.zeros(pad.shape[0], 1, n, n, device=x.device, dtype=x.dtype)
        mask = mask.masked_fill((causal | pad[:, None, None, :]) & ~own, _MASKED)
        for k, block in enumerate(self.blocks):
            x = block(x, mask, newest_only=newest_only and k == len(self.blocks) - 1)
        return x

    def forward(self, histories: torch.Tensor) -> torch.Tensor:
        """``(batch, dim)``: the interest at the newest event of each history."""
        return self.hidden(histories, newest_only=True)[:, -1]

    def logits(self, interest: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        rows = self.rows() if rows is None else rows
        return interest @ rows.T + self.bias  # (batch, n_items)

    def scores(self, histories: torch.Tensor) -> torch.Tensor:
        """``(batch, n_items)`` next-item scores of right-aligned histories (the text prior included)."""
        rows = self.rows()
        scores = self.logits(self.hidden(histories, rows, newest_only=True)[:, -1], rows)
        if self.text_prior.weight > 0:
            scores = scores + self.text_prior.weight * self.prior_term(histories)
        return scores

    def text_similarity(self, histories: torch.Tensor) -> torch.Tensor:
        """``(batch, n_items)``: each item text's cosine to the texts of the newest ``text_prior.last`` events of
        right-aligned ``histories``, clipped at 0, raised to ``power`` and averaged with weights ``decay ** age``
        (0 for an empty history)."""
        prior = self.text_prior
        recent = histories[:, -prior.last :]
        unit = self._unit_text()
        out = torch.zeros(len(histories), self.n_items, device=unit.device)
        total = torch.zeros(len(histories), 1, device=unit.device)
        for age, column in enumerate(recent.unbind(1)[::-1]):  # newest first; one (batch, n_items) at a time
            weight = (prior.decay**age) * (column >= 0).float().unsqueeze(1)
            out += weight * (unit[column.clamp(min=0)] @ unit.T).clamp(min=0) ** prior.power
            total += weight
        return out / total.clamp(min=1e-12)

    def prior_term(self, histories: torch.Tensor, similarity: torch.Tensor | None = None) -> torch.Tensor:
        """``(batch, n_items)``: the text prior before its weight, the similarity scaled by
        ``1 / (1 + count / half_count)`` (``similarity``: `text_similarity` of ``histories`` computed ahead)."""
        similarity = self.text_similarity(histories) if similarity is None else similarity
        return similarity / (1 + self.counts / self.text_prior.half_count)

    @torch.no_grad()
    def topk(self, histories: torch.Tensor, k: int = 10, exclude: Sequence[Sequence[int]] | None = None):
        """The ``k`` best items for each history, skipping ``exclude[row]`` (e.g. items already seen)."""
        scores = self.scores(torch.as_tensor(histories, device=self.text.device))
        if exclude is not None:
            mask_seen(scores, exclude)
        return torch.topk(scores, k=min(k, self.n_items), dim=-1)

    def histories(self, verbaliser, users: Sequence[int], ends: Sequence[int]) -> torch.Tensor:
        """``(len(users), max_events)`` right-aligned catalogue rows of each user's first ``ends[i]`` events (their
        newest ``max_events``), -1 padding. ``users`` are positions in ``verbaliser.users``; the verbaliser's
        catalogue must be the head's (see `add_items` for new items)."""
        rows = _catalogue_rows(self, verbaliser)
        return right_aligned(rows[verbaliser.event_items], verbaliser.offsets, users, ends, self.options.max_events)

    def add_items(self, item_ids: Sequence[str], item_embeddings) -> None:
        """Cold start: new items represented by their text alone (no learned part), with the median bias and no
        training count (the text prior's full weight)."""
        new = [str(i) for i in item_ids]
        clash = [i for i in new if i in self.index]
        if clash:
            raise ValueError(f"items {clash[:5]} are already in the sequence head; pass only new items.")
        text = torch.as_tensor(np.asarray(item_embeddings, dtype=np.float32), device=self.text.device)
        if text.shape != (len(new), self.text.shape[1]):
            raise ValueError(
                f"`item_embeddings` should be ({len(new)}, {self.text.shape[1]}), got {tuple(text.shape)}."
            )
        with torch.no_grad():
            self.text = torch.cat([self.text, text])
            self.item = nn.Parameter(torch.cat([self.item.data, self.item.data.new_zeros(len(new), self.dim)]))
            self.bias = nn.Parameter(torch.cat([self.bias.data, self.bias.data.median().repeat(len(new))]))
            self.counts = torch.cat([self.counts, self.counts.new_zeros(len(new))])
        self.index.update({item: len(self.item_ids) + j for j, item in enumerate(new)})
        self.item_ids += new

    def to_parts(self) -> tuple[dict, dict]:
        """``(tensors, config)``: what `ModelFolder` saves (every weight, the item text embeddings and training
        counts; options, text prior and item ids)."""
        return (
            dict(self.state_dict()),
            {
                "options": asdict(self.options),
                "text_prior": asdict(self.text_prior),
                "item_ids": self.item_ids,
                "text_dim": int(self.text.shape[1]),
            },
        )

    @classmethod
    def from_parts(cls, tensors: dict, config: dict, source: str = "the sequence head") -> SequenceHead:
        n, text_dim = len(config["item_ids"]), config["text_dim"]
        if tuple(tensors["text"].shape) != (n, text_dim):
            raise ValueError(
                f"{source} holds item texts of shape {tuple(tensors['text'].shape)} but its config "
                f"lists {n} items of dim {text_dim}; save the model again."
            )
        head = cls(
            config["item_ids"],
            np.zeros((n, text_dim), np.float32),
            options=SequenceOptions(**config["options"]),
            text_prior=TextPrior(**config["text_prior"]),
        )
        head.load_state_dict(tensors)
        return head.eval()  # ready to score: no dropout (call .train() to train it further)


def right_aligned(
    rows: np.ndarray, offsets: np.ndarray, users: Sequence[int], ends: Sequence[int], length: int
) -> torch.Tensor:
    """``(len(users), length)``: ``rows[offsets[u] : offsets[u] + end]`` cut to its last ``length`` entries, padded
    with -1 on the left (vectorised: one gather, no per-user Python loop)."""
    users = np.asarray(users, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    stop = offsets[users] + ends  # (batch,) one past each history's newest event
    index = stop[:, None] - length + np.arange(length)[None, :]  # (batch, length)
    valid = index >= (offsets[users])[:, None]
    out = np.where(valid, rows[np.clip(index, 0, max(len(rows) - 1, 0))], -1)
    return torch.as_tensor(out, dtype=torch.long)


def _catalogue_rows(head: SequenceHead, verbaliser) -> np.ndarray:
    """The head's row of each of the verbaliser's catalogue items (the same order when the catalogues match)."""
    if verbaliser.item_ids == head.item_ids:
        return np.arange(len(head.item_ids), dtype=np.int64)
    missing = [i for i in verbaliser.item_ids if i not in head.index]
    if missing:
        raise ValueError(
            f"{len(missing)} items of the data are not in the sequence head (first: {missing[0]}); "
            "add them with add_items(ids, text_embeddings)."
        )
    return np.asarray([head.index[i] for i in verbaliser.item_ids], dtype=np.int64)


def sequence_loss(head: SequenceHead, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the next item at every non-padded position (``targets`` -1 where padded)."""
    rows = head.rows()
    hidden = head.hidden(inputs, rows)
    keep = targets >= 0
    return F.cross_entropy(head.logits(hidden[keep], rows), targets[keep])
