"""One training step: the module that trains (encoder + strategy head), the batches of example indices, the
history and item inputs, and the loss (cross-entropy of the head, optionally sampled, plus InfoNCE).

The data order is a function of (seed, epoch) only (`EpochOrder`), the sampled negatives of (seed, step) only
(`sample_candidates`), and the loader draws nothing from the global RNG, so a run resumed from a checkpoint sees
exactly the batches, negatives and dropout masks of an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler

from interestbert.encoder.head import StrategyHead

# padded tokens per encoder pass of a packed step on a CPU: small passes stay in cache and beat one large pass
# (benchmarks/train_step.py measures it)
CPU_CHUNK_TOKENS = 512


class Trainable(nn.Module):
    """The encoder and the head as one module, so DDP sees every trained parameter in one forward."""

    def __init__(self, sentence_transformer: nn.Module, head: StrategyHead):
        super().__init__()
        self.st = sentence_transformer
        self.head = head

    def forward(self, inputs: StepInputs, candidates: torch.Tensor | None = None):
        """``inputs``: the step's distinct texts in chunks (`step_inputs`); every chunk goes through the encoder
        here, in this one forward, so DDP sees one graph. The interest is the normalised weighted sum of the
        horizons' embeddings (see `InterestEncoder.encode_histories`)."""
        emb = torch.cat([self.st(chunk)["sentence_embedding"] for chunk in inputs.chunks])[inputs.restore]
        if len(inputs.horizons) == 1:
            interest = emb[inputs.horizons[0][0]]  # (batch, dim)
        else:
            interest = F.normalize(sum(weight * emb[rows] for rows, weight in inputs.horizons), dim=-1)
        item_vectors = emb[inputs.items] if inputs.items is not None else None  # (batch, dim)
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
    loader = DataLoader(
        range(n),
        batch_size=batch_size,
        sampler=order,
        collate_fn=torch.as_tensor,
        generator=torch.Generator().manual_seed(seed),
    )
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


@dataclass
class StepInputs:
    """Every text one step encodes (the history text of each interest horizon, the next items' texts), each
    distinct text once, as encoder input."""

    chunks: list[dict]  # tokens of the distinct texts, each chunk padded to its own longest text
    restore: torch.Tensor  # (n distinct,) row of each distinct text in the chunks' concatenated outputs
    horizons: list[tuple[torch.Tensor, float]]  # per interest horizon: each example's distinct text, its weight
    items: torch.Tensor | None  # each example's next-item text, or None without the contrastive term

    @property
    def real_tokens(self) -> int:
        return sum(int(chunk["attention_mask"].sum()) for chunk in self.chunks)

    @property
    def padded_tokens(self) -> int:
        return sum(chunk["attention_mask"].numel() for chunk in self.chunks)


def step_inputs(run, ex, items: bool = True, packed: bool = True, chunk_tokens: int | None = None) -> StepInputs:
    """`Trainable`'s input for examples ``ex``: the texts of every interest horizon and (``items``) the next
    items' texts, each distinct text tokenised and encoded once (a whole-history text and a 4-event text are the
    same text when the history is short), sorted by length and cut into chunks of at most ``chunk_tokens`` padded
    tokens (default: `CPU_CHUNK_TOKENS` on a CPU, ``batch × max_seq_length`` on an accelerator), so a step pays for
    little padding. ``packed=False`` is the earlier layout, kept for the throughput benchmark: one chunk per
    horizon and one for the items, no text shared between them."""
    device, tokenizer = run.accelerator.device, run.encoder.tokenizer
    groups = [
        (run.verbaliser.texts_for_indices(ex.users, ex.ends, events), run.args.max_seq_length)
        for events, _ in run.encoder.horizons
    ]
    if items:
        groups.append(([run.verbaliser.item_texts[i] for i in ex.targets.tolist()], run.args.max_item_length))
    key = {}  # (text, token budget, group unless packed) -> distinct row
    rows = [
        torch.as_tensor([key.setdefault((text, limit, 0 if packed else g), len(key)) for text in texts])
        for g, (texts, limit) in enumerate(groups)
    ]
    ids = [None] * len(key)
    for limit in sorted({limit for _, limit in groups}):
        todo = [(i, text) for (text, lim, _), i in key.items() if lim == limit]
        tokens = tokenizer([text for _, text in todo], truncation=True, max_length=limit)["input_ids"]
        for (i, _), row in zip(todo, tokens):
            ids[i] = row
    if packed:
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        budget = chunk_tokens or (
            CPU_CHUNK_TOKENS
            if device.type == "cpu"
            # an accelerator: passes as big
            else run.args.per_device_train_batch_size * run.args.max_seq_length
        )  # as a horizon's
        cuts, start = [], 0
        for end in range(1, len(order) + 1):  # ascending lengths: the newest text is the chunk's longest
            if (end - start) * len(ids[order[end - 1]]) > budget:
                cuts.append((start, end - 1))
                start = end - 1
        cuts.append((start, len(order)))
    else:
        order = list(range(len(ids)))
        bounds = np.cumsum([0] + [len(set(r.tolist())) for r in rows])
        cuts = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
    chunks = [_pad([ids[i] for i in order[a:b]], tokenizer.pad_token_id, device) for a, b in cuts if b > a]
    restore = torch.empty(len(order), dtype=torch.long)
    restore[torch.as_tensor(order, dtype=torch.long)] = torch.arange(len(order))
    rows = [r.to(device) for r in rows]
    weights = [weight for _, weight in run.encoder.horizons]
    return StepInputs(chunks, restore.to(device), list(zip(rows, weights)), rows[len(weights)] if items else None)


def _pad(rows: list[list[int]], pad_id: int, device) -> dict:
    """BERT input of token id lists, padded to the longest."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.as_tensor(r)
        attention_mask[i, : len(r)] = 1
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "token_type_ids": torch.zeros_like(input_ids).to(device),
    }


def step_loss(run, batch, step: int, packed: bool = True) -> tuple[torch.Tensor, dict]:
    """The loss of one batch of example indices at optimizer step ``step`` (which seeds the sampled negatives),
    and its parts as floats. ``packed`` as in `step_inputs`."""
    args, device = run.args, run.accelerator.device
    ex = run.split.train.subset(torch.as_tensor(batch).cpu().numpy())
    inputs = step_inputs(run, ex, items=args.contrastive_weight > 0, packed=packed)
    targets = torch.as_tensor(ex.targets, device=device)
    candidates, labels = None, targets
    if run.split.n_items > args.full_softmax_max_items:
        candidates, labels = sample_candidates(run.split.n_items, targets, args.num_negatives, args.seed, step)
    with run.accelerator.autocast():
        interest, item_vectors, logits = run.module(inputs, candidates)
    ce = F.cross_entropy(logits.float(), labels)
    loss = args.ce_weight * ce
    parts = {"ce": ce.item()}
    if item_vectors is not None:
        con = contrastive_loss(interest, item_vectors, targets, args.temperature)
        loss = loss + args.contrastive_weight * con
        parts["contrastive"] = con.item()
    return loss, parts
