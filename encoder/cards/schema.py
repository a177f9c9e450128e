"""The data card schema, declared once: one dataclass per section of the ``interestbert:`` block, each field with
its help text (in the style of peft's configs). A card is parsed once into these sections (`InterestbertBlock.parse`):
`check_section` checks a mapping against its class (an unknown key with the nearest known one, a missing key, a
type, a value outside its choices) and each section's ``__post_init__`` the rest, so the card travels typed.
`schema_markdown` writes the docs' schema table from the same fields.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import InitVar, dataclass, field
from typing import ClassVar

from ..errors import DataCardError, excerpt

GENERATORS = ("synthetic-shop",)


def _help(text: str, default=dataclasses.MISSING, choices: tuple | None = None, **kwargs):
    metadata = {"help": text, **({"choices": choices} if choices else {})}
    if default is dataclasses.MISSING and "default_factory" not in kwargs:
        return field(metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


class Section:
    """What every section shares: `parse` checks a YAML mapping against the section's fields (unknown keys with the
    nearest known one, missing keys, types, choices) and builds it; each section's ``__post_init__`` checks the rest.
    ``where`` (the card, for messages) is an init-only argument."""

    KEY: ClassVar[str] = ""

    @classmethod
    def parse(cls, value: object, where: str):
        """The section built from ``value`` (a mapping from the card's YAML), or a `DataCardError` naming the key."""
        return cls(**check_section(value, cls.KEY, where), where=where)

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)  # frozen: values are normalised once, in __post_init__


@dataclass(frozen=True, kw_only=True)
class FileSpec(Section):
    """How to read one file of a card (the keys every file section has): delimited text, Parquet or JSON Lines."""

    REQUIRED_COLUMNS: ClassVar[tuple[str, ...]] = ()

    path: str = _help("The file, relative to --data-dir (it may not leave it); `.gz` is read compressed.")
    format: str = _help(
        "`infer` (Parquet for `.parquet`/`.pq`, JSON Lines for `.jsonl`/`.ndjson`, optionally "
        "`.gz`; else delimited text), `csv` (any delimited text), `parquet` or `jsonl`. "
        "`separator`, `header`, `names`, `encoding` and `quoting` apply to delimited text only; in "
        "Parquet and JSON Lines a row's number is reported as its line.",
        "infer",
        choices=("infer", "csv", "parquet", "jsonl"),
    )
    columns: dict[str, str] = _help(
        "Our field names -> the file's column names; every field beside the ids and "
        "the timestamp is a field the templates may read."
    )
    separator: str = _help("Field separator, any string; one character follows CSV quoting rules.", ",")
    header: bool = _help("Whether the first line holds the column names.", True)
    names: tuple[str, ...] | None = _help("The column names of a file without a header line.", None)
    encoding: str = _help("Text encoding (utf-8, latin-1, ...).", "utf-8")
    compression: str = _help("`infer` (gzip for `.gz`), `gzip` or `none`.", "infer", choices=("infer", "gzip", "none"))
    quoting: str = _help(
        "`minimal` (CSV quotes) or `none` (quotes are plain characters).", "minimal", choices=("minimal", "none")
    )
    where: InitVar[str] = ""

    def __post_init__(self, where: str) -> None:
        key, columns = self.KEY, self.columns
        if not isinstance(columns, dict) or not columns:
            raise DataCardError(
                f"{where}: key `{key}.columns` must map field names to file columns, got {excerpt(columns)}."
            )
        for col in self.REQUIRED_COLUMNS:
            if col not in columns:
                raise DataCardError(
                    f"{where}: key `{key}.columns.{col}` is missing; name the file column that holds it."
                )
        for name in columns:
            if not str(name).isidentifier() or str(name).startswith("_"):
                raise DataCardError(
                    f"{where}: key `{key}.columns.{name}`: field names must be identifiers that do "
                    "not start with an underscore; rename it."
                )
        self._set("columns", {str(k): str(v) for k, v in columns.items()})
        if self.names is not None:
            if not isinstance(self.names, (list, tuple)) or not self.names:
                raise DataCardError(
                    f"{where}: key `{key}.names` must be a list of column names, got {excerpt(self.names)}."
                )
            self._set("names", tuple(str(n) for n in self.names))
        if self.header is False and self.names is None:
            raise DataCardError(
                f"{where}: key `{key}.names` is missing; a file without a header line needs its "
                "column names listed under `names`."
            )
        if not isinstance(self.separator, str) or not self.separator:
            raise DataCardError(f"{where}: key `{key}.separator` must be a non-empty string.")
        try:
            "".encode(self.encoding)
        except LookupError:
            raise DataCardError(
                f"{where}: key `{key}.encoding` is {excerpt(self.encoding)}, which Python does not "
                "know; use utf-8, latin-1, ascii, ..."
            ) from None


