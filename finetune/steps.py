"""One training step: the module that trains (encoder + strategy head), the batches of example indices, the
history and item inputs, and the loss (cross-entropy of the head, optionally sampled, plus InfoNCE).

The data order is a function of (seed, epoch) only (`EpochOrder`), the sampled negatives of (seed, step) only
(`sample_candidates`), and the loader draws nothing from the global RNG, so a run resumed from a checkpoint sees
exactly the batches, negatives and dropout masks of an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler

from interestbert.encoder.head import StrategyHead


class Trainable(nn.Module):
    """The encoder and the head as one module, so DDP sees every trained parameter in one forward."""

    def __init__(self, sentence_transformer: nn.Module, head: StrategyHead):
        super().__init__()
        self.st = sentence_transformer
        self.head = head

    def forward(self, history: list, items: dict | None = None, candidates: torch.Tensor | None = None):
        """``history``: per interest horizon, (tokens of its distinct texts, each example's row among them,
        weight); the interest is the normalised weighted sum (see `InterestEncoder.encode_histories`)."""
        if len(history) == 1:
            interest = self.st(history[0][0])["sentence_embedding"][history[0][1]]  # (batch, dim)
        else:
            interest = F.normalize(sum(weight * self.st(tokens)["sentence_embedding"][rows]
                                       for tokens, rows, weight in history), dim=-1)
        item_vectors = self.st(items)["sentence_embedding"] if items is not None else None  # (batch, dim)
        logits = self.head(interest.float(), candidates)  # (batch, n_items | n_candidates)
        return interest, item_vectors, logits


class EpochOrder(Sampler):
    """Example indices ``0 .. n-1`` in a permutation seeded by ``(seed, epoch)``; the trainer sets ``epoch``
    before each epoch (Accelerate's ``set_epoch`` is deliberately not implemented, so nothing else moves it)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


def example_loader(n: int, batch_size: int, seed: int) -> tuple[DataLoader, EpochOrder]:
    """Batches of example indices (``LongTensor``) in `EpochOrder`; prepare it with ``accelerator.prepare`` to
    shard it over processes (each takes its own batch of every global batch; the last one wraps around so that
    every process takes the same number of steps). Its own generator keeps the global RNG untouched."""
    order = EpochOrder(n, seed)
    loader = DataLoader(range(n), batch_size=batch_size, sampler=order, collate_fn=torch.as_tensor,
                        generator=torch.Generator().manual_seed(seed))
    return loader, order


def sample_candidates(n_items: int, targets: torch.Tensor, num_negatives: int, seed: int, step: int):
    """Sampled softmax: the batch's targets plus uniform negatives, drawn from (seed, step) so that a resumed run
    draws the same ones. Returns the sorted unique candidate rows and each target's position among them."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    negatives = torch.randint(n_items, (num_negatives,), generator=gen).to(targets.device)
    candidates = torch.unique(torch.cat([targets, negatives]))  # (n_candidates,) sorted
    return candidates, torch.searchsorted(candidates, targets)


def contrastive_loss(interest: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, temperature: float):
    """InfoNCE between each history and its next item's text, the batch's other items as negatives (a repeated
    target is not its own negative)."""
    logits = interest.float() @ items.float().T / temperature  # (batch, batch)
    same = targets[:, None] == targets[None, :]
    logits = logits.masked_fill(same & ~torch.eye(len(targets), dtype=torch.bool, device=logits.device), -1e4)
    return F.cross_entropy(logits, torch.arange(len(targets), device=logits.device))


def history_inputs(run, ex) -> list:
    """`Trainable`'s history input for examples: per interest horizon, the tokens of its distinct texts (each
    tokenised once), each example's row among them, and the horizon's weight."""
    out = []
    device = run.accelerator.device
    for events, weight in run.encoder.horizons:
        texts, rows = np.unique(np.asarray(run.verbaliser.texts_for_indices(ex.users, ex.ends, events), dtype=object),
                                return_inverse=True)
        tokens = run.encoder.tokenizer(texts.tolist(), padding=True, truncation=True,
                                       max_length=run.args.max_seq_length, return_tensors="pt").to(device)
        out.append((dict(tokens), torch.as_tensor(rows.reshape(-1), device=device), weight))
    return out


def step_loss(run, batch, step: int) -> tuple[torch.Tensor, dict]:
    """The loss of one batch of example indices at optimizer step ``step`` (which seeds the sampled negatives),
    and its parts as floats."""
    args, device = run.args, run.accelerator.device
    ex = run.split.train.subset(torch.as_tensor(batch).cpu().numpy())
    history = history_inputs(run, ex)
    targets = torch.as_tensor(ex.targets, device=device)
    items = None
    if args.contrastive_weight > 0:
        item_texts = [run.verbaliser.item_texts[i] for i in ex.targets.tolist()]
        items = dict(run.encoder.tokenizer(item_texts, padding=True, truncation=True, max_length=args.max_item_length,
                                           return_tensors="pt").to(device))
    candidates, labels = None, targets
    if run.split.n_items > args.full_softmax_max_items:
        candidates, labels = sample_candidates(run.split.n_items, targets, args.num_negatives, args.seed, step)
    with run.accelerator.autocast():
        interest, item_vectors, logits = run.module(history, items, candidates)
    ce = F.cross_entropy(logits.float(), labels)
    loss = args.ce_weight * ce
    parts = {"ce": ce.item()}
    if item_vectors is not None:
        con = contrastive_loss(interest, item_vectors, targets, args.temperature)
        loss = loss + args.contrastive_weight * con
        parts["contrastive"] = con.item()
    return loss, parts
