"""Scoring the catalogue: one interface for everything that ranks items for a user's history.

A `Scorer` is bound to a `Verbaliser` (the events and the catalogue) and scores every item for the first ``end``
events of a user's history. Four kinds exist:

- `StrategyHeadScorer`: the strategy head's ``A · interest + b'`` on the encoder's interest vector;
- `TextCosineScorer`: the cosine of the interest vector to each item text's embedding (zero-shot, no head);
- `SequenceHeadScorer`: the sequence head reading the order of the newest events;
- `PopularityScorer`: interaction counts, the same for every user (the baseline).

Each has one chunked `Scorer.rank` (the target's 0-based rank among all items, the user's seen items masked but
the target kept, so a repeat purchase still counts) and one `Scorer.topk` (the best items, seen items excluded).
Evaluation, ``recommend``, the quickstart and the benchmarks all go through them. `scorer_for` picks the right
one for a model.

Ranks break ties by catalogue order (`target_ranks`), never in the target's favour by accident of sorting.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .backends import EncodeOptions

CHUNK = 256  # histories scored at once: (CHUNK, n_items) floats
SCORER_KINDS = ("auto", "sequence", "strategy", "text")


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of ``targets[i]`` in ``scores[i]`` (``(batch, n_items)``, higher is better): ``(batch,)``.

    The rank counts the items scored above the target plus the tied items with a smaller catalogue index."""
    target_scores = scores.gather(1, targets[:, None])  # (batch, 1)
    above = (scores > target_scores).sum(dim=1)
    index = torch.arange(scores.shape[1], device=scores.device)[None, :]  # (1, n_items)
    tied_before = ((scores == target_scores) & (index < targets[:, None])).sum(dim=1)
    return above + tied_before


def catalogue_matrix(item_ids: Sequence[str], item_embeddings) -> torch.Tensor:
    """``(n_items, dim)`` float32 rows, one per item of a head's catalogue, checked: the shape matches the ids,
    the ids are unique."""
    rows = torch.as_tensor(np.asarray(item_embeddings, dtype=np.float32))
    if rows.ndim != 2 or rows.shape[0] != len(item_ids):
        raise ValueError(f"`item_embeddings` should be (n_items={len(item_ids)}, dim), got {tuple(rows.shape)}.")
    if len(set(item_ids)) != len(item_ids):
        raise ValueError("`item_ids` should be unique.")
    return rows


def mask_seen(scores: torch.Tensor, exclude: Sequence[Sequence[int]]) -> torch.Tensor:
    """Sets ``scores[row, exclude[row]]`` to -inf in place (the user's already-seen items)."""
    rows = [r for r, items in enumerate(exclude) for _ in items]
    cols = [c for items in exclude for c in items]
    if cols:
        scores[torch.tensor(rows, device=scores.device), torch.tensor(cols, device=scores.device)] = float("-inf")
    return scores


def seen_rows(
    verbaliser, users: Sequence[int], ends: Sequence[int] | None = None, keep: Sequence[int] | None = None
) -> list[np.ndarray]:
    """For each user, the catalogue rows of the items among their first ``ends[i]`` events (default: all), minus
    ``keep[i]`` (an evaluation's target, so that a repeat purchase is not masked away)."""
    users = np.asarray(users, dtype=np.int64)
    ends = verbaliser.n_events[users] if ends is None else np.asarray(ends, dtype=np.int64)
    starts = verbaliser.offsets[users]
    out = []
    for i, (start, end) in enumerate(zip(starts.tolist(), ends.tolist())):
        history = np.unique(verbaliser.event_items[start : start + end])
        out.append(history if keep is None else history[history != keep[i]])
    return out