@dataclass(frozen=True, kw_only=True)
class EventsSection(FileSpec):
    """``interestbert.events``: one row per interaction; columns ``user_id``, ``item_id``, ``timestamp``."""

    KEY: ClassVar[str] = "interestbert.events"
    REQUIRED_COLUMNS: ClassVar[tuple[str, ...]] = ("user_id", "item_id", "timestamp")

    action: str = _help(
        "Template phrasing an event's action from its fields, e.g. `rated {{ rating | int }}/5`.", "interacted"
    )

    def __post_init__(self, where: str) -> None:
        super().__post_init__(where)
        if "action" in self.columns:
            raise DataCardError(
                f"{where}: key `interestbert.events.columns.action` is reserved; map the column under another name "
                "and phrase it with `interestbert.events.action`."
            )

    @property
    def fields(self) -> list[str]:
        """The event fields the action template may read: every column but the ids and the timestamp."""
        return [c for c in self.columns if c not in ("user_id", "item_id", "timestamp")]


@dataclass(frozen=True, kw_only=True)
class IdMapSection(FileSpec):
    """``interestbert.items.id_map``: columns ``item_id`` (as in the events) and ``key`` (as in the items)."""

    KEY: ClassVar[str] = "interestbert.items.id_map"
    REQUIRED_COLUMNS: ClassVar[tuple[str, ...]] = ("item_id", "key")


@dataclass(frozen=True, kw_only=True)
class ItemsSection(FileSpec):
    """``interestbert.items``: one row per catalogue item; column ``item_id``."""

    KEY: ClassVar[str] = "interestbert.items"
    REQUIRED_COLUMNS: ClassVar[tuple[str, ...]] = ("item_id",)

    text: str = _help("Template rendering an item's text from its fields, e.g. `{{ title }} ({{ genres }})`.")
    id_map: IdMapSection | None = _help(
        "A file section mapping event item ids (column `item_id`) to items-file ids (column `key`).", None
    )

    def __post_init__(self, where: str) -> None:
        super().__post_init__(where)
        if self.id_map is not None and not isinstance(self.id_map, IdMapSection):
            self._set("id_map", IdMapSection.parse(self.id_map, where))

    @property
    def fields(self) -> list[str]:
        """The item fields the templates may read: every column but the id."""
        return [c for c in self.columns if c != "item_id"]


@dataclass(frozen=True, kw_only=True)
class SwitchesSection(FileSpec):
    """``interestbert.switches``: true interest switches (synthetic data); columns ``user_id``, ``event_index``."""

    KEY: ClassVar[str] = "interestbert.switches"
    REQUIRED_COLUMNS: ClassVar[tuple[str, ...]] = ("user_id", "event_index")


@dataclass(frozen=True, kw_only=True)
class VerbalisationSection(Section):
    """``interestbert.verbalisation``: how events become a history text."""

    KEY: ClassVar[str] = "interestbert.verbalisation"

    event: str = _help("Template of one event from `item` (the item text), `action` and the item fields.")
    separator: str = _help("Joins the event texts of a history (a non-empty string).", "\n")
    where: InitVar[str] = ""

    def __post_init__(self, where: str) -> None:
        if not isinstance(self.separator, str) or not self.separator:
            raise DataCardError(
                f"{where}: key `interestbert.verbalisation.separator` must be a non-empty string, "
                f"got {excerpt(self.separator)}."
            )


