"""`Run`: everything the training loop needs, built once by `interestbert.finetune.train.build` and read by the
loop and by what runs after it (`interestbert.finetune.after_training`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from interestbert.encoder.model import InterestEncoder
from interestbert.encoder.verbalise import Verbaliser

from .args import FinetuneArguments
from .data import Examples, Split
from .steps import EpochOrder


@dataclass
class Run:
    """Everything `train` needs, built once by `build`."""

    args: FinetuneArguments
    accelerator: object
    encoder: InterestEncoder
    verbaliser: Verbaliser
    split: Split
    validation: Examples
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    loader: object  # the prepared DataLoader of example indices (this process's batches)
    order: EpochOrder  # its sampler: set ``order.epoch`` before iterating
    total_steps: int
    tie_share: float  # the card's users whose last event shares its timestamp with the one before
    # encodings made once and reused while they hold: the validation histories under the encoder before any update
    # (the head warm-up's, scored again at step 0) and the item texts under the base model (when the run starts
    # from one: the head's initial weights, and the zero-shot baseline's item vectors in `finish`)
    validation_interest: np.ndarray | None = None
    base_item_vectors: np.ndarray | None = None

    @property
    def updates_per_epoch(self) -> int:
        return math.ceil(len(self.loader) / self.args.gradient_accumulation_steps)