class Scorer:
    """Scores the whole catalogue for user histories (see the module docstring).

    Subclasses implement `_scores`; `rank` and `topk` are shared.

    Args:
        verbaliser: The events and the catalogue the scores are over (its ``item_ids`` are the columns).
    """

    name = "scorer"

    def __init__(self, verbaliser):
        self.verbaliser = verbaliser

    @property
    def n_items(self) -> int:
        return len(self.verbaliser.item_ids)

    def bind(self, verbaliser) -> Scorer:
        """This scorer (its head, encoder and item vectors shared, not copied) over another verbaliser with the same
        catalogue, e.g. one person's history (`Verbaliser.for_history`)."""
        bound = copy.copy(self)
        bound.verbaliser = verbaliser
        return bound

    def _scores(self, users: np.ndarray, ends: np.ndarray, rows: slice, **inputs) -> torch.Tensor:
        """``(len(users), n_items)`` scores of ``users``' first ``ends`` events; ``rows`` is their position in the
        caller's arrays (for inputs computed ahead, such as interest vectors)."""
        raise NotImplementedError

    @torch.no_grad()
    def scores(self, users: Sequence[int], ends: Sequence[int] | None = None, **inputs) -> torch.Tensor:
        """``(len(users), n_items)`` scores (nothing masked) of each user's first ``ends[i]`` events (default:
        the whole history)."""
        users, ends = self._users_and_ends(users, ends)
        return self._scores(users, ends, slice(0, len(users)), **inputs)

    @torch.no_grad()
    def rank(
        self,
        users: Sequence[int],
        ends: Sequence[int],
        targets: Sequence[int],
        *,
        show_progress_bar: bool = False,
        **inputs,
    ) -> np.ndarray:
        """0-based rank of each ``targets[i]`` (a catalogue row) among all items for the history of user
        ``users[i]`` up to (not including) event ``ends[i]``; the user's seen items are masked, the target is not.

        Args:
            users: Positions in ``verbaliser.users``.
            ends: History lengths; the target is the event at position ``ends[i]``.
            targets: Catalogue rows of the held-out items.
            show_progress_bar: A bar over chunks of `CHUNK` histories.
            inputs: Inputs computed ahead, one row per history (``interest=`` for the interest scorers).
        """
        users, ends = self._users_and_ends(users, ends)
        targets = np.asarray(targets, dtype=np.int64)
        out = []
        for lo in tqdm(
            range(0, len(users), CHUNK), desc=f"rank ({self.name})", disable=not show_progress_bar, leave=False
        ):
            rows = slice(lo, lo + CHUNK)
            scores = self._scores(users[rows], ends[rows], rows, **inputs)  # (chunk, n_items)
            mask_seen(scores, seen_rows(self.verbaliser, users[rows], ends[rows], keep=targets[rows]))
            out.append(target_ranks(scores, torch.as_tensor(targets[rows], device=scores.device)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def rank_examples(self, examples, **kwargs) -> np.ndarray:
        """`rank` of an object with ``users``, ``ends`` and ``targets`` arrays (`interestbert.finetune.data`'s
        ``Examples``)."""
        return self.rank(examples.users, examples.ends, examples.targets, **kwargs)

    @torch.no_grad()
    def topk(
        self,
        users: Sequence[int],
        k: int = 10,
        ends: Sequence[int] | None = None,
        *,
        show_progress_bar: bool = False,
        **inputs,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best catalogue rows per user and their scores, ``(len(users), k)`` each, best first, for each
        user's first ``ends[i]`` events (default: the whole history); every item the history holds is excluded."""
        if k <= 0:
            raise ValueError(f"`k` should be a positive integer, got {k}.")
        users, ends = self._users_and_ends(users, ends)
        top_items, top_scores = [], []
        for lo in tqdm(
            range(0, len(users), CHUNK), desc=f"top-{k} ({self.name})", disable=not show_progress_bar, leave=False
        ):
            rows = slice(lo, lo + CHUNK)
            scores = self._scores(users[rows], ends[rows], rows, **inputs).float().cpu()
            mask_seen(scores, seen_rows(self.verbaliser, users[rows], ends[rows]))
            value, index = torch.topk(scores, min(k, scores.shape[1]), dim=1)
            top_items.append(index.numpy())
            top_scores.append(value.numpy())
        if not top_items:
            return np.zeros((0, min(k, self.n_items)), np.int64), np.zeros((0, min(k, self.n_items)), np.float32)
        return np.concatenate(top_items), np.concatenate(top_scores)

    def _users_and_ends(self, users, ends) -> tuple[np.ndarray, np.ndarray]:
        users = np.asarray(users, dtype=np.int64)
        ends = self.verbaliser.n_events[users] if ends is None else np.asarray(ends, dtype=np.int64)
        if ends.shape != users.shape:
            raise ValueError(f"`ends` should have one entry per user ({len(users)}), got {ends.shape}.")
        return users, ends

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n_items={self.n_items})"


class InterestScorer(Scorer):
    """A scorer of the encoder's interest vector (`InterestEncoder.encode_histories`); `score_interest` maps
    ``(n, dim)`` vectors to ``(n, n_items)`` scores. `rank` and `topk` take ``interest=`` vectors computed ahead
    (a drift-aware blend, a warm-up's fixed vectors) instead of encoding the histories. ``options`` (or
    ``batch_size``, ``precision`` and ``backend``) say how the histories are encoded (`EncodeOptions`; fp32 torch by
    default, the model's own numbers)."""

    def __init__(
        self,
        verbaliser,
        encoder=None,
        batch_size: int = 64,
        precision: str = "fp32",
        backend: str = "torch",
        options: EncodeOptions | None = None,
    ):
        super().__init__(verbaliser)
        self.encoder = encoder
        self.options = options or EncodeOptions(precision, backend, batch_size)

    @property
    def batch_size(self) -> int:
        return self.options.batch_size

    def score_interest(self, interest) -> torch.Tensor:
        raise NotImplementedError

    def _scores(self, users, ends, rows, interest=None) -> torch.Tensor:
        if interest is None:
            if self.encoder is None:
                raise ValueError(f"{type(self).__name__} has no encoder: pass `interest=` vectors.")
            was_training = self.encoder.model.training
            interest = self.encoder.encode_histories(
                self.verbaliser, users, ends, show_progress_bar=False, options=self.options
            )
            self.encoder.model.train(was_training)
        else:
            interest = interest[rows]
        return self.score_interest(interest)


class StrategyHeadScorer(InterestScorer):
    """``A · interest + b'``: the strategy head's logits (`interestbert.encoder.head.StrategyHead`)."""

    name = "strategy head"

    def __init__(self, head, verbaliser, encoder=None, batch_size: int = 64, **options):
        super().__init__(verbaliser, encoder, batch_size, **options)
        self.head = head

    def score_interest(self, interest) -> torch.Tensor:
        x = torch.as_tensor(interest).float()
        return self.head(x.to(self.head.weight.device))  # (n, n_items)


class TextCosineScorer(InterestScorer):
    """Zero-shot: the cosine of the interest vector to each item text's embedding (both unit norm).

    Args:
        item_vectors: ``(n_items, dim)`` embeddings of ``verbaliser.item_texts`` (default: encoded here).
    """

    name = "text cosine (zero-shot)"

    def __init__(self, verbaliser, encoder=None, item_vectors=None, batch_size: int = 64, **options):
        super().__init__(verbaliser, encoder, batch_size, **options)
        if item_vectors is None:
            if encoder is None:
                raise ValueError("TextCosineScorer needs an encoder or the item texts' `item_vectors`.")
            item_vectors = encoder.encode(verbaliser.item_texts, show_progress_bar=False, options=self.options)
        device = encoder.device if encoder is not None else "cpu"
        self.item_vectors = torch.as_tensor(item_vectors, device=device)  # (n_items, dim)

    def score_interest(self, interest) -> torch.Tensor:
        x = torch.as_tensor(interest).float()
        return x.to(self.item_vectors.device) @ self.item_vectors.T  # (n, n_items)


class SequenceHeadScorer(Scorer):
    """The sequence head's next-item scores from the order of the newest ``max_events`` events
    (`interestbert.encoder.sequence.SequenceHead`); scored in eval mode (no dropout), the head's mode kept.

    With ``short_window``, `rank` and `topk` take ``alpha=`` weights (one per history) and score
    ``(1 - a) · scores(history) + a · scores(its newest short_window events)``: the drift-aware blend of
    `interestbert.inference.recommend` for this head (a history with ``a = 0`` gets its plain scores, unchanged)."""

    name = "sequence head"

    def __init__(self, head, verbaliser, short_window: int | None = None):
        super().__init__(verbaliser)
        self.head = head
        if short_window is not None and short_window < 1:
            raise ValueError(f"`short_window` should be a positive number of events, got {short_window}.")
        self.short_window = short_window

    def _scores(self, users, ends, rows, alpha=None) -> torch.Tensor:
        if alpha is not None and self.short_window is None:
            raise ValueError("`alpha` needs a scorer made with `short_window`.")
        was_training = self.head.training
        if was_training:  # eval() walks every module: not when it is in eval mode already
            self.head.eval()
        try:
            histories = self.head.histories(self.verbaliser, users, ends).to(self.head.text.device)
            scores = self.head.scores(histories)
            if alpha is None:
                return scores
            a = torch.as_tensor(np.asarray(alpha, dtype=np.float32)[rows], device=scores.device)[:, None]
            if not bool((a > 0).any()):
                return scores
            short = histories.clone()
            short[:, : max(histories.shape[1] - self.short_window, 0)] = -1
            return torch.where(a > 0, (1 - a) * scores + a * self.head.scores(short), scores)
        finally:
            if was_training:
                self.head.train()


class PopularityScorer(Scorer):
    """Items by their interaction count (the same scores for every user): the baseline.

    Args:
        counts: ``(n_items,)`` interactions per catalogue row, counted before the held-out targets.
    """

    name = "popularity"

    def __init__(self, counts, verbaliser):
        super().__init__(verbaliser)
        self.counts = torch.as_tensor(np.asarray(counts), dtype=torch.float32)  # (n_items,)

    def _scores(self, users, ends, rows) -> torch.Tensor:
        return self.counts.repeat(len(users), 1)


def scorer_for(
    encoder,
    verbaliser,
    kind: str = "auto",
    batch_size: int = 64,
    precision: str = "fp32",
    backend: str = "torch",
    options: EncodeOptions | None = None,
) -> Scorer:
    """The scorer of a model (`InterestEncoder`) over a verbaliser's catalogue.

    Args:
        kind: ``sequence`` (its sequence head), ``strategy`` (its strategy head), ``text`` (zero-shot cosine to
            the item texts) or ``auto``: the sequence head when the model has one, else the strategy head, else
            the text cosine.
        batch_size: Histories per forward pass when encoding.
        precision, backend: How the interest scorers encode (see `InterestEncoder.encode`); the sequence head
            reads item ids and ignores them.
        options: `EncodeOptions` in place of ``batch_size``, ``precision`` and ``backend``.
    """
    options = options or EncodeOptions(precision, backend, batch_size)
    if kind not in SCORER_KINDS:
        raise ValueError(f"scorer kind should be one of {', '.join(SCORER_KINDS)}, got {kind!r}.")
    if kind == "auto":
        kind = "sequence" if encoder.sequence_head is not None else "strategy" if encoder.head is not None else "text"
    if kind == "sequence":
        if encoder.sequence_head is None:
            raise ValueError("the model has no sequence head; train one with `interestbert finetune --sequence_head`.")
        return SequenceHeadScorer(encoder.sequence_head, verbaliser)
    if kind == "strategy":
        if encoder.head is None:
            raise ValueError(
                "the model has no strategy head (an untrained base model); fine-tune it first, or score "
                "with the text cosine."
            )
        return StrategyHeadScorer(encoder.head, verbaliser, encoder, options=options)
    return TextCosineScorer(verbaliser, encoder, options=options)
