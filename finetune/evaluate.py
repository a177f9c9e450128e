"""Full-ranking evaluation: every item scored, the user's seen items excluded, one held-out target per user.

A model with a strategy head scores items with ``A · interest + b'``; a model without one (the untrained base)
scores them by the cosine of their text embedding to the interest vector (zero-shot). The popularity baseline
scores items by their interaction count before the target, on the same examples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from interestbert.encoder.head import mask_seen
from interestbert.encoder.model import InterestEncoder
from interestbert.encoder.verbalise import Verbaliser

from .data import Examples, Split, seen_items
from .metrics import RankingMetrics

EVAL_CHUNK = 256  # examples scored at once: (chunk, n_items) floats


@torch.no_grad()
def item_text_vectors(encoder: InterestEncoder, verbaliser: Verbaliser, batch_size: int = 64) -> torch.Tensor:
    """``(n_items, dim)`` unit-norm embeddings of the catalogue's texts, on the encoder's device."""
    vectors = encoder.encode(verbaliser.item_texts, batch_size=batch_size, show_progress_bar=False)
    return torch.as_tensor(vectors, device=encoder.device)


@torch.no_grad()
def rank_examples(
    encoder: InterestEncoder,
    verbaliser: Verbaliser,
    examples: Examples,
    *,
    item_vectors: torch.Tensor | None = None,
    batch_size: int = 64,
    accelerator=None,
    show_progress_bar: bool = False,
    use_sequence_head: bool = True,
) -> np.ndarray:
    """0-based rank of each example's target among all items (seen items excluded), in example order: by the
    model's sequence head when it has one (and ``use_sequence_head``), else by its strategy head, else by cosine
    to the item texts.

    With an ``accelerator`` of several processes, each scores a contiguous shard and the ranks are gathered.
    """
    if use_sequence_head and encoder.sequence_head is not None:
        from .sequence import sequence_ranks

        return sequence_ranks(encoder.sequence_head, verbaliser, examples)
    if encoder.head is None and item_vectors is None:
        item_vectors = item_text_vectors(encoder, verbaliser, batch_size)
    index = np.arange(len(examples))
    if accelerator is not None and accelerator.num_processes > 1:
        index = np.array_split(index, accelerator.num_processes)[accelerator.process_index]
    was_training = encoder.model.training
    encoder.model.eval()
    ranks = []
    for lo in tqdm(range(0, len(index), EVAL_CHUNK), desc="evaluate", disable=not show_progress_bar, leave=False):
        chunk = examples.subset(index[lo: lo + EVAL_CHUNK])
        interest = torch.as_tensor(encoder.encode_histories(verbaliser, chunk.users, chunk.ends,
                                                            batch_size=batch_size, show_progress_bar=False))
        ranks.append(ranks_for_interest(encoder, verbaliser, chunk, interest, item_vectors))
    if was_training:
        encoder.model.train()
    ranks = np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64)
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        ranks = np.concatenate(gather_object([ranks]))
    return ranks


@torch.no_grad()
def score_items(encoder: InterestEncoder, interest, item_vectors: torch.Tensor | None = None) -> torch.Tensor:
    """``(n, n_items)`` scores of interest vectors: the strategy head's ``A · interest + b'``, or, for a model
    without a head, the cosine to ``item_vectors`` (the item texts' embeddings)."""
    x = torch.as_tensor(interest).float()
    if encoder.head is not None:
        return encoder.head(x.to(encoder.head.weight.device))
    return x.to(item_vectors.device) @ item_vectors.T


@torch.no_grad()
def ranks_by_chunk(verbaliser: Verbaliser, examples: Examples, score_chunk) -> np.ndarray:
    """0-based target ranks, seen items excluded, with ``score_chunk(lo, chunk)`` giving the ``(len(chunk),
    n_items)`` scores of examples ``lo .. lo + len(chunk)`` (scored `EVAL_CHUNK` at a time)."""
    from .metrics import target_ranks

    out = []
    for lo in range(0, len(examples), EVAL_CHUNK):
        chunk = examples.subset(slice(lo, lo + EVAL_CHUNK))
        scores = score_chunk(lo, chunk)  # (chunk, n_items)
        mask_seen(scores, seen_items(verbaliser, chunk))
        out.append(target_ranks(scores, torch.as_tensor(chunk.targets, device=scores.device)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def ranks_for_interest(encoder: InterestEncoder, verbaliser: Verbaliser, examples: Examples, interest,
                       item_vectors: torch.Tensor | None = None) -> np.ndarray:
    """0-based target ranks for given interest vectors ``(len(examples), dim)`` (one per example): the strategy
    head's scores, or cosine to ``item_vectors`` for a model without a head; seen items excluded."""
    return ranks_by_chunk(verbaliser, examples, lambda lo, chunk: score_items(
        encoder, interest[lo: lo + len(chunk)], item_vectors))


def popularity_ranks(verbaliser: Verbaliser, split: Split, name: str) -> np.ndarray:
    """Ranks under the popularity baseline: items by interactions before the target, seen items excluded."""
    counts = torch.as_tensor(split.popularity[name], dtype=torch.float32)
    return ranks_by_chunk(verbaliser, split[name], lambda lo, chunk: counts.repeat(len(chunk), 1))


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = (10,)) -> dict[str, float]:
    metrics = RankingMetrics(ks)
    metrics.update_ranks(ranks)
    return metrics.compute()


def format_metrics(name: str, metrics: dict, ks: Sequence[int] = (10,)) -> str:
    """One table row: ``name | HR@10 | NDCG@10 | MRR@10``."""
    cells = [f"{metrics[f'{m}@{k}']:.4f}" for k in ks for m in ("hr", "ndcg", "mrr")]
    return f"| {name} | " + " | ".join(cells) + " |"


def metrics_table(rows: dict[str, dict], ks: Sequence[int] = (10,)) -> str:
    header = "| model | " + " | ".join(f"{m.upper()}@{k}" for k in ks for m in ("hr", "ndcg", "mrr")) + " |"
    rule = "| --- |" + " ---: |" * (3 * len(ks))
    return "\n".join([header, rule, *(format_metrics(name, m, ks) for name, m in rows.items())])
