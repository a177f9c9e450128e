"""interestbert.encoder: the model and its inputs.

Data cards and their loader, the verbaliser, the LoRA `InterestEncoder`, the `StrategyHead`, the `SequenceHead`,
the `DriftMonitor`, the scorers that rank items for them (`interestbert.encoder.scoring`) and the `ModelFolder`
that owns a saved model's layout and card. This package never imports `interestbert.finetune` or
`interestbert.inference`.
"""

from .cards import CardData, DataCard, available_cards, load_card, load_card_data
from .drift import DriftConfig, DriftEvent, DriftMonitor, Event, History, histories_from_verbaliser
from .errors import DataCardError, InterestBertError
from .head import StrategyHead
from .model import DEFAULT_BASE_MODEL, InterestEncoder, LoraOptions
from .model_card import ModelCardData
from .model_folder import ModelFolder
from .packaged import register_in_hub_cache
from .scoring import (PopularityScorer, Scorer, SequenceHeadScorer, StrategyHeadScorer, TextCosineScorer,
                      scorer_for)
from .sequence import SequenceHead, SequenceOptions
from .verbalise import Verbaliser

__all__ = [
    "DEFAULT_BASE_MODEL",
    "CardData",
    "DataCard",
    "DataCardError",
    "DriftConfig",
    "DriftEvent",
    "DriftMonitor",
    "Event",
    "History",
    "InterestBertError",
    "InterestEncoder",
    "LoraOptions",
    "ModelCardData",
    "ModelFolder",
    "PopularityScorer",
    "Scorer",
    "SequenceHeadScorer",
    "SequenceHead",
    "SequenceOptions",
    "StrategyHead",
    "StrategyHeadScorer",
    "TextCosineScorer",
    "Verbaliser",
    "available_cards",
    "histories_from_verbaliser",
    "load_card",
    "load_card_data",
    "register_in_hub_cache",
    "scorer_for",
]
