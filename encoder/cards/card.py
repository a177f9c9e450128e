"""A data card, found (shipped, on disk or on the Hub) and parsed once into a typed `DataCard`: a Hub dataset card
whose YAML front matter maps raw log files onto interestbert's data model.

A card (`data_cards/<name>/README.md`) carries, beside the usual Hub keys, an ``interestbert:`` block::

    interestbert:
      events:                       # one row per interaction
        path: ratings.dat.gz        # relative to --data-dir; never leaves it
        separator: "::"             # any string; one character gets CSV quoting rules
        header: false
        names: [user, movie, rating, ts]    # column names when the file has no header line
        encoding: latin-1           # default utf-8
        compression: infer          # infer (from .gz), gzip or none
        quoting: minimal            # minimal (CSV quotes) or none
        columns: {user_id: user, item_id: movie, timestamp: ts, rating: rating}
        action: "rated {{ rating | int }}/5"
      items:                        # one row per catalogue item
        path: movies.dat
        columns: {item_id: id, title: title, genres: genres}
        text: "{{ title }} ({{ genres | replace('|', ', ') }})"
        id_map: {path: links.tsv, columns: {item_id: a, key: b}}   # optional: event item id -> items-file id
      verbalisation:
        event: "{{ item }}: {{ action }}"
        separator: "\\n"

`columns` maps our names onto the file's columns; every name besides the ids and the timestamp becomes a field the
templates may read. The schema is declared once, with help text, in `interestbert.encoder.cards.schema` (the docs'
table of card keys is made from it); `load_card` parses a card once into its sections and compiles its templates.
`interestbert.encoder.cards.load` reads its files. Every problem is reported as one `DataCardError` sentence that
names the card, the key or the file and line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from ..errors import DataCardError
from .files import _one_line
from .schema import EventsSection, GeneratorSection, IdMapSection, InterestbertBlock, ItemsSection, SwitchesSection
from .templates import CardTemplate


@dataclass(frozen=True)
class DataCard:
    """A parsed and checked data card.

    Attributes:
        name: The card's name (its folder name).
        path: The card's `README.md`.
        events: The events file; its columns map ``user_id``, ``item_id``, ``timestamp`` and optional fields.
        action: Template that phrases an event's action from the event fields.
        items: The items file; its columns map ``item_id`` and the text fields.
        item_text: Template that renders an item's text from its fields.
        event_text: Template that renders one event from ``item`` (the item text), ``action`` and the item fields.
        separator: Joins event texts into a history text.
        id_map: Optional file mapping event item ids (``item_id``) to items-file ids (``key``).
        switches: Optional file of true interest switches (synthetic data).
        generator: Optional built-in generator that writes the card's files.
        data_folder: The folder name the data is usually unpacked into, when the card names one.
        metadata: The rest of the front matter (pretty_name, license, ...).
    """

    name: str
    path: Path
    events: EventsSection
    action: CardTemplate
    items: ItemsSection
    item_text: CardTemplate
    event_text: CardTemplate
    separator: str
    id_map: IdMapSection | None = None
    switches: SwitchesSection | None = None
    generator: GeneratorSection | None = None
    data_folder: str | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"data card {self.name}"


# ---------------------------------------------------------------------------------------------------- parsing


def available_cards() -> list[str]:
    """Names of the cards shipped with the package."""
    root = resources.files("interestbert.data_cards")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "README.md").is_file())


def resolve_card_path(name_or_path: str | os.PathLike) -> tuple[Path, str]:
    """A card's README.md and its name: from a shipped card name, a card folder or a README path (named by its
    folder), or a dataset repo on the Hub (named by its repo id)."""
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "README.md"
    if path.is_file():
        return path, path.parent.name
    shipped = resources.files("interestbert.data_cards") / str(name_or_path) / "README.md"
    if shipped.is_file():
        return Path(str(shipped)), str(name_or_path)
    hub = _hub_card(str(name_or_path))
    if hub is not None:
        return hub, str(name_or_path)
    raise DataCardError(
        f"data card `{name_or_path}` not found: it is neither a shipped card ({', '.join(available_cards())}), "
        "a folder or README.md on disk, nor a dataset repo on the Hub (or in its cache, offline); pass one of those."
    )


def _hub_card(repo_id: str) -> Path | None:
    """The ``README.md`` of the dataset repo ``repo_id`` (published by ``interestbert cards publish``), fetched or
    found in the cache offline; None when it is no repo id or cannot be had."""
    from ..packaged import REPO_ID

    if not REPO_ID.match(repo_id) or os.path.exists(repo_id):
        return None
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, "README.md", repo_type="dataset"))
    except Exception:  # noqa: BLE001 - absent, unreachable or offline without a copy: "not found" below
        return None


def load_card(name_or_path: str | os.PathLike) -> DataCard:
    """Reads and checks a card; raises `DataCardError` with the card, key and fix on any problem."""
    path, name = resolve_card_path(name_or_path)
    where = f"data card {name} ({path})"
    meta = _front_matter(path, where)
    if not isinstance(meta, dict) or "interestbert" not in meta:
        raise DataCardError(f"{where}: the front matter has no `interestbert:` block; add one (see data_cards/README).")
    block = InterestbertBlock.parse(meta.pop("interestbert"), where)
    events, items = block.events, block.items
    action = CardTemplate.compile(events.action, f"{where}: key `interestbert.events.action`", events.fields)
    item_text = CardTemplate.compile(items.text, f"{where}: key `interestbert.items.text`", items.fields)
    event_text = CardTemplate.compile(
        block.verbalisation.event, f"{where}: key `interestbert.verbalisation.event`", ["item", "action", *items.fields]
    )
    return DataCard(
        name=name,
        path=path,
        events=events,
        action=action,
        items=items,
        item_text=item_text,
        event_text=event_text,
        separator=block.verbalisation.separator,
        id_map=items.id_map,
        switches=block.switches,
        generator=block.generator,
        data_folder=block.data_folder,
        metadata=meta,
    )


MAX_CARD_BYTES = 4 << 20  # a card README: the front matter and its prose
MAX_FRONT_MATTER_BYTES = 256 << 10
MAX_YAML_NODES = 20_000  # after expanding aliases: the shipped cards have a few hundred


def _front_matter(path: Path, where: str) -> object:
    """The card's YAML front matter, parsed safely: the file bounded in size, UTF-8, and its YAML bounded in nodes
    with every alias expanded (a "billion laughs" card is refused before anything walks it)."""
    try:
        size = path.stat().st_size
        if size > MAX_CARD_BYTES:
            raise DataCardError(
                f"{where}: the card is {size:,} bytes, more than the {MAX_CARD_BYTES >> 20} MiB a card "
                "README may have; keep data out of the card and point at it with `path`."
            )
        raw = path.read_bytes()
    except OSError as err:
        raise DataCardError(f"{where} cannot be read ({_one_line(err)}); check the path and its permissions.") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataCardError(f"{where}: line {line} is not valid UTF-8; save the card as UTF-8.") from None
    if not text.startswith("---"):
        raise DataCardError(f"{where}: the file has no YAML front matter; start it with a `---` line.")
    parts = text.split("\n---", 1)
    if len(parts) != 2:
        raise DataCardError(f"{where}: the YAML front matter is not closed; end it with a `---` line.")
    source = parts[0].lstrip("-\n")
    if len(source) > MAX_FRONT_MATTER_BYTES:
        raise DataCardError(
            f"{where}: the YAML front matter has {len(source):,} characters, more than "
            f"{MAX_FRONT_MATTER_BYTES >> 10} KiB; shorten it."
        )
    try:
        root = yaml.compose(source, Loader=yaml.SafeLoader)
        _check_yaml_size(root, where)
        return yaml.safe_load(source) or {}
    except yaml.YAMLError as err:
        raise DataCardError(
            f"{where}: the YAML front matter does not parse ({_one_line(err)[:300]}); fix its syntax."
        ) from None
    except RecursionError:
        raise DataCardError(f"{where}: the YAML front matter is nested too deeply to read; flatten it.") from None


def _check_yaml_size(root, where: str) -> None:
    """Refuses YAML whose node tree, with every alias expanded, exceeds `MAX_YAML_NODES` (or that refers to itself)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise DataCardError(
                f"{where}: the YAML front matter holds a node that contains itself (through an alias); "
                "remove the alias."
            )
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        open_nodes.discard(key)
        sizes[key] = total
        if total > MAX_YAML_NODES:
            raise DataCardError(
                f"{where}: the YAML front matter expands to more than {MAX_YAML_NODES:,} values (its "
                "aliases repeat nodes); write the card without nested aliases."
            )
        return total

    if root is not None:
        size(root)
