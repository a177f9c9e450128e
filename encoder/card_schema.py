"""The data card schema, declared once: one dataclass per section of the ``interestbert:`` block, each field with
its help text (in the style of peft's configs). `check_section` validates a section against its class and writes
every message (an unknown key with the nearest known one, a missing key, a value outside its choices);
`schema_markdown` writes the schema table of the README from the same fields.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field

from .errors import DataCardError, excerpt

GENERATORS = ("synthetic-shop",)


def _help(text: str, default=dataclasses.MISSING, choices: tuple | None = None, **kwargs):
    metadata = {"help": text, **({"choices": choices} if choices else {})}
    if default is dataclasses.MISSING and "default_factory" not in kwargs:
        return field(metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


@dataclass(frozen=True, kw_only=True)
class FileSpec:
    """How to read one file of a card (the keys every file section has): delimited text, Parquet or JSON Lines."""

    path: str = _help("The file, relative to --data-dir (it may not leave it); `.gz` is read compressed.")
    format: str = _help("`infer` (Parquet for `.parquet`/`.pq`, JSON Lines for `.jsonl`/`.ndjson`, optionally "
                        "`.gz`; else delimited text), `csv` (any delimited text), `parquet` or `jsonl`. "
                        "`separator`, `header`, `names`, `encoding` and `quoting` apply to delimited text only; in "
                        "Parquet and JSON Lines a row's number is reported as its line.", "infer",
                        choices=("infer", "csv", "parquet", "jsonl"))
    columns: dict[str, str] = _help("Our field names -> the file's column names; every field beside the ids and "
                                    "the timestamp is a field the templates may read.")
    separator: str = _help("Field separator, any string; one character follows CSV quoting rules.", ",")
    header: bool = _help("Whether the first line holds the column names.", True)
    names: tuple[str, ...] | None = _help("The column names of a file without a header line.", None)
    encoding: str = _help("Text encoding (utf-8, latin-1, ...).", "utf-8")
    compression: str = _help("`infer` (gzip for `.gz`), `gzip` or `none`.", "infer",
                             choices=("infer", "gzip", "none"))
    quoting: str = _help("`minimal` (CSV quotes) or `none` (quotes are plain characters).", "minimal",
                         choices=("minimal", "none"))


@dataclass(frozen=True, kw_only=True)
class EventsSection(FileSpec):
    """``interestbert.events``: one row per interaction; columns ``user_id``, ``item_id``, ``timestamp``."""

    action: str = _help("Template phrasing an event's action from its fields, e.g. `rated {{ rating | int }}/5`.",
                        "interacted")


@dataclass(frozen=True, kw_only=True)
class ItemsSection(FileSpec):
    """``interestbert.items``: one row per catalogue item; column ``item_id``."""

    text: str = _help("Template rendering an item's text from its fields, e.g. `{{ title }} ({{ genres }})`.")
    id_map: dict | None = _help("A file section mapping event item ids (column `item_id`) to items-file ids "
                                "(column `key`).", None)


@dataclass(frozen=True, kw_only=True)
class IdMapSection(FileSpec):
    """``interestbert.items.id_map``: columns ``item_id`` (as in the events) and ``key`` (as in the items)."""


@dataclass(frozen=True, kw_only=True)
class SwitchesSection(FileSpec):
    """``interestbert.switches``: true interest switches (synthetic data); columns ``user_id``, ``event_index``."""


@dataclass(frozen=True, kw_only=True)
class VerbalisationSection:
    """``interestbert.verbalisation``: how events become a history text."""

    event: str = _help("Template of one event from `item` (the item text), `action` and the item fields.")
    separator: str = _help("Joins the event texts of a history (a non-empty string).", "\n")


@dataclass(frozen=True, kw_only=True)
class GeneratorSection:
    """``interestbert.generator``: a built-in generator that writes the card's files (no --data-dir needed)."""

    name: str = _help("The generator.", choices=GENERATORS)
    seed: int | None = _help("Its seed.", None)
    n_users: int | None = _help("Users to generate.", None)
    n_items: int | None = _help("Catalogue size.", None)
    min_events: int | None = _help("Fewest events per user.", None)
    max_events: int | None = _help("Most events per user.", None)