@dataclass(frozen=True, kw_only=True)
class GeneratorSection(Section):
    """``interestbert.generator``: a built-in generator that writes the card's files (no --data-dir needed)."""

    KEY: ClassVar[str] = "interestbert.generator"

    name: str = _help("The generator.", choices=GENERATORS)
    seed: int | None = _help("Its seed.", None)
    n_users: int | None = _help("Users to generate.", None)
    n_items: int | None = _help("Catalogue size.", None)
    min_events: int | None = _help("Fewest events per user.", None)
    max_events: int | None = _help("Most events per user.", None)
    where: InitVar[str] = ""

    def options(self) -> dict:
        """The generator's options the card sets (those left out take the generator's defaults)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "name" and getattr(self, f.name) is not None
        }


@dataclass(frozen=True, kw_only=True)
class InterestbertBlock(Section):
    """``interestbert``: the block of a Hub dataset card's front matter that maps raw files onto the data model."""

    KEY: ClassVar[str] = "interestbert"

    events: EventsSection = _help("The events file (see `interestbert.events`).")
    items: ItemsSection = _help("The items file (see `interestbert.items`).")
    verbalisation: VerbalisationSection = _help("How events are written as text (see `interestbert.verbalisation`).")
    switches: SwitchesSection | None = _help("True interest switches, when the data has them.", None)
    generator: GeneratorSection | None = _help("A built-in generator of the files.", None)
    format_version: int = _help("The card format's version.", 1)
    data_folder: str | None = _help(
        "The folder the data is usually unpacked into (e.g. `ml-100k`): where tests and "
        "benchmarks look for it under a root of datasets.",
        None,
    )
    where: InitVar[str] = ""

    def __post_init__(self, where: str) -> None:
        for name in ("events", "items", "verbalisation", "switches", "generator"):  # in this order, as documented
            value = getattr(self, name)
            cls = _SECTION_OF[name]
            if value is not None and not isinstance(value, cls):
                self._set(name, cls.parse(value, where))


_SECTION_OF = {
    "events": EventsSection,
    "items": ItemsSection,
    "verbalisation": VerbalisationSection,
    "switches": SwitchesSection,
    "generator": GeneratorSection,
}
SECTIONS = {
    cls.KEY: cls
    for cls in (
        InterestbertBlock,
        EventsSection,
        ItemsSection,
        IdMapSection,
        VerbalisationSection,
        SwitchesSection,
        GeneratorSection,
    )
}


def required(cls) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


def check_section(value: object, key: str, where: str) -> dict:
    """``value`` checked against the section class of ``key`` (see `SECTIONS`): a mapping, with known keys only,
    every required key present, every value of its declared type and among its choices. Returns it as a dict."""
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
            raise DataCardError(
                f"{where}: key `{key}.{k}` is missing; add it ({meaning[0].lower()}{meaning[1:]}; "
                "the shipped cards have examples)."
            )
    for k, v in value.items():
        _check_type(v, fields[k].type, f"{key}.{k}", where)
        choices = fields[k].metadata.get("choices")
        if choices and v not in choices:
            raise DataCardError(f"{where}: key `{key}.{k}` is {excerpt(v)}; use one of {', '.join(choices)}.")
    return dict(value)


_TYPES = {
    "str": (str, "a string"),
    "bool": (bool, "true or false"),
    "int": (int, "an integer"),
    "dict": (dict, "a mapping"),
    "tuple": (list, "a list"),
}
_SECTION_TYPES = {cls.__name__ for cls in SECTIONS.values()}  # a nested section: a mapping in the YAML


def _check_type(value: object, annotation: str, key: str, where: str) -> None:
    """``value`` is of the field's declared type (``str``, ``bool``, ``int``, a mapping, a list; or null where the
    field may be None)."""
    if value is None and "None" in annotation:
        return
    name = annotation.split("|")[0].split("[")[0].strip()
    expected, words = _TYPES["dict" if name in _SECTION_TYPES else name]
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise DataCardError(
            f"{where}: key `{key}` must be {words}, got {type(value).__name__} {excerpt(value)}; fix its value."
        )


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
