"""Options of `interestbert finetune`, as a dataclass with help text (names follow transformers)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from interestbert.encoder.model import DEFAULT_BASE_MODEL

# Options that do not change the trained weights: a checkpoint made with other values may be resumed. The text
# prior is fitted after the encoder's training, on the finished sequence head: no checkpoint holds anything of it.
NOT_IN_CONFIG = {
    "output_dir",
    "overwrite_output_dir",
    "resume_from_checkpoint",
    "save_steps",
    "save_total_limit",
    "logging_steps",
    "per_device_eval_batch_size",
    "disable_tqdm",
    "do_test",
    "eval_on_test_baselines",
    "debug",
    "sequence_text_prior",
}


@dataclass
class FinetuneArguments:
    card: str = field(metadata={"help": "A shipped data card name or a path to a card."})
    output_dir: str = field(metadata={"help": "Where the best model, checkpoints and all_results.json go."})
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder with the card's files (generated cards: optional)."}
    )
    model_name_or_path: str = field(default=DEFAULT_BASE_MODEL, metadata={"help": "Base model id or folder."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a different model in output_dir."})
    max_seq_length: int = field(default=128, metadata={"help": "Token budget of a history text."})
    interest_horizons: str = field(
        default="1:0.5,4:0.3,all:0.2",
        metadata={
            "help": "The interest vector: the newest N events' text embeddings, weighted and summed "
            "(N:WEIGHT,...; all = the whole history within max_seq_length). 'all:1' is plain mean "
            "pooling of the whole history."
        },
    )
    max_item_length: int = field(default=48, metadata={"help": "Token budget of an item text (contrastive term)."})
    max_train_prefixes_per_user: int | None = field(
        default=None, metadata={"help": "Train on each user's last K history prefixes only (default: all)."}
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Examples per process per step."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Histories per forward pass in eval."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    learning_rate: float = field(default=5e-4, metadata={"help": "Peak learning rate of the LoRA adapter."})
    head_learning_rate: float = field(
        default=5e-3,
        metadata={
            "help": "Peak learning rate of the strategy head (its "
            "warm-up, and the joint steps unless "
            "--joint_head_learning_rate is set)."
        },
    )
    joint_head_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate of the strategy head in the joint steps, after its "
            "warm-up (default: --head_learning_rate; 0: the warmed-up head is held still "
            "and only the LoRA adapter trains)."
        },
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Share of steps of linear warm-up."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping (0: off)."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the training examples."})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps; overrides num_train_epochs when > 0."})
    max_time_minutes: float | None = field(
        default=None, metadata={"help": "Stop training after this long (then evaluate and save the best)."}
    )
    eval_steps: int = field(default=200, metadata={"help": "Evaluate on validation every N steps (and at the end)."})
    max_eval_users: int | None = field(
        default=2000, metadata={"help": "Validation users scored during training (a fixed sample; None: all)."}
    )
    early_stopping_patience: int | None = field(
        default=3, metadata={"help": "Stop after N evaluations without a better validation NDCG@10."}
    )
    save_steps: int = field(default=500, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep only the last K checkpoints."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "A checkpoint folder or `latest`."})
    seed: int = field(default=42, metadata={"help": "Seed of the adapter init, data order and dropout."})
    ce_weight: float = field(default=1.0, metadata={"help": "Weight of the strategy head's cross-entropy."})
    contrastive_weight: float = field(
        default=0.2, metadata={"help": "Weight of the in-batch history/next-item text contrastive term."}
    )
    temperature: float = field(default=0.05, metadata={"help": "Temperature of the contrastive term."})
    full_softmax_max_items: int = field(
        default=50_000, metadata={"help": "Catalogues larger than this use a sampled softmax."}
    )
    num_negatives: int = field(default=8192, metadata={"help": "Uniform negatives of the sampled softmax."})
    head_warmup_epochs: int = field(
        default=100,
        metadata={
            "help": "Before the joint training, fit the head alone "
            "for at most N epochs on frozen-encoder history "
            "vectors (encoded once), keeping the epoch with "
            "the best validation NDCG@10: cheap, and a strong "
            "start on a CPU budget (0: off)."
        },
    )
    head_warmup_patience: int = field(
        default=10, metadata={"help": "Stop the head warm-up after N epochs without a better validation NDCG@10."}
    )
    head_warmup_max_examples: int | None = field(
        default=20_000,
        metadata={
            "help": "Training examples encoded for the head warm-up (a fixed seeded sample "
            "when there are more; None: all)."
        },
    )
    head_init_scale: float = field(default=20.0, metadata={"help": "A starts as this times the item text embeddings."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["query", "key", "value", "dense"], metadata={"help": "Layers that get an adapter."}
    )
    sequence_head: bool = field(
        default=False,
        metadata={
            "help": "After the encoder, also train a sequence head: a "
            "small causal transformer over the newest items' "
            "text embeddings plus learned item vectors, "
            "SASRec-style (minutes on a CPU). evaluate and "
            "recommend use it when the model has one."
        },
    )
    sequence_dim: int = field(default=128, metadata={"help": "Width of the sequence head."})
    sequence_layers: int = field(default=2, metadata={"help": "Transformer layers of the sequence head."})
    sequence_attention_heads: int = field(default=2, metadata={"help": "Attention heads of the sequence head."})
    sequence_dropout: float = field(default=0.3, metadata={"help": "Dropout of the sequence head."})
    sequence_max_events: int = field(default=50, metadata={"help": "Newest events the sequence head reads."})
    sequence_epochs: int = field(default=200, metadata={"help": "Most epochs of the sequence head."})
    sequence_learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate of the sequence head."})
    sequence_batch_size: int = field(default=128, metadata={"help": "Users per step of the sequence head."})
    sequence_patience: int = field(
        default=10, metadata={"help": "Stop the sequence head after N epochs without a better validation NDCG@10."}
    )
    sequence_max_minutes: float | None = field(
        default=None, metadata={"help": "Stop the sequence head's training after this long."}
    )
    sequence_text_prior: bool = field(
        default=True,
        metadata={
            "help": "Then fit the sequence head's text prior (the "
            "item texts' similarity to the newest events, for rare items) on validation; "
            "--no_sequence_text_prior: off."
        },
    )
    mixed_precision: str = field(default="auto", metadata={"help": "auto (bf16 on CUDA, none on CPU), no, bf16."})
    encode_precision: str = field(
        default="auto",
        metadata={
            "help": "How the encodings that train nothing are "
            "computed: the head warm-up's history vectors, a new head's item vectors, the "
            "validation scoring during training. auto: bf16 where the hardware computes it (CUDA; "
            "a CPU with AMX or avx512_bf16), else fp32; fp32; bf16. The test scoring at the end is "
            "fp32."
        },
    )
    logging_steps: int = field(default=10, metadata={"help": "Update the progress bar's loss every N steps."})
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bars."})
    debug: bool = field(
        default=False, metadata={"help": "Show the traceback of an error instead of its one-sentence summary."}
    )
    do_test: bool = field(default=True, metadata={"help": "Evaluate the best model on the test split at the end."})
    eval_on_test_baselines: bool = field(
        default=True, metadata={"help": "Also score popularity and the untrained base (zero-shot) on test."}
    )

    def __post_init__(self):
        positive = [
            "max_seq_length",
            "max_item_length",
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "eval_steps",
            "save_steps",
            "logging_steps",
            "lora_r",
            "num_negatives",
        ]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` should be positive, got {getattr(self, name)}.")
        if self.learning_rate <= 0 or self.head_learning_rate <= 0:
            raise ValueError(f"learning rates should be positive, got {self.learning_rate}, {self.head_learning_rate}.")
        if self.joint_head_learning_rate is not None and self.joint_head_learning_rate < 0:
            raise ValueError(f"`joint_head_learning_rate` should be >= 0, got {self.joint_head_learning_rate}.")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError("set `num_train_epochs` > 0 or `max_steps` > 0.")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"`warmup_ratio` should be in [0, 1), got {self.warmup_ratio}.")
        if self.ce_weight < 0 or self.contrastive_weight < 0 or self.ce_weight + self.contrastive_weight == 0:
            raise ValueError("`ce_weight` and `contrastive_weight` should be >= 0 and not both 0.")
        if self.head_warmup_max_examples is not None and self.head_warmup_max_examples <= 0:
            raise ValueError(f"`head_warmup_max_examples` should be positive, got {self.head_warmup_max_examples}.")
        if self.head_warmup_patience <= 0:
            raise ValueError(f"`head_warmup_patience` should be positive, got {self.head_warmup_patience}.")
        if self.head_warmup_epochs < 0:
            raise ValueError(f"`head_warmup_epochs` should be >= 0, got {self.head_warmup_epochs}.")
        from interestbert.encoder.options import parse_horizons

        parse_horizons(self.interest_horizons)  # raises with the expected form
        self.sequence_options()  # raises on a bad shape
        for name in ("sequence_epochs", "sequence_batch_size", "sequence_patience"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` should be positive, got {getattr(self, name)}.")
        if self.sequence_learning_rate <= 0:
            raise ValueError(f"`sequence_learning_rate` should be positive, got {self.sequence_learning_rate}.")
        if self.mixed_precision not in ("auto", "no", "bf16"):
            raise ValueError(f"`mixed_precision` should be auto, no or bf16, got {self.mixed_precision!r}.")
        if self.encode_precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"`encode_precision` should be auto, fp32 or bf16, got {self.encode_precision!r}.")

    def joint_head_rate(self) -> float:
        """The strategy head's peak learning rate in the joint steps (0: held as warmed up)."""
        return self.head_learning_rate if self.joint_head_learning_rate is None else self.joint_head_learning_rate

    def sequence_options(self):
        from interestbert.encoder.sequence import SequenceOptions

        return SequenceOptions(
            dim=self.sequence_dim,
            layers=self.sequence_layers,
            heads=self.sequence_attention_heads,
            dropout=self.sequence_dropout,
            max_events=self.sequence_max_events,
        )

    def sequence_training(self):
        from .sequence import SequenceTraining

        return SequenceTraining(
            epochs=self.sequence_epochs,
            learning_rate=self.sequence_learning_rate,
            batch_size=self.sequence_batch_size,
            patience=self.sequence_patience,
            max_minutes=self.sequence_max_minutes,
            seed=self.seed,
            text_prior=self.sequence_text_prior,
        )

    def result_config(self) -> dict:
        """The options that determine the trained weights (stored in checkpoints, compared on resume)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in NOT_IN_CONFIG}

    def to_dict(self) -> dict:
        return asdict(self)
