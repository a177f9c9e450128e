"""Reading a card's delimited files: the mapped columns of each line as strings, with the line numbers that every
error message names (`read_table`); integer columns (`int_column`); paths that cannot leave --data-dir."""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .card_schema import FileSpec
from .errors import DataCardError


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())



@dataclass
class Table:
    """Selected columns of a file as lists of strings, and each row's line number in the file."""

    path: str
    columns: dict[str, list[str]]
    lines: list[int]

    def __len__(self) -> int:
        return len(self.lines)


def _safe_path(data_dir: Path, relative: str, where: str) -> Path:
    rel = Path(relative)
    root = data_dir.resolve()
    target = (root / rel).resolve()
    if rel.is_absolute() or not target.is_relative_to(root):
        raise DataCardError(f"{where}: path `{relative}` leaves the data directory {root}; card paths must be "
                            "relative and stay inside --data-dir.")
    if not target.is_file():
        raise DataCardError(f"{where}: file `{relative}` does not exist in {root}; check --data-dir or the card's "
                            "`path`.")
    return target


def read_table(spec: FileSpec, data_dir: Path, where: str) -> Table:
    """Reads the columns ``spec`` maps from its delimited file, checking every line's field count."""
    path = _safe_path(data_dir, spec.path, f"{where}: key path")
    gz = spec.compression == "gzip" or (spec.compression == "infer" and path.suffix == ".gz")
    loc = f"{where}: file {spec.path}"
    try:
        if gz:
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except OSError as err:
        raise DataCardError(f"{loc} cannot be read ({_one_line(err)}); check the file and `compression`.") from None
    try:
        text = raw.decode(spec.encoding)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataCardError(f"{loc} line {line} is not valid {spec.encoding}; set the card's `encoding` "
                            "(for example latin-1).") from None
    rows = _split_rows(text, spec, loc)
    header: tuple[str, ...]
    if spec.header:
        try:
            first_line, header_row = next(rows)
        except StopIteration:
            raise DataCardError(f"{loc} is empty; it needs a header line and rows.") from None
        header = tuple(h.strip() for h in header_row)
    else:
        header = spec.names or ()
    if spec.header and spec.names:
        header = spec.names
    index = {}
    for name, col in spec.columns.items():
        if col not in header:
            raise DataCardError(f"{where}: column `{col}` (for `{name}`) not found in {spec.path}; the file has "
                                f"{list(header)}.")
        index[name] = header.index(col)
    width = len(header)
    cols: dict[str, list[str]] = {name: [] for name in index}
    appenders = [(cols[name].append, i) for name, i in index.items()]
    lines: list[int] = []
    for lineno, row in rows:
        if len(row) != width:
            if len(row) == 0 or row == [""]:
                continue  # blank line
            raise DataCardError(f"{loc} line {lineno}: expected {width} fields separated by {spec.separator!r}, found "
                                f"{len(row)}; fix the line or the card's `separator`/`names`.")
        for append, i in appenders:
            append(row[i])
        lines.append(lineno)
    return Table(path=spec.path, columns=cols, lines=lines)


def _split_rows(text: str, spec: FileSpec, loc: str):
    """Yields (line number, fields); one-character separators follow CSV quoting, longer ones split plainly."""
    if len(spec.separator) == 1:
        quoting = csv.QUOTE_NONE if spec.quoting == "none" else csv.QUOTE_MINIMAL
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=spec.separator, quoting=quoting, strict=True)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                raise DataCardError(f"{loc} line {reader.line_num}: {err}; fix the quoting or set `quoting: none`.") from None
            yield reader.line_num, row
    else:
        for lineno, line in enumerate(text.splitlines(), 1):
            yield lineno, line.split(spec.separator)


def int_column(values: list[str], table: Table, name: str, where: str) -> np.ndarray:
    """Integers (unix seconds, indices) from strings such as ``881250949`` or ``1368748800.0``."""
    try:
        floats = np.asarray(values, dtype=np.float64)
    except ValueError:
        floats = None
    if floats is not None and np.isfinite(floats).all() and (floats == np.floor(floats)).all():
        return floats.astype(np.int64)
    for i, v in enumerate(values):
        try:
            f = float(v)
            ok = np.isfinite(f) and f == int(f)
        except ValueError:
            ok = False
        if not ok:
            raise DataCardError(f"{where}: file {table.path} line {table.lines[i]}: `{name}` is {v!r}, not an integer "
                                "(unix seconds); fix the line or map another column.")
    raise AssertionError("unreachable")  # pragma: no cover
