"""The encoder's options: the LoRA adapter added to a base model (`LoraOptions`) and the interest horizons whose
text embeddings are summed into a history's interest vector (`parse_horizons`, `format_horizons`)."""

from __future__ import annotations

from dataclasses import dataclass, field

# The interest vector of a history: a weighted sum of the embeddings of its newest N events' texts (None: as many
# events as the token budget holds), normalised. One horizon of the whole history is plain mean pooling of its text.
WHOLE_HISTORY = ((None, 1.0),)


def parse_horizons(spec) -> tuple[tuple[int | None, float], ...]:
    """Interest horizons from ``"1:0.5,4:0.3,all:0.2"`` (newest N events : weight; ``all`` = the whole history
    within the token budget) or from pairs such as ``[[1, 0.5], [None, 0.5]]``. Weights are scaled to sum to 1."""
    if spec is None:
        return WHOLE_HISTORY
    if isinstance(spec, str):
        pairs = []
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            events, sep, weight = part.partition(":")
            try:
                n = None if events.strip().lower() == "all" else int(events)
                pairs.append((n, float(weight) if sep else 1.0))
            except ValueError:
                raise ValueError(
                    f"interest horizon {part!r} should read EVENTS:WEIGHT, e.g. '1:0.5,4:0.3,all:0.2' "
                    "(EVENTS a positive integer or 'all')."
                ) from None
    else:
        pairs = [(None if n is None else int(n), float(w)) for n, w in spec]
    if not pairs:
        raise ValueError("give at least one interest horizon, e.g. 'all:1'.")
    if any(n is not None and n < 1 for n, _ in pairs) or any(not w > 0 for _, w in pairs):
        raise ValueError(f"interest horizons need event counts >= 1 (or 'all') and positive weights, got {spec!r}.")
    if len({n for n, _ in pairs}) != len(pairs):
        raise ValueError(f"interest horizons repeat an event count: {spec!r}.")
    total = sum(w for _, w in pairs)
    return tuple((n, w / total) for n, w in pairs)


def format_horizons(horizons) -> str:
    """The inverse of `parse_horizons` for strings: ``"1:0.5,4:0.3,all:0.2"``."""
    return ",".join(f"{'all' if n is None else n}:{w:g}" for n, w in horizons)


@dataclass
class LoraOptions:
    """The LoRA adapter added to a base model (see `peft.LoraConfig`)."""

    r: int = field(default=8, metadata={"help": "Rank of the LoRA update matrices."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = lora_alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input during training."})
    target_modules: list[str] = field(
        default_factory=lambda: ["query", "key", "value", "dense"],
        metadata={"help": "Names of the linear layers that get an adapter (BERT: query, key, value, dense)."},
    )

    def __post_init__(self):
        if int(self.r) != self.r or self.r <= 0:
            raise ValueError(f"`r` should be a positive integer, got {self.r}.")
        if self.lora_alpha <= 0:
            raise ValueError(f"`lora_alpha` should be positive, got {self.lora_alpha}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"`lora_dropout` should be in [0, 1), got {self.lora_dropout}.")
        if isinstance(self.target_modules, str):
            self.target_modules = [self.target_modules]
        if not self.target_modules:
            raise ValueError(f"`target_modules` should name at least one layer, got {self.target_modules!r}.")
        self.target_modules = sorted(self.target_modules)

    def to_peft(self):
        from peft import LoraConfig

        # BERT's pooler.dense also matches "dense"; mean pooling never uses it, so it gets no adapter.
        return LoraConfig(
            r=self.r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=list(self.target_modules),
            exclude_modules=r".*pooler.*",
            bias="none",
        )
