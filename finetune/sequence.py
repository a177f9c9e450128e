"""Training and scoring the sequence head (`interestbert.encoder.sequence.SequenceHead`).

The head trains after the encoder, on the encoder's embeddings of the item texts (computed once): each user's
training events (everything before the validation target) become one right-aligned sequence, and the loss is the
cross-entropy of the next item at every position, as in SASRec. Validation NDCG@10 (full ranking, seen items
excluded) is measured after every epoch; the best epoch is kept, with early stopping and a time cap.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from interestbert.encoder.sequence import SequenceHead, SequenceOptions, right_aligned, sequence_loss
from interestbert.encoder.verbalise import Verbaliser

from .data import Examples, Split
from .evaluate import metrics_from_ranks, ranks_by_chunk


@dataclass
class SequenceTraining:
    """How the sequence head is trained (`FinetuneArguments` fills it from its ``sequence_*`` options)."""

    epochs: int = 200
    learning_rate: float = 1e-3
    batch_size: int = 128
    patience: int = 10
    max_minutes: float | None = None
    seed: int = 42


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


def sequence_ranks(head: SequenceHead, verbaliser: Verbaliser, examples: Examples) -> np.ndarray:
    """0-based rank of each example's target under the sequence head (full ranking, seen items excluded)."""
    was_training = head.training
    head.eval()
    with torch.no_grad():
        ranks = ranks_by_chunk(verbaliser, examples, lambda lo, chunk: head.scores(
            head.histories(verbaliser, chunk.users, chunk.ends).to(head.text.device)))
    head.train(was_training)
    return ranks


def train_sequence_head(verbaliser: Verbaliser, split: Split, item_embeddings, options: SequenceOptions,
                        training: SequenceTraining, validation: Examples | None = None, device: str = "cpu",
                        show_progress_bar: bool = True, print_fn=print) -> tuple[SequenceHead, dict]:
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
    optimizer = torch.optim.Adam(head.parameters(), lr=training.learning_rate)
    best, best_epoch, best_state, bad, log = -1.0, 0, None, 0, []
    start = time.perf_counter()
    bar = tqdm(range(1, training.epochs + 1), desc="sequence head", disable=not show_progress_bar, leave=False)
    for epoch in bar:
        head.train()
        order = torch.randperm(len(inputs), generator=generator)
        total, batches = 0.0, 0
        for lo in range(0, len(order), training.batch_size):
            pick = order[lo: lo + training.batch_size]
            loss = sequence_loss(head, inputs[pick].to(device), targets[pick].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        ndcg = metrics_from_ranks(sequence_ranks(head, verbaliser, validation))["ndcg@10"]
        log.append({"epoch": epoch, "loss": round(total / max(batches, 1), 4), "validation_ndcg@10": round(ndcg, 5)})
        bar.set_postfix(loss=f"{total / max(batches, 1):.3f}", ndcg=f"{ndcg:.4f}")
        if ndcg > best:
            best, best_epoch, bad = ndcg, epoch, 0
            best_state = copy.deepcopy(head.state_dict())
        else:
            bad += 1
        minutes = (time.perf_counter() - start) / 60
        if bad >= training.patience or (training.max_minutes is not None and minutes >= training.max_minutes):
            break
    bar.close()
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    summary = {"best_epoch": best_epoch, "epochs": len(log), "best_validation_ndcg@10": round(best, 5),
               "train_runtime_s": round(time.perf_counter() - start, 1), "sequences": len(inputs), "log": log}
    print_fn(f"sequence head: best validation NDCG@10 {best:.4f} at epoch {best_epoch} of {len(log)} "
             f"({summary['train_runtime_s']:.0f} s)")
    return head, summary
