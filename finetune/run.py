"""`Run`: everything the training loop needs, built once by `build` (the Accelerator, the card's split and
examples, the encoder with its warmed-up head, the optimizer and schedule) and read by the loop
(`interestbert.finetune.train`) and by what runs after it (`interestbert.finetune.after_training`)."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from interestbert.encoder.cards import load_card_data
from interestbert.encoder.errors import InterestBertError
from interestbert.encoder.head import StrategyHead
from interestbert.encoder.hub.folder import ModelFolder
from interestbert.encoder.model import InterestEncoder
from interestbert.encoder.options import parse_horizons
from interestbert.encoder.verbalise import Verbaliser

from .args import FinetuneArguments
from .data import Examples, Split, leave_one_out
from .steps import EpochOrder, Trainable, example_loader
from .warmup import warm_up_head


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


CHECKPOINTS = "checkpoints"


# ------------------------------------------------------------------------------------------------------ build


def build(args: FinetuneArguments) -> Run:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from transformers import get_linear_schedule_with_warmup

    precision = args.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "no"
    # BERT's position_ids buffer must not be broadcast every step under DDP
    accelerator = Accelerator(
        mixed_precision=precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )
    _check_output_dir(args, accelerator)
    set_seed(args.seed)
    encoder, verbaliser, split, validation, stats, base_items = build_data(args, accelerator)
    if split.n_items > args.full_softmax_max_items:
        accelerator.print(
            f"{split.n_items:,} items, more than --full_softmax_max_items "
            f"{args.full_softmax_max_items:,}: the head trains with a sampled softmax over the batch's "
            f"targets and {args.num_negatives:,} uniform negatives (evaluation still ranks the full "
            "catalogue)"
        )
    warm_state, valid_interest = {}, None
    if args.head_warmup_epochs and args.resume_from_checkpoint is None:  # a resumed run loads its head anyway
        warm_state, valid_interest = warm_up_head(encoder, verbaliser, split.train, args, accelerator, validation)

    module = Trainable(encoder.model, encoder.head)
    lora = [p for p in module.st.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": lora, "lr": args.learning_rate},
            {"params": list(module.head.parameters()), "lr": args.joint_head_rate()},
        ],
        weight_decay=args.weight_decay,
    )
    for param, moments in warm_state.items():  # a fresh Adam would first move every head weight by ~lr
        optimizer.state[param] = moments
    loader, order = example_loader(len(split.train), args.per_device_train_batch_size, args.seed)
    # the scheduler is not prepared: it steps once per update, by hand, whatever the number of processes
    module, optimizer, loader = accelerator.prepare(module, optimizer, loader)
    updates_per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
    total_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * updates_per_epoch)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)
    return Run(
        args,
        accelerator,
        encoder,
        verbaliser,
        split,
        validation,
        module,
        optimizer,
        scheduler,
        loader,
        order,
        total_steps,
        stats["last_event_tied_share"],
        valid_interest,
        base_items,
    )


def build_data(args: FinetuneArguments, accelerator):
    """The card's data, the encoder with its strategy head over the card's catalogue, the leave-one-out split,
    the validation users (a seeded sample of at most ``max_eval_users``), the data's counts, and the base model's
    item text embeddings when the encoder is the base model (a new head starts from them), else None."""
    data = load_card_data(args.card, args.data_dir)
    empty = [i for i, t in zip(data.items["item_id"], data.items["text"]) if not t.strip()]
    if empty:
        raise InterestBertError(
            f"data card {data.card.name}: {len(empty)} items have no text (first: {empty[0]}); "
            "fix `interestbert.items.text` or the items file so every item has text."
        )
    encoder = load_encoder(args, str(accelerator.device))
    verbaliser = Verbaliser(data, encoder.tokenizer, args.max_seq_length)
    split = leave_one_out(verbaliser, args.max_train_prefixes_per_user)
    if len(split.train) == 0:
        raise InterestBertError(
            f"data card {data.card.name}: no training examples (users need at least 4 events); "
            "use a card with longer histories."
        )
    vectors = None
    if encoder.head is None:  # the base model with a new (zero) adapter
        vectors = encoder.encode(
            verbaliser.item_texts, batch_size=args.per_device_eval_batch_size, precision=args.encode_precision
        )
        encoder.head = StrategyHead(
            verbaliser.item_ids, vectors, popularity=split.popularity["train"], init_scale=args.head_init_scale
        )
    elif encoder.head.item_ids != verbaliser.item_ids:
        raise InterestBertError(
            f"{args.model_name_or_path} has a strategy head over another catalogue "
            f"({encoder.head.n_items} items) than data card {data.card.name} "
            f"({len(verbaliser.item_ids)}); start from the base model instead."
        )
    encoder.head.to(accelerator.device)
    validation = split.validation
    if args.max_eval_users and len(validation) > args.max_eval_users:
        pick = np.sort(np.random.default_rng(args.seed).choice(len(validation), args.max_eval_users, replace=False))
        validation = validation.subset(pick)
    return encoder, verbaliser, split, validation, data.stats, vectors


def load_encoder(args: FinetuneArguments, device: str) -> InterestEncoder:
    """The base model (or a saved interestbert folder) with the run's LoRA options, budget and horizons."""
    try:
        encoder = InterestEncoder.from_pretrained(
            args.model_name_or_path,
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            target_modules=args.lora_target_modules,
            max_seq_length=args.max_seq_length,
            device=device,
        )
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InterestBertError(
            f"--model_name_or_path {args.model_name_or_path}: the model could not be loaded "
            f"({first}); pass a BERT-family folder or Hub id, or a folder saved by "
            "interestbert."
        ) from None
    encoder.horizons = parse_horizons(args.interest_horizons)
    encoder.sequence_head = None  # a sequence head belongs to the encoder it was trained on; retrained in `finish`
    return encoder


def _check_output_dir(args: FinetuneArguments, accelerator) -> None:
    out = Path(args.output_dir)
    holds_model = ModelFolder(out).is_model() or (out / CHECKPOINTS).is_dir()
    if holds_model and not args.overwrite_output_dir and args.resume_from_checkpoint is None:
        raise InterestBertError(
            f"--output_dir {out} already holds a model or checkpoints; pass "
            "--overwrite_output_dir to replace it, --resume_from_checkpoint latest to continue "
            "it, or choose another folder."
        )
    if holds_model and args.overwrite_output_dir and args.resume_from_checkpoint is None:
        if accelerator.is_main_process:
            shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
            ModelFolder(out).clear()
        accelerator.wait_for_everyone()
