"""interestbert.encoder: the model and its inputs.

The model core is flat: the LoRA `InterestEncoder` (`model`), its fast inference paths (`backends`), the packaged
default base model (`packaged`), the `Verbaliser` (`verbalise`), the `StrategyHead` (`head`), the `SequenceHead`
(`sequence`) and the scorers that rank items for them (`scoring`). Three wings hold the rest: `cards` (data cards
and their loader), `drift` (the `DriftMonitor` and how it is fitted) and `hub` (the saved folder, its model card and
publishing). Every public name is importable from here. This package never imports `interestbert.finetune` or
`interestbert.inference`.
"""

from importlib import import_module

from .errors import DataCardError, InterestBertError

# Everything else is imported on first use (PEP 562), so that `interestbert --help` or an error sentence does not
# wait for torch and transformers to load.
_LAZY = {
    "cards": ("CardData", "DataCard", "available_cards", "load_card", "load_card_data"),
    "drift": ("DriftConfig", "DriftEvent", "DriftMonitor", "Event", "History", "histories_from_verbaliser"),
    "hub": ("ModelCardData", "ModelFolder"),
    "head": ("StrategyHead",),
    "model": ("DEFAULT_BASE_MODEL", "InterestEncoder"),
    "options": ("LoraOptions",),
    "packaged": ("register_in_hub_cache",),
    "scoring": (
        "PopularityScorer",
        "Scorer",
        "SequenceHeadScorer",
        "StrategyHeadScorer",
        "TextCosineScorer",
        "scorer_for",
    ),
    "sequence": ("SequenceHead", "SequenceOptions"),
    "verbalise": ("Verbaliser",),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


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
