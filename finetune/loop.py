"""One small epoch loop for the heads that train on fixed inputs: the strategy head's warm-up on frozen interest
vectors and the sequence head on item sequences.

Each epoch draws a permutation from a seeded generator, steps the optimizer once per batch, then (with a
``validate`` function) measures validation NDCG@10, keeps the best epoch's weights (and optimizer moments, so that
a later optimizer can continue from them), and stops after ``patience`` epochs without improvement or at a time
cap. Heads of this size overfit within tens of epochs: the kept epoch, not the last one, is the result.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm


@dataclass
class EpochLog:
    """What `fit_epochs` did: the kept epoch and its metric, the epochs run, and one entry per epoch."""

    best_epoch: int = 0
    best_metric: float = -1.0
    epochs: int = 0
    last_loss: float = float("nan")
    seconds: float = 0.0
    log: list[dict] = field(default_factory=list)


def fit_epochs(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    n_examples: int,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    validate: Callable[[], float] | None = None,
    patience: int = 10,
    max_minutes: float | None = None,
    device="cpu",
    desc: str | None = None,
) -> EpochLog:
    """Trains ``module`` for up to ``epochs`` passes over ``n_examples`` and keeps its best validation epoch.

    Args:
        module: Trained in place; afterwards it holds the kept epoch's weights, and ``optimizer.state`` that
            epoch's moments.
        batch_loss: The loss of a batch, given its example indices ``(batch,)`` on ``device``.
        generator: Seeded generator of the data order (one permutation per epoch).
        validate: Validation NDCG@10 of the current weights; without it the last epoch is kept and no early stop.
        patience: Stop after this many epochs without a better validation score.
        max_minutes: Stop after this long (checked between epochs).
        desc: Label of a progress bar over epochs (no bar when None).
    """
    result = EpochLog()
    best_state = None
    start = time.perf_counter()
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=desc is None, leave=False)
    for epoch in bar:
        module.train()
        order = torch.randperm(n_examples, generator=generator).to(device)
        total, batches = 0.0, 0
        for lo in range(0, len(order), batch_size):
            loss = batch_loss(order[lo : lo + batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        result.epochs, result.last_loss = epoch, loss.item() if batches else float("nan")
        entry = {"epoch": epoch, "loss": round(total / max(batches, 1), 4)}
        if validate is not None:
            metric = validate()
            entry["validation_ndcg@10"] = round(metric, 5)
            bar.set_postfix(loss=f"{entry['loss']:.3f}", ndcg=f"{metric:.4f}")
            if metric > result.best_metric:
                result.best_metric, result.best_epoch = metric, epoch
                best_state = (
                    copy.deepcopy(module.state_dict()),
                    {p: copy.deepcopy(optimizer.state[p]) for p in module.parameters()},
                )
        result.log.append(entry)
        minutes = (time.perf_counter() - start) / 60
        if validate is not None and epoch - result.best_epoch >= patience:
            break
        if max_minutes is not None and minutes >= max_minutes:
            break
    bar.close()
    if best_state is not None:
        weights, moments = best_state
        module.load_state_dict(weights)
        for param in module.parameters():
            optimizer.state[param] = moments[param]
    result.seconds = time.perf_counter() - start
    return result
