"""interestbert.encoder: the model and its inputs.

Data cards and their loader, the verbaliser, the LoRA `InterestEncoder`. This package never imports
`interestbert.finetune` or `interestbert.inference`.
"""

from .cards import CardData, DataCard, available_cards, load_card, load_card_data
from .errors import DataCardError, InterestBertError
from .model import DEFAULT_BASE_MODEL, InterestEncoder, LoraOptions
from .verbalise import Verbaliser

__all__ = [
    "DEFAULT_BASE_MODEL",
    "CardData",
    "DataCard",
    "DataCardError",
    "InterestBertError",
    "InterestEncoder",
    "LoraOptions",
    "Verbaliser",
    "available_cards",
    "load_card",
    "load_card_data",
]
