"""The head warm-up: ``A`` and ``b'`` fitted alone on the frozen encoder's history vectors, encoded once, before
the expensive joint training (many cheap epochs through the shared epoch loop, `interestbert.finetune.loop`)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from interestbert.encoder.model import InterestEncoder
from interestbert.encoder.scoring import StrategyHeadScorer
from interestbert.encoder.verbalise import Verbaliser

from .args import FinetuneArguments
from .data import Examples
from .evaluate import evaluate
from .loop import fit_epochs


def warm_up_head(
    encoder: InterestEncoder,
    verbaliser: Verbaliser,
    train: Examples,
    args: FinetuneArguments,
    accelerator,
    validation: Examples | None = None,
) -> tuple[dict, np.ndarray | None]:
    """Fits ``A`` and ``b'`` alone on the frozen encoder's history vectors, encoded once: many cheap epochs of
    the head's cross-entropy before the expensive joint training (see `fit_head`). Every process computes the same
    result. Returns the AdamW state of each head parameter (at the kept epoch), so the joint optimizer continues
    from it, and the validation histories' vectors (None without ``validation``): the step-0 evaluation scores
    the warmed-up head on them instead of encoding them again."""
    cap = args.head_warmup_max_examples
    if cap is not None and len(train) > cap:
        train = train.subset(np.sort(np.random.default_rng([args.seed, 7]).choice(len(train), cap, replace=False)))
    show = not args.disable_tqdm and accelerator.is_main_process
    with torch.no_grad():
        interest = encoder.encode_histories(
            verbaliser,
            train.users,
            train.ends,
            show_progress_bar=show,
            batch_size=args.per_device_eval_batch_size,
            precision=args.encode_precision,
        )
        valid = (
            None
            if validation is None or not len(validation)
            else encoder.encode_histories(
                verbaliser,
                validation.users,
                validation.ends,
                batch_size=args.per_device_eval_batch_size,
                precision=args.encode_precision,
            )
        )
    optimizer, summary = fit_head(
        encoder,
        verbaliser,
        interest,
        train.targets,
        args.head_warmup_epochs,
        args.head_learning_rate,
        args.weight_decay,
        args.seed,
        None if valid is None else (validation, valid),
        args.head_warmup_patience,
    )
    accelerator.print(f"head warm-up: {summary}")
    return {param: optimizer.state[param] for param in encoder.head.parameters()}, valid


def fit_head(
    encoder: InterestEncoder,
    verbaliser: Verbaliser,
    interest,
    targets,
    epochs: int,
    lr: float,
    weight_decay: float = 0.0,
    seed: int = 0,
    validation: tuple[Examples, np.ndarray] | None = None,
    patience: int = 10,
):
    """Trains ``encoder.head`` alone on fixed interest vectors ``(n, dim)`` with AdamW, batches of 256, through the
    shared epoch loop (`interestbert.finetune.loop.fit_epochs`).

    With ``validation`` (examples and their interest vectors), NDCG@10 is measured after every epoch, the best
    epoch's head is kept, and training stops after ``patience`` epochs without improvement: the head
    overfits a small catalogue within tens of epochs. Returns the optimizer (its state at the kept epoch) and a
    one-line summary."""
    head = encoder.head
    device = head.weight.device
    interest = torch.as_tensor(interest).float().to(device)  # (n, dim)
    targets = torch.as_tensor(targets, device=device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    validate = None
    if validation is not None:
        scorer = StrategyHeadScorer(head, verbaliser)
        examples, vectors = validation
        validate = lambda: evaluate(scorer, examples, interest=vectors)["ndcg@10"]  # noqa: E731
    result = fit_epochs(
        head,
        optimizer,
        len(targets),
        lambda rows: F.cross_entropy(head(interest[rows]), targets[rows]),
        epochs=epochs,
        batch_size=256,
        generator=torch.Generator().manual_seed(seed),
        validate=validate,
        patience=patience,
        device=device,
    )
    kept = "" if validate is None else f", kept epoch {result.best_epoch} (validation NDCG@10 {result.best_metric:.4f})"
    return optimizer, (
        f"{result.epochs} epochs over {len(targets):,} frozen history vectors{kept}, "
        f"last batch loss {result.last_loss:.4f}"
    )