@dataclass(frozen=True, kw_only=True)
class InterestbertBlock:
    """``interestbert``: the block of a Hub dataset card's front matter that maps raw files onto the data model."""

    events: dict = _help("The events file (see `interestbert.events`).")
    items: dict = _help("The items file (see `interestbert.items`).")
    verbalisation: dict = _help("How events are written as text (see `interestbert.verbalisation`).")
    switches: dict | None = _help("True interest switches, when the data has them.", None)
    generator: dict | None = _help("A built-in generator of the files.", None)
    format_version: int = _help("The card format's version.", 1)


SECTIONS = {"interestbert": InterestbertBlock, "interestbert.events": EventsSection,
            "interestbert.items": ItemsSection, "interestbert.items.id_map": IdMapSection,
            "interestbert.verbalisation": VerbalisationSection, "interestbert.switches": SwitchesSection,
            "interestbert.generator": GeneratorSection}
FILE_KEYS = tuple(f.name for f in dataclasses.fields(FileSpec))


def required(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


def check_section(value: object, key: str, where: str) -> dict:
    """``value`` checked against the section class of ``key`` (see `SECTIONS`): a mapping, with known keys only,
    every required key present, every value with choices among them. Returns it as a dict."""
    cls = SECTIONS[key]
    if not isinstance(value, dict):
        raise DataCardError(f"{where}: key `{key}` must be a mapping, got {type(value).__name__} {excerpt(value)}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in value:
        if k not in fields:
            hint = difflib.get_close_matches(str(k), sorted(fields), n=1)
            fix = f"did you mean `{hint[0]}`?" if hint else f"the allowed keys are {sorted(fields)}."
            raise DataCardError(f"{where}: key `{key}.{k}` is unknown; {fix}")
    for k in required(cls):
        if k not in value:
            meaning = fields[k].metadata["help"].rstrip(".")
            raise DataCardError(f"{where}: key `{key}.{k}` is missing; add it ({meaning[0].lower()}{meaning[1:]}; "
                                "the shipped cards have examples).")
    for k, v in value.items():
        _check_type(v, fields[k].type, f"{key}.{k}", where)
        choices = fields[k].metadata.get("choices")
        if choices and v not in choices:
            raise DataCardError(f"{where}: key `{key}.{k}` is {excerpt(v)}; use one of {', '.join(choices)}.")
    return dict(value)


_TYPES = {"str": (str, "a string"), "bool": (bool, "true or false"), "int": (int, "an integer"),
          "dict": (dict, "a mapping"), "tuple": (list, "a list")}


def _check_type(value: object, annotation: str, key: str, where: str) -> None:
    """``value`` is of the field's declared type (``str``, ``bool``, ``int``, a mapping, a list; or null where the
    field may be None)."""
    if value is None and "None" in annotation:
        return
    expected, words = _TYPES[annotation.split("|")[0].split("[")[0].strip()]
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise DataCardError(f"{where}: key `{key}` must be {words}, got {type(value).__name__} {excerpt(value)}; "
                            "fix its value.")


def schema_markdown() -> str:
    """The README's table of every card key: section, key, required or default, meaning."""
    def cell(text: str) -> str:
        return " ".join(text.split()).replace("``", "`").replace("|", "\\|")

    lines = ["| key | required / default | meaning |", "| --- | --- | --- |"]
    for key, cls in SECTIONS.items():
        about = cell(cls.__doc__.split(": ", 1)[1])
        lines.append(f"| **`{key}`** | | {about[0].upper()}{about[1:]} |")
        for f in dataclasses.fields(cls):
            need = "required" if f.name in required(cls) else "none" if f.default is None else f"`{f.default!r}`"
            lines.append(f"| `{key}.{f.name}` | {cell(need)} | {cell(f.metadata['help'])} |")
    return "\n".join(lines) + "\n"
