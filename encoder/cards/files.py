"""Reading a card's delimited files: the mapped columns of each line as strings, with the line numbers that every
error message names (`read_table`); integer columns (`int_column`); paths that cannot leave --data-dir."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataCardError, excerpt
from .schema import FileSpec


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
        raise DataCardError(
            f"{where}: path `{relative}` leaves the data directory {root}; card paths must be "
            "relative and stay inside --data-dir."
        )
    if not target.is_file():
        raise DataCardError(
            f"{where}: file `{relative}` does not exist in {root}; check --data-dir or the card's `path`."
        )
    return target


def file_format(spec: FileSpec) -> str:
    """``csv``, ``parquet`` or ``jsonl``: the card's `format`, or inferred from the file name."""
    if spec.format != "infer":
        return spec.format
    suffixes = [s.lower() for s in Path(spec.path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    return {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(last, "csv")


def read_table(spec: FileSpec, data_dir: Path, where: str) -> Table:
    """Reads the columns ``spec`` maps from its file, checking every line's field count (delimited text) or
    every value's presence (Parquet, JSON Lines)."""
    path = _safe_path(data_dir, spec.path, f"{where}: key path")
    gz = spec.compression == "gzip" or (spec.compression == "infer" and path.suffix == ".gz")
    loc = f"{where}: file {spec.path}"
    kind = file_format(spec)
    if kind != "csv":
        return _read_columnar(spec, path, kind, gz, where, loc)
    try:
        if gz:
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except OSError as err:
        raise DataCardError(f"{loc} cannot be read ({_one_line(err)}); check the file and `compression`.") from None
    bom = raw.startswith(codecs.BOM_UTF8)
    encoding = "utf-8-sig" if codecs.lookup(spec.encoding).name == "utf-8" else spec.encoding  # a BOM is no data
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataCardError(
            f"{loc} line {line} is not valid {spec.encoding}; set the card's `encoding` (for example latin-1)."
        ) from None
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
            hint = (
                (
                    f" (it starts with a UTF-8 byte-order mark, read as {spec.encoding} characters: set the card's "
                    "`encoding: utf-8`)"
                )
                if bom and encoding != "utf-8-sig"
                else ""
            )
            raise DataCardError(
                f"{where}: column `{col}` (for `{name}`) not found in {spec.path}; the file has "
                f"{excerpt(list(header))}{hint}."
            )
        index[name] = header.index(col)
    width = len(header)
    cols: dict[str, list[str]] = {name: [] for name in index}
    appenders = [(cols[name].append, i) for name, i in index.items()]
    lines: list[int] = []
    for lineno, row in rows:
        if len(row) != width:
            if len(row) == 0 or row == [""]:
                continue  # blank line
            end = rows.last_line
            spans = (
                (
                    f' (the row runs on to line {end}: a quote `"` opened on line {lineno} is not closed there; '
                    "balance it or set `quoting: none`)"
                )
                if end > lineno
                else ""
            )
            raise DataCardError(
                f"{loc} line {lineno}: expected {width} fields separated by {excerpt(spec.separator)}, "
                f"found {len(row)}{spans}; fix the line or the card's `separator`/`names`."
            )
        for append, i in appenders:
            append(row[i])
        lines.append(lineno)
    return Table(path=spec.path, columns=cols, lines=lines)


def _read_columnar(spec: FileSpec, path: Path, kind: str, gz: bool, where: str, loc: str) -> Table:
    """A Parquet or JSON Lines file's mapped columns as strings (integers without a decimal point, timestamps
    as unix seconds); a missing value is refused with its row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow.json as pj

            if gz:
                with gzip.open(path, "rb") as f:
                    table = pj.read_json(io.BytesIO(f.read()))
            else:
                table = pj.read_json(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise DataCardError(
            f"{loc} cannot be read as {'Parquet' if kind == 'parquet' else 'JSON Lines'} "
            f"({_one_line(err)[:300]}); check the file and the card's `format`."
        ) from None
    cols: dict[str, list[str]] = {}
    for name, col in spec.columns.items():
        if col not in table.column_names:
            raise DataCardError(
                f"{where}: column `{col}` (for `{name}`) not found in {spec.path}; the file has "
                f"{excerpt(table.column_names)}."
            )
        values = table.column(col)
        if pa.types.is_timestamp(values.type) or pa.types.is_date(values.type):
            values = pc.cast(pc.cast(values, pa.timestamp("s")), pa.int64())
        try:
            values = pc.cast(values, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataCardError(
                f"{where}: column `{col}` of {spec.path} holds {values.type}, which is not text, "
                "a number or a time; map another column."
            ) from None
        if values.null_count:
            row = pc.index(pc.is_null(values), True).as_py() + 1
            raise DataCardError(f"{loc} line {row}: `{name}` (column `{col}`) is missing; fill it or drop the row.")
        cols[name] = values.to_pylist()
    return Table(path=spec.path, columns=cols, lines=list(range(1, table.num_rows + 1)))


class _Rows:
    """Iterates (line number where the row starts, fields); one-character separators follow CSV quoting (a quoted
    field may span lines: ``last_line`` is where the row just read ended), longer ones split plainly."""

    def __init__(self, text: str, spec: FileSpec, loc: str):
        self.loc, self.last_line = loc, 0
        if len(spec.separator) == 1:
            quoting = csv.QUOTE_NONE if spec.quoting == "none" else csv.QUOTE_MINIMAL
            self.reader = csv.reader(
                io.StringIO(text, newline=""), delimiter=spec.separator, quoting=quoting, strict=True
            )
        else:
            self.reader = None
            self.lines = enumerate(text.splitlines(), 1)
            self.separator = spec.separator

    def __iter__(self):
        return self

    def __next__(self) -> tuple[int, list[str]]:
        if self.reader is None:
            lineno, line = next(self.lines)
            self.last_line = lineno
            return lineno, line.split(self.separator)
        start = self.reader.line_num + 1
        try:
            row = next(self.reader)
        except csv.Error as err:
            end = self.reader.line_num
            where = (
                f'line {start}: a quote `"` opened there is not closed as CSV expects ({err}, on line {end})'
                if end > start
                else f"line {end}: {err}"
            )
            raise DataCardError(f"{self.loc} {where}; fix the quoting or set `quoting: none`.") from None
        self.last_line = self.reader.line_num
        return start, row


def _split_rows(text: str, spec: FileSpec, loc: str) -> _Rows:
    return _Rows(text, spec, loc)


MAX_INTEGER = 2**53 - 1  # the largest integer a float64 holds exactly; unix seconds and milliseconds fit easily


def int_column(values: list[str], table: Table, name: str, where: str) -> np.ndarray:
    """Integers (unix seconds, indices) from strings such as ``881250949`` or ``1368748800.0``, within
    +-`MAX_INTEGER` (a larger one, NaN or inf is refused with its line, never wrapped around)."""
    try:
        floats = np.asarray(values, dtype=np.float64)
    except ValueError:
        floats = None
    if floats is not None and (np.abs(floats) <= MAX_INTEGER).all() and (floats == np.floor(floats)).all():
        return floats.astype(np.int64)
    for i, v in enumerate(values):
        try:
            f = float(v)
        except ValueError:
            f = None
        if f is None or not np.isfinite(f) or f != np.floor(f):
            raise DataCardError(
                f"{where}: file {table.path} line {table.lines[i]}: `{name}` is {excerpt(v)}, not an "
                "integer (unix seconds); fix the line or map another column."
            )
        if abs(f) > MAX_INTEGER:
            raise DataCardError(
                f"{where}: file {table.path} line {table.lines[i]}: `{name}` is {excerpt(v)}, outside "
                f"the range of integers read exactly (+-{MAX_INTEGER:,}: unix seconds or "
                "milliseconds); fix the line or map another column."
            )
    raise AssertionError("unreachable")  # pragma: no cover


def check_finite(table: Table, names, where: str) -> None:
    """A numeric column (every value a number) may not hold NaN or an infinity: the first one is refused with its
    line (a text column, in which some value is no number, is left alone)."""
    for name in names:
        try:
            floats = np.asarray(table.columns[name], dtype=np.float64)
        except ValueError:
            continue
        bad = np.flatnonzero(~np.isfinite(floats))
        if len(bad):
            i = int(bad[0])
            raise DataCardError(
                f"{where}: file {table.path} line {table.lines[i]}: `{name}` is "
                f"{excerpt(table.columns[name][i])} in a column of numbers; write a finite number or "
                "drop the line."
            )
