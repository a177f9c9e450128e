"""Data cards: Hub dataset cards whose ``interestbert:`` block maps raw log files onto events and items.

- `schema`: the card's sections as dataclasses, with help text and checks; the docs' key table is made from them.
- `card`: finding a card (shipped, on disk or on the Hub) and parsing it once into a typed `DataCard`.
- `load`: reading its files into `datasets.Dataset`s of events and items (`load_card_data`).
- `files`: reading one file (delimited text, Parquet, JSON Lines) with file-and-line messages.
- `stream`: reading events too large for memory, grouped by user on disk (DuckDB).
- `templates`: the sandboxed templates that phrase actions, items and events.
- `draft`: drafting a card for new files (`interestbert cards init`).
- `synthetic`: the generator of the embedded synthetic-shop data.
"""

from .card import DataCard, available_cards, load_card, resolve_card_path
from .draft import Draft, draft_card
from .load import CardData, generate_card_files, load_card_data, load_items, load_switches
from .schema import (
    EventsSection,
    FileSpec,
    GeneratorSection,
    IdMapSection,
    InterestbertBlock,
    ItemsSection,
    SwitchesSection,
    VerbalisationSection,
    schema_markdown,
)
from .templates import CardTemplate

__all__ = [
    "CardData",
    "CardTemplate",
    "DataCard",
    "Draft",
    "EventsSection",
    "FileSpec",
    "GeneratorSection",
    "IdMapSection",
    "InterestbertBlock",
    "ItemsSection",
    "SwitchesSection",
    "VerbalisationSection",
    "available_cards",
    "draft_card",
    "generate_card_files",
    "load_card",
    "load_card_data",
    "load_items",
    "load_switches",
    "resolve_card_path",
    "schema_markdown",
]
