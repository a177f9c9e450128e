"""Settings the benchmarks share: each dataset's CPU schedule, the token budget and learning rates, where a
card's data lives under a root of datasets (the card's own ``data_folder``: the cards are the one registry), and
the line that names the hardware."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from interestbert.encoder.cards import load_card
from interestbert.encoder.sequence import SequenceOptions


def data_dir_of(card: str, root: Path) -> Path | None:
    """The folder of ``card``'s data under ``root`` (``../shared/data``), from the card's ``data_folder``; None for
    a card that generates its data (synthetic-shop)."""
    folder = load_card(card).data_folder
    return None if folder is None else Path(root) / folder


# Shorter CPU schedules than a GPU would use: a step cap and a time cap on the joint training (the head warm-up
# samples at most `head_warmup_max_examples` prefixes); ml-1m trains on the last K prefixes per user, and its
# sequence head reads the newest 200 events, as SASRec's paper does on MovieLens.
DATASETS = {
    "amazon-beauty": dict(prefixes=None, max_steps=250, minutes=12),
    "amazon-office": dict(prefixes=None, max_steps=300, minutes=12),
    "movielens-100k": dict(prefixes=None, max_steps=250, minutes=12),
    "movielens-1m": dict(prefixes=4, max_steps=250, minutes=15, sequence_events=200, sequence_minutes=30),
}


def sequence_events(name: str) -> int:
    """How many newest events a dataset's sequence head reads (200 on ml-1m, the product's default elsewhere)."""
    return DATASETS.get(name, {}).get("sequence_events", SequenceOptions.max_events)


MAX_SEQ_LENGTH = 128
# A gentle adapter and a quicker head: in short CPU runs the head (one row per item) is what learns the catalogue.
LORA_LR, HEAD_LR = 1e-4, 5e-3
SEQUENCE_MINUTES = 10  # the sequence head (`--sequence_head`) trains after the encoder; ml-1m: `sequence_minutes`


def sequence_minutes(name: str) -> float:
    return DATASETS[name].get("sequence_minutes", SEQUENCE_MINUTES)


def hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    model = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.machine(),
    )
    return f"CPU {model}, {torch.get_num_threads()} threads"
