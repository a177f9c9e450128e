"""Data cards: a Hub dataset card whose YAML front matter maps raw log files onto interestbert's data model.

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
templates may read. The schema is declared once, with help text, in `interestbert.encoder.card_schema` (the README's
table of card keys is made from it). `load_card_data` turns a card and a data folder into `datasets.Dataset`s of
events and items (`interestbert.encoder.card_files` reads the files). Every problem is reported as one
`DataCardError` sentence that names the card, the key or the file and line.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from .card_files import _one_line, check_finite, int_column, read_table
from .card_schema import FILE_KEYS, FileSpec, check_section
from .errors import DataCardError, excerpt
from .templates import CardTemplate

EVENT_FIELDS = ("user_id", "item_id", "timestamp", "action")


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
        generator: Optional built-in generator that writes the card's files (``{"name": ..., **options}``).
        metadata: The rest of the front matter (pretty_name, license, ...).
    """

    name: str
    path: Path
    events: FileSpec
    action: CardTemplate
    items: FileSpec
    item_text: CardTemplate
    event_text: CardTemplate
    separator: str
    id_map: FileSpec | None = None
    switches: FileSpec | None = None
    generator: dict | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"data card {self.name}"


@dataclass
class CardData:
    """What a card yields from a data folder.

    Attributes:
        events: ``user_id``, ``item_id``, ``timestamp``, ``action``; users in order of first appearance, each
            user's events by timestamp, ties in file order.
        items: ``item_id``, ``text`` and the card's item fields, in file order (the whole catalogue).
        switches: True interest switches (``user_id``, ``event_index``, ``timestamp``, ...) when the data has them.
        stats: Counts for `interestbert cards validate`.
    """

    card: DataCard
    events: object  # datasets.Dataset
    items: object  # datasets.Dataset
    switches: object | None
    stats: dict


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
    from .hub import REPO_ID

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
    block = check_section(meta.pop("interestbert"), "interestbert", where)
    ev = check_section(block["events"], "interestbert.events", where)
    events = _file_spec(ev, "interestbert.events", where, required_columns=("user_id", "item_id", "timestamp"))
    if "action" in events.columns:
        raise DataCardError(
            f"{where}: key `interestbert.events.columns.action` is reserved; map the column under another name "
            "and phrase it with `interestbert.events.action`."
        )
    event_fields = [c for c in events.columns if c not in ("user_id", "item_id", "timestamp")]
    action = CardTemplate.compile(ev.get("action", "interacted"), f"{where}: key `interestbert.events.action`",
                                  event_fields)

    it = check_section(block["items"], "interestbert.items", where)
    items = _file_spec(it, "interestbert.items", where, required_columns=("item_id",))
    item_fields = [c for c in items.columns if c != "item_id"]
    item_text = CardTemplate.compile(it["text"], f"{where}: key `interestbert.items.text`", item_fields)
    id_map = None
    if it.get("id_map") is not None:
        im = check_section(it["id_map"], "interestbert.items.id_map", where)
        id_map = _file_spec(im, "interestbert.items.id_map", where, required_columns=("item_id", "key"))

    vb = check_section(block["verbalisation"], "interestbert.verbalisation", where)
    event_text = CardTemplate.compile(vb["event"], f"{where}: key `interestbert.verbalisation.event`",
                                      ["item", "action", *item_fields])
    separator = vb.get("separator", "\n")
    if not isinstance(separator, str) or not separator:
        raise DataCardError(f"{where}: key `interestbert.verbalisation.separator` must be a non-empty string, "
                            f"got {excerpt(separator)}.")

    switches = None
    if block.get("switches") is not None:
        sw = check_section(block["switches"], "interestbert.switches", where)
        switches = _file_spec(sw, "interestbert.switches", where, required_columns=("user_id", "event_index"))
    generator = None
    if block.get("generator") is not None:
        generator = check_section(block["generator"], "interestbert.generator", where)
    return DataCard(name=name, path=path, events=events, action=action, items=items, item_text=item_text,
                    event_text=event_text, separator=separator, id_map=id_map, switches=switches,
                    generator=generator, metadata=meta)


MAX_CARD_BYTES = 4 << 20  # a card README: the front matter and its prose
MAX_FRONT_MATTER_BYTES = 256 << 10
MAX_YAML_NODES = 20_000  # after expanding aliases: the shipped cards have a few hundred


