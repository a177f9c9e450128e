"""Drafting a data card from an events file and an items file (`interestbert cards init`).

`draft_card` reads each file's start (a few hundred rows): its format (delimited text, Parquet, JSON Lines),
compression, encoding, separator and header, then guesses which column is the user, the item, the time and a
rating from the column names (``user``, ``movie``, ``timestamp``, ``stars``, ...) or, without a header, from the
values (unix seconds are large integers, ratings small numbers with few distinct values), and which items column
holds the ids the events name. It returns the card's text with every guess written out, and the guesses, for the user
to read and edit; `interestbert cards validate` then checks the card against the whole files, and a wrong guess
fails there with a sentence that names the field and line.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataCardError

SAMPLE_BYTES = 256 << 10
SAMPLE_ROWS = 500
SEPARATORS = ("::", "\t", ",", ";", "|")

ROLE_NAMES = {
    "user_id": r"user|customer|member|visitor|client|reviewer|account|^uid$|person|listener|shopper|buyer",
    "item_id": r"item|product|movie|artist|track|song|asin|sku|article|book|film|video|^iid$|^pid$|course|recipe",
    "timestamp": r"time|^ts$|date|stamp|^when$|created|epoch|^day$",
    "rating": r"rating|stars|score|grade|^overall$|^vote",
}
TITLE_NAMES = r"title|name|label|headline"
TEXT_NAMES = r"genre|categor|brand|tag|kind|type|artist|author|description|subject|department|class"


@dataclass
class FileGuess:
    """What the start of one file looks like.

    Attributes:
        path: The file.
        format: ``csv``, ``parquet`` or ``jsonl``.
        compression: ``gzip`` or ``none``.
        encoding: ``utf-8`` or ``latin-1`` (delimited text).
        separator: The field separator (delimited text).
        header: Whether the first line names the columns.
        names: The column names (``col1``, ``col2``, ... when the file has none).
        rows: The sampled rows, each a list of strings in ``names`` order.
    """

    path: Path
    format: str
    compression: str = "none"
    encoding: str = "utf-8"
    separator: str | None = None
    header: bool = True
    names: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)

    def column(self, name: str) -> list[str]:
        i = self.names.index(name)
        return [r[i] for r in self.rows if i < len(r)]

    def describe(self) -> str:
        if self.format != "csv":
            return f"{self.format}{', gzip' if self.compression == 'gzip' else ''}"
        head = "a header line" if self.header else f"no header (columns named {', '.join(self.names)})"
        gz = ", gzip" if self.compression == "gzip" else ""
        return f"{self.separator!r} separated, {head}, {self.encoding}{gz}"


def sniff(path: str | os.PathLike) -> FileGuess:
    """Guesses the format, compression, encoding, separator and header of ``path`` from its start."""
    path = Path(path)
    if not path.is_file():
        raise DataCardError(f"cards init: file {path} does not exist; pass the events and items files.")
    gz = path.suffix == ".gz"
    with gzip.open(path, "rb") if gz else open(path, "rb") as f:
        head = f.read(SAMPLE_BYTES)
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    kind = (
        "parquet"
        if head.startswith(b"PAR1") or (suffixes and suffixes[-1] in (".parquet", ".pq"))
        else "jsonl"
        if suffixes and suffixes[-1] in (".jsonl", ".ndjson")
        else "csv"
    )
    guess = FileGuess(path=path, format=kind, compression="gzip" if gz else "none")
    if kind == "parquet":
        import pyarrow.parquet as pq

        batch = next(pq.ParquetFile(path).iter_batches(batch_size=SAMPLE_ROWS), None)
        guess.names = list(pq.read_schema(path).names)
        guess.rows = [[str(v) for v in row.values()] for row in batch.to_pylist()] if batch is not None else []
        return guess
    text = _decode(head, guess)
    lines = [line for line in text.splitlines()[: SAMPLE_ROWS + 1] if line.strip()]
    if len(head) == SAMPLE_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut
    if not lines:
        raise DataCardError(f"cards init: file {path} is empty; pass a file with rows.")
    if kind == "jsonl":
        records = []
        for i, line in enumerate(lines, 1):
            try:
                records.append(json.loads(line))
            except ValueError:
                raise DataCardError(
                    f"cards init: file {path} line {i} is not JSON; a .jsonl file holds one JSON object per line."
                ) from None
        guess.names = list(dict.fromkeys(k for r in records if isinstance(r, dict) for k in r))
        guess.rows = [[str(r.get(n, "")) for n in guess.names] for r in records if isinstance(r, dict)]
        return guess
    guess.separator = _separator(lines)
    rows = _split(lines, guess.separator)
    guess.header = _has_header(rows)
    width = max(len(r) for r in rows)
    guess.names = [h.strip() for h in rows[0]] if guess.header else [f"col{i + 1}" for i in range(width)]
    guess.rows = rows[1:] if guess.header else rows
    return guess


def _decode(head: bytes, guess: FileGuess) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return head[3:].decode("utf-8", errors="replace")
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start >= len(head) - 4:  # a character cut by the sample's end
            return head[: err.start].decode("utf-8")
        guess.encoding = "latin-1"
        return head.decode("latin-1")


def _split(lines: list[str], separator: str) -> list[list[str]]:
    if len(separator) == 1:
        return [row for row in csv.reader(io.StringIO("\n".join(lines)), delimiter=separator) if row]
    return [line.split(separator) for line in lines]


def _separator(lines: list[str]) -> str:
    """The candidate that splits (almost) every sampled line into the same number (> 1) of fields."""
    best, best_score = ",", -1.0
    for sep in SEPARATORS:
        counts = [len(r) for r in _split(lines, sep)]
        if not counts:
            continue
        mode = max(set(counts), key=counts.count)
        share = counts.count(mode) / len(counts)
        if mode > 1 and share >= 0.9 and share + 0.001 * mode > best_score:
            best, best_score = sep, share + 0.001 * mode
            if sep == "::":  # MovieLens: "::" also contains ":" fields, take it when it fits
                return sep
    return best


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _has_header(rows: list[list[str]]) -> bool:
    """A header when the first row has no number while some column of the rows below is all numbers."""
    if len(rows) < 2 or any(_is_number(v) for v in rows[0] if v.strip()):
        return False
    for i in range(len(rows[0])):
        below = [r[i] for r in rows[1:] if i < len(r) and r[i].strip()]
        if below and all(_is_number(v) for v in below):
            return True
    known = "|".join([*ROLE_NAMES.values(), TITLE_NAMES, TEXT_NAMES, r"^id$|_id\b|^id_|^key$"])
    return all(re.fullmatch(r"[A-Za-z_][\w .:\-]*", v.strip()) for v in rows[0]) and any(
        re.search(known, v.strip(), re.I) for v in rows[0]
    )


def _integers(values: list[str]) -> list[float] | None:
    try:
        numbers = [float(v) for v in values if v.strip()]
    except ValueError:
        return None
    return numbers if numbers and all(n == int(n) for n in numbers) else None


def guess_event_columns(events: FileGuess) -> dict[str, str]:
    """``{user_id, item_id, timestamp[, rating]: column}``, from the names, else from the values."""
    roles: dict[str, str] = {}
    for role, pattern in ROLE_NAMES.items():
        for name in events.names:
            if name not in roles.values() and re.search(pattern, name, re.I):
                roles[role] = name
                break
    free = [n for n in events.names if n not in roles.values()]
    if "timestamp" not in roles:
        for name in free:
            numbers = _integers(events.column(name))
            if numbers and min(numbers) >= 1e8 and max(numbers) < 1e14:  # unix seconds or milliseconds
                roles["timestamp"] = name
                break
    free = [n for n in events.names if n not in roles.values()]
    if "rating" not in roles:  # few distinct numbers within 0..10; the fewest of all such columns
        scale = [
            n
            for n in free
            if (v := events.column(n))
            and all(_is_number(x) for x in v)
            and len(set(v)) <= 11
            and 0 <= min(map(float, v))
            and max(map(float, v)) <= 10
        ]
        if scale:
            roles["rating"] = min(scale, key=lambda n: len(set(events.column(n))))
    free = [n for n in events.names if n not in roles.values()]
    for role in ("user_id", "item_id"):
        if role not in roles and free:
            roles[role] = free.pop(0)
    missing = [r for r in ("user_id", "item_id", "timestamp") if r not in roles]
    if missing:
        raise DataCardError(
            f"cards init: no column of {events.path} looks like {' or '.join(missing)} (it has "
            f"{events.names[:12]}); name them in a header line, or write the card by hand."
        )
    return {k: roles[k] for k in ("user_id", "item_id", "timestamp", "rating") if k in roles}


def guess_item_columns(items: FileGuess, event_items: list[str]) -> tuple[str, list[str]]:
    """The items column of ids (the one whose values the events name most, by name on a tie) and the text
    columns (a title first, then up to two descriptive ones)."""
    sample = set(event_items)

    def score(name: str) -> tuple:
        values = set(items.column(name))
        named = bool(re.fullmatch(r"(item|product|movie|asin|sku|id|.*_id|.*id)", name, re.I))
        return len(values & sample), named, len(values)

    item_id = max(items.names, key=score)
    rest = [n for n in items.names if n != item_id]
    title = [n for n in rest if re.search(TITLE_NAMES, n, re.I)][:1]
    text = [n for n in rest if n not in title and re.search(TEXT_NAMES, n, re.I)][:2]
    if not title and not text:  # no names to go by: the first two columns that are not numbers
        title = [n for n in rest if not all(_is_number(v) for v in items.column(n))][:2]
    return item_id, title + text


@dataclass
class Draft:
    """A drafted card: its README text and what was guessed."""

    text: str
    events: FileGuess
    items: FileGuess
    event_columns: dict[str, str]
    item_id: str
    item_text: list[str]
    data_dir: Path

    def summary(self) -> list[str]:
        cols = ", ".join(f"{k} <- {v}" for k, v in self.event_columns.items())
        return [
            f"  events  {self.events.path.name}: {self.events.describe()}; {cols}",
            f"  items   {self.items.path.name}: {self.items.describe()}; item_id <- {self.item_id}, text from "
            f"{', '.join(self.item_text) or 'the id only'}",
        ]


def draft_card(
    events_path: str | os.PathLike,
    items_path: str | os.PathLike,
    name: str,
    id_map_path: str | os.PathLike | None = None,
) -> Draft:
    """Drafts a card for the files (paths relative to their common folder, the ``--data-dir``); ``id_map_path``
    is a file of two columns that maps the events' item ids to the items file's."""
    events, items = sniff(events_path), sniff(items_path)
    id_map = sniff(id_map_path) if id_map_path is not None else None
    folders = [g.path.resolve().parent for g in (events, items, id_map) if g is not None]
    data_dir = Path(os.path.commonpath(folders))
    event_columns = guess_event_columns(events)
    event_items = events.column(event_columns["item_id"])
    map_columns = None
    if id_map is not None:  # the column holding the events' ids, and the one holding the items file's
        by_overlap = sorted(id_map.names, key=lambda n: -len(set(id_map.column(n)) & set(event_items)))
        map_columns = {"item_id": by_overlap[0], "key": next(n for n in id_map.names if n != by_overlap[0])}
        event_items = id_map.column(map_columns["key"])
    item_id, text_fields = guess_item_columns(items, event_items)
    fields = {
        "user_id": event_columns["user_id"],
        "item_id": event_columns["item_id"],
        "timestamp": event_columns["timestamp"],
    }
    action = "interacted"
    if "rating" in event_columns:
        fields["rating"] = event_columns["rating"]
        ratings = _integers(events.column(event_columns["rating"]))
        top = 5 if ratings is None or max(ratings) <= 5 else 10
        action = f"rated {{{{ rating | int }}}}/{top}" if ratings is not None else "rated {{ rating }}"
    item_fields = {"item_id": item_id, **{_field(n): n for n in text_fields}}
    text = " ".join(
        [f"{{{{ {_field(text_fields[0])} }}}}" if text_fields else "item {{ item_id }}"]
        + ([f"({', '.join(f'{{{{ {_field(n)} }}}}' for n in text_fields[1:])})"] if text_fields[1:] else [])
    )
    block = {
        "events": {**_file_keys(events, data_dir), "columns": fields, "action": action},
        "items": {
            **_file_keys(items, data_dir),
            "columns": item_fields,
            "text": text,
            **({"id_map": {**_file_keys(id_map, data_dir), "columns": map_columns}} if id_map else {}),
        },
        "verbalisation": {"event": "{{ item }}: {{ action }}", "separator": "\n"},
    }
    if not text_fields:
        block["items"]["columns"]["label"] = item_id
        block["items"]["text"] = "item {{ label }}"
    front = _yaml({"pretty_name": name, "license": "unknown", "interestbert": block})
    readme = (
        f"---\n{front}---\n# {name}\n\nDrafted by `interestbert cards init` from {events.path.name} and "
        f"{items.path.name}: check every guess (columns, separator, header, encoding, the templates) and set "
        "`license`, then run `interestbert cards validate` on this folder with `--data-dir` the folder of the "
        "files.\n"
    )
    return Draft(readme, events, items, event_columns, item_id, text_fields, data_dir)


def _yaml(value: dict, indent: str = "") -> str:
    """Block YAML for the nested sections; every value (a string, a list, a mapping of columns) as JSON, which YAML
    reads as it is (``"\\t"``, ``"{{ title }}"``: quoted, never reinterpreted)."""
    out = ""
    for key, v in value.items():
        if isinstance(v, dict) and key not in ("columns",):
            out += f"{indent}{key}:\n{_yaml(v, indent + '  ')}"
        else:
            out += f"{indent}{key}: {json.dumps(v, ensure_ascii=False)}\n"
    return out


def _field(column: str) -> str:
    """A column name as a template field name (an identifier)."""
    name = re.sub(r"\W+", "_", column.strip().lower()).strip("_") or "field"
    return f"f_{name}" if name[0].isdigit() else name


def _file_keys(guess: FileGuess, data_dir: Path) -> dict:
    keys: dict = {"path": guess.path.resolve().relative_to(data_dir).as_posix()}
    if guess.format == "csv":
        keys["separator"] = guess.separator
        if not guess.header:
            keys["header"] = False
            keys["names"] = guess.names
        if guess.encoding != "utf-8":
            keys["encoding"] = guess.encoding
    return keys
