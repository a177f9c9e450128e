"""interestbert.encoder: the model and its inputs.

Data cards and their loader, the verbaliser, the LoRA `InterestEncoder`, the `StrategyHead`, the `SequenceHead`
and the `DriftMonitor`. This package never imports
`interestbert.finetune` or `interestbert.inference`.
"""

from .cards import CardData, DataCard, available_cards, load_card, load_card_data
from .drift import DriftConfig, DriftEvent, DriftMonitor, Event, History, histories_from_verbaliser
from .errors import DataCardError, InterestBertError
from .head import StrategyHead
from .model import DEFAULT_BASE_MODEL, InterestEncoder, LoraOptions
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
    "SequenceHead",
    "SequenceOptions",
    "StrategyHead",
    "Verbaliser",
    "available_cards",
    "histories_from_verbaliser",
    "load_card",
    "load_card_data",
]
