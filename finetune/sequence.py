"""Training and scoring the sequence head (`interestbert.encoder.sequence.SequenceHead`).

The head trains after the encoder, on the encoder's embeddings of the item texts (computed once): each user's
training events (everything before the validation target) become one right-aligned sequence, and the loss is the
cross-entropy of the next item at every position, as in SASRec. Validation NDCG@10 (full ranking, seen items
excluded, `interestbert.encoder.scoring.SequenceHeadScorer`) is measured after every epoch by the shared epoch loop
(`interestbert.finetune.loop`); the best epoch is kept, with early stopping and a time cap. Then the head's text
prior (`interestbert.encoder.sequence.TextPrior`) is fitted on the same validation examples: its weight and
half-count from a small grid that includes "off".
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np
import torch
from tqdm.auto import tqdm

from interestbert.encoder.scoring import CHUNK, SequenceHeadScorer, mask_seen, seen_rows, target_ranks
from interestbert.encoder.sequence import SequenceHead, SequenceOptions, TextPrior, right_aligned, sequence_loss
from interestbert.encoder.verbalise import Verbaliser

from .data import Examples, Split
from .evaluate import evaluate
from .loop import fit_epochs
from .metrics import RankingMetrics


@dataclass
class SequenceTraining:
    """How the sequence head is trained (`FinetuneArguments` fills it from its ``sequence_*`` options)."""

    epochs: int = 200
    learning_rate: float = 1e-3
    batch_size: int = 128
    patience: int = 10
    max_minutes: float | None = None
    seed: int = 42
    text_prior: bool = True


PRIOR_WEIGHTS = (2.0, 5.0, 10.0, 20.0, 50.0)  # the text prior's grid (besides off); scores are logits
PRIOR_HALF_COUNTS = (3.0, 10.0, 30.0)


@torch.no_grad()
def fit_text_prior(
    head: SequenceHead, validation: Examples, verbaliser: Verbaliser, show_progress_bar: bool = False
) -> dict:
    """Sets ``head.text_prior`` to the best of off and `PRIOR_WEIGHTS` x `PRIOR_HALF_COUNTS` by NDCG@10 on
    ``validation`` (off wins ties); returns the chosen prior and every choice's NDCG@10.

    One pass: per chunk of histories the head's scores without the prior and the text similarity are computed
    once, and every choice is ranked from them (the same scores `SequenceHeadScorer` gives, bit for bit)."""
    grid = [TextPrior()] + [TextPrior(weight=w, half_count=k) for w, k in product(PRIOR_WEIGHTS, PRIOR_HALF_COUNTS)]
    ranks = [[] for _ in grid]
    was_training = head.training
    head.eval()
    try:
        for lo in tqdm(range(0, len(validation), CHUNK), desc="text prior", disable=not show_progress_bar, leave=False):
            users, ends = validation.users[lo : lo + CHUNK], validation.ends[lo : lo + CHUNK]
            targets = validation.targets[lo : lo + CHUNK]
            histories = head.histories(verbaliser, users, ends).to(head.text.device)
            head.text_prior = grid[0]
            base = mask_seen(head.scores(histories), seen_rows(verbaliser, users, ends, keep=targets))
            head.text_prior = grid[1]  # every choice shares `last`, `decay` and `power`
            similarity = head.text_similarity(histories)
            wanted = torch.as_tensor(np.asarray(targets, dtype=np.int64), device=base.device)
            for prior, out in zip(grid, ranks):
                head.text_prior = prior
                scores = base if prior.weight == 0 else base + prior.weight * head.prior_term(histories, similarity)
                out.append(target_ranks(scores, wanted).cpu().numpy())
    finally:
        head.train(was_training)
    found = [RankingMetrics.of(np.concatenate(out) if out else np.zeros(0, dtype=np.int64))["ndcg@10"] for out in ranks]
    best = max(range(len(grid)), key=lambda i: (found[i], -i))
    head.text_prior = grid[best]
    return {
        "weight": grid[best].weight,
        "half_count": grid[best].half_count,
        "validation_ndcg@10": round(found[best], 5),
        "validation_ndcg@10_off": round(found[0], 5),
        "grid": {f"{p.weight:g}/{p.half_count:g}": round(v, 5) for p, v in zip(grid, found)},
    }


def training_sequences(verbaliser: Verbaliser, split: Split, max_events: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, targets)``, each ``(n_users, max_events)``: per user, the training events (before the validation
    target) as input, each position's next event as target; -1 where padded. Users with fewer than two training
    events give no pair and are left out."""
    users, n = split.validation.users, split.validation.ends  # the validation target sits at position `n`
    keep = n >= 2
    users, n = users[keep], n[keep]
    rows = verbaliser.event_items
    inputs = right_aligned(rows, verbaliser.offsets, users, n - 1, max_events)  # events 0 .. n-2
    targets = right_aligned(rows, verbaliser.offsets, users, n, max_events)  # events 1 .. n-1, aligned
    targets[inputs < 0] = -1
    return inputs, targets


def train_sequence_head(
    verbaliser: Verbaliser,
    split: Split,
    item_embeddings,
    options: SequenceOptions,
    training: SequenceTraining,
    validation: Examples | None = None,
    device: str = "cpu",
    show_progress_bar: bool = True,
    print_fn=print,
) -> tuple[SequenceHead, dict]:
    """Trains a sequence head on the split's training events; returns the best epoch's head and the log.

    Args:
        item_embeddings: ``(n_items, dim)`` embeddings of ``verbaliser.item_texts`` (the encoder's).
        validation: Examples scored after each epoch (default: the whole validation split).
    """
    torch.manual_seed(training.seed)
    generator = torch.Generator().manual_seed(training.seed)
    head = SequenceHead(verbaliser.item_ids, item_embeddings, split.popularity["train"], options).to(device)
    inputs, targets = training_sequences(verbaliser, split, options.max_events)
    validation = split.validation if validation is None else validation
    scorer = SequenceHeadScorer(head, verbaliser)
    optimizer = torch.optim.Adam(head.parameters(), lr=training.learning_rate)
    result = fit_epochs(
        head,
        optimizer,
        len(inputs),
        lambda rows: sequence_loss(head, inputs[rows.cpu()].to(device), targets[rows.cpu()].to(device)),
        epochs=training.epochs,
        batch_size=training.batch_size,
        generator=generator,
        validate=lambda: evaluate(scorer, validation)["ndcg@10"],
        patience=training.patience,
        max_minutes=training.max_minutes,
        desc="sequence head" if show_progress_bar else None,
    )
    head.eval()
    summary = {
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
        "best_validation_ndcg@10": round(result.best_metric, 5),
        "train_runtime_s": round(result.seconds, 1),
        "sequences": len(inputs),
        "log": result.log,
    }
    print_fn(
        f"sequence head: best validation NDCG@10 {result.best_metric:.4f} at epoch {result.best_epoch} of "
        f"{result.epochs} ({summary['train_runtime_s']:.0f} s)"
    )
    if training.text_prior:
        prior = summary["text_prior"] = fit_text_prior(head, validation, verbaliser, show_progress_bar)
        print_fn(
            f"sequence head's text prior: weight {prior['weight']:g}, half-count {prior['half_count']:g} "
            f"(validation NDCG@10 {prior['validation_ndcg@10']:.4f}, off {prior['validation_ndcg@10_off']:.4f})"
        )
    return head, summary