def _front_matter(path: Path, where: str) -> object:
    """The card's YAML front matter, parsed safely: the file bounded in size, UTF-8, and its YAML bounded in nodes
    with every alias expanded (a "billion laughs" card is refused before anything walks it)."""
    try:
        size = path.stat().st_size
        if size > MAX_CARD_BYTES:
            raise DataCardError(f"{where}: the card is {size:,} bytes, more than the {MAX_CARD_BYTES >> 20} MiB a card "
                                "README may have; keep data out of the card and point at it with `path`.")
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
        raise DataCardError(f"{where}: the YAML front matter has {len(source):,} characters, more than "
                            f"{MAX_FRONT_MATTER_BYTES >> 10} KiB; shorten it.")
    try:
        root = yaml.compose(source, Loader=yaml.SafeLoader)
        _check_yaml_size(root, where)
        return yaml.safe_load(source) or {}
    except yaml.YAMLError as err:
        raise DataCardError(f"{where}: the YAML front matter does not parse ({_one_line(err)[:300]}); fix its "
                            "syntax.") from None
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
            raise DataCardError(f"{where}: the YAML front matter holds a node that contains itself (through an alias); "
                                "remove the alias.")
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        open_nodes.discard(key)
        sizes[key] = total
        if total > MAX_YAML_NODES:
            raise DataCardError(f"{where}: the YAML front matter expands to more than {MAX_YAML_NODES:,} values (its "
                                "aliases repeat nodes); write the card without nested aliases.")
        return total

    if root is not None:
        size(root)


def _file_spec(raw: dict, key: str, where: str, required_columns: tuple[str, ...]) -> FileSpec:
    columns = raw["columns"]
    if not isinstance(columns, dict) or not columns:
        raise DataCardError(f"{where}: key `{key}.columns` must map field names to file columns, got "
                            f"{excerpt(columns)}.")
    for col in required_columns:
        if col not in columns:
            raise DataCardError(f"{where}: key `{key}.columns.{col}` is missing; name the file column that holds it.")
    for name, col in columns.items():
        if not str(name).isidentifier() or str(name).startswith("_"):
            raise DataCardError(f"{where}: key `{key}.columns.{name}`: field names must be identifiers that do "
                                "not start with an underscore; rename it.")
    spec = {k: v for k, v in raw.items() if k in FILE_KEYS}
    spec["columns"] = {str(k): str(v) for k, v in columns.items()}
    if "names" in spec:
        if not isinstance(spec["names"], list) or not spec["names"]:
            raise DataCardError(f"{where}: key `{key}.names` must be a list of column names, got "
                                f"{excerpt(spec['names'])}.")
        spec["names"] = tuple(str(n) for n in spec["names"])
    if spec.get("header") is False and "names" not in spec:
        raise DataCardError(f"{where}: key `{key}.names` is missing; a file without a header line needs its "
                            "column names listed under `names`.")
    if not isinstance(spec.get("separator", ","), str) or not spec.get("separator", ","):
        raise DataCardError(f"{where}: key `{key}.separator` must be a non-empty string.")
    try:
        "".encode(spec.get("encoding", "utf-8"))
    except LookupError:
        raise DataCardError(f"{where}: key `{key}.encoding` is {excerpt(spec['encoding'])}, which Python does not "
                            "know; use utf-8, latin-1, ascii, ...") from None
    return FileSpec(**spec)


# ---------------------------------------------------------------------------------------------------- loading


def load_card_data(card: DataCard | str | os.PathLike, data_dir: str | os.PathLike | None = None) -> CardData:
    """Reads a card's files into events and items.

    Args:
        card: A `DataCard`, a shipped card name or a path to a card.
        data_dir: The folder holding the card's files. A card with a ``generator`` (synthetic-shop) may omit it:
            its data is then generated into a temporary folder and read from there.

    Returns:
        `CardData` with ``events`` and ``items`` as `datasets.Dataset`.

    Example:
        >>> data = load_card_data("movielens-100k", "../shared/data/ml-100k")  # doctest: +SKIP
        >>> data.events[0]  # doctest: +SKIP
        {'user_id': '1', 'item_id': '168', 'timestamp': 874965478, 'action': 'rated 5/5'}
    """
    if not isinstance(card, DataCard):
        card = load_card(card)
    if data_dir is None:
        if card.generator is None:
            raise DataCardError(f"{card.where}: --data-dir is required; point it at the folder holding "
                                f"{card.events.path}.")
        with tempfile.TemporaryDirectory(prefix=f"interestbert-{card.name}-") as tmp:
            generate_card_files(card, tmp)
            return _load(card, Path(tmp))
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataCardError(f"{card.where}: --data-dir {data_dir} is not a folder; pass the folder that holds "
                            f"{card.events.path}.")
    return _load(card, data_dir)


def generate_card_files(card: DataCard, output_dir: str | os.PathLike) -> dict:
    """Runs a generator card's built-in generator into ``output_dir``; returns its counts."""
    if card.generator is None:
        raise DataCardError(f"{card.where} has no `generator`; only generated cards (synthetic-shop) can be generated.")
    from . import synthetic  # local: only generated cards need it

    options = {k: v for k, v in card.generator.items() if k != "name"}
    return synthetic.generate(output_dir, **options)


def load_items(card: DataCard, data_dir: Path):
    """The catalogue: ``(datasets.Dataset of item_id, text and the item fields, {item_id: row})``; item ids must
    be unique."""
    import datasets

    where = f"data card {card.name}"
    it = read_table(card.items, data_dir, where)
    item_ids = it.columns["item_id"]
    seen: dict[str, int] = {}
    for i, item in enumerate(item_ids):
        if item in seen:
            raise DataCardError(f"{where}: file {it.path} line {it.lines[i]}: item `{item}` appears again (first on "
                                f"line {it.lines[seen[item]]}); item ids must be unique.")
        seen[item] = i
    fields = {k: v for k, v in it.columns.items() if k != "item_id"}
    check_finite(it, fields, where)
    texts = [t.strip() for t in card.item_text.render_table(fields, len(it), it)]
    items = datasets.Dataset.from_dict(
        {"item_id": item_ids, "text": texts, **fields},
        features=datasets.Features({k: datasets.Value("string") for k in ["item_id", "text", *fields]}),
    )
    return items, seen


def load_switches(card: DataCard, data_dir: Path):
    """The card's true interest switches as a `datasets.Dataset`, or None when it has none."""
    import datasets

    if card.switches is None:
        return None
    where = f"data card {card.name}"
    sw = read_table(card.switches, data_dir, where)
    cols = dict(sw.columns)
    cols["event_index"] = int_column(cols["event_index"], sw, "event_index", where)
    if "timestamp" in cols:
        cols["timestamp"] = int_column(cols["timestamp"], sw, "timestamp", where)
    return datasets.Dataset.from_dict(cols)


def _load(card: DataCard, data_dir: Path) -> CardData:
    import datasets

    where = f"data card {card.name}"
    ev = read_table(card.events, data_dir, where)
    if len(ev) == 0:
        raise DataCardError(f"{where}: file {ev.path} has no events; point the card at a file with rows.")
    items, seen = load_items(card, data_dir)
    it_path = card.items.path

    # events: map ids through id_map, check the catalogue, sort
    event_items = ev.columns["item_id"]
    if card.id_map is not None:
        mp = read_table(card.id_map, data_dir, where)
        mapping = dict(zip(mp.columns["item_id"], mp.columns["key"]))
        missing = next((i for i, x in enumerate(event_items) if x not in mapping), None)
        if missing is not None:
            raise DataCardError(f"{where}: file {ev.path} line {ev.lines[missing]}: item `{event_items[missing]}` is "
                                f"not in {mp.path}; complete the id map or drop the event.")
        event_items = [mapping[x] for x in event_items]
    missing = next((i for i, x in enumerate(event_items) if x not in seen), None)
    if missing is not None:
        n_missing = sum(x not in seen for x in event_items)
        raise DataCardError(f"{where}: file {ev.path} line {ev.lines[missing]}: item `{event_items[missing][:80]}` "
                            f"is not in the catalogue {it_path} (nor are those of {n_missing:,} of the {len(ev):,} "
                            f"events, {100 * n_missing / len(ev):.0f} %); add them there, map them with `id_map`, or "
                            "drop the events.")
    for i, u in enumerate(ev.columns["user_id"]):
        if not u.strip():
            raise DataCardError(f"{where}: file {ev.path} line {ev.lines[i]}: `user_id` is empty; fill it or drop "
                                "the line.")
    timestamps = int_column(ev.columns["timestamp"], ev, "timestamp", where)
    event_fields = {k: v for k, v in ev.columns.items() if k not in ("user_id", "item_id", "timestamp")}
    check_finite(ev, event_fields, where)
    actions = card.action.render_table(event_fields, len(ev), ev)

    users = np.asarray(ev.columns["user_id"], dtype=object)
    codes, uniques = _factorize(users)
    order = np.lexsort((np.arange(len(users)), timestamps, codes))  # user, then time, then file order
    event_items_arr = np.asarray(event_items, dtype=object)[order]
    events = datasets.Dataset.from_dict(
        {
            "user_id": users[order].tolist(),
            "item_id": event_items_arr.tolist(),
            "timestamp": timestamps[order],
            "action": np.asarray(actions, dtype=object)[order].tolist(),
        },
        features=datasets.Features({"user_id": datasets.Value("string"), "item_id": datasets.Value("string"),
                                    "timestamp": datasets.Value("int64"), "action": datasets.Value("string")}),
    )
    switches = load_switches(card, data_dir)

    sorted_ts = timestamps[order]
    sorted_codes = codes[order]
    last = np.r_[sorted_codes[1:] != sorted_codes[:-1], True]
    has_prev = np.r_[False, sorted_codes[1:] == sorted_codes[:-1]]
    tied = np.r_[False, sorted_ts[1:] == sorted_ts[:-1]] & has_prev
    stats = {
        "users": int(len(uniques)),
        "items": int(len(set(event_items))),
        "catalogue": len(items),
        "events": len(ev),
        "first_timestamp": int(timestamps.min()),
        "last_timestamp": int(timestamps.max()),
        "min_events_per_user": int(np.bincount(codes).min()),
        "users_under_3_events": int((np.bincount(codes) < 3).sum()),
        "max_events_per_user": int(np.bincount(codes).max()),
        "last_event_tied_share": float(tied[last].mean()),
    }
    return CardData(card=card, events=events, items=items, switches=switches, stats=stats)


def _factorize(values: np.ndarray) -> tuple[np.ndarray, list]:
    """Integer codes in order of first appearance (deterministic, no hashing order)."""
    index: dict = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(index)
