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
        raise DataCardError(f"{loc} cannot be read as {'Parquet' if kind == 'parquet' else 'JSON Lines'} "
                            f"({_one_line(err)[:300]}); check the file and the card's `format`.") from None
    cols: dict[str, list[str]] = {}
    for name, col in spec.columns.items():
        if col not in table.column_names:
            raise DataCardError(f"{where}: column `{col}` (for `{name}`) not found in {spec.path}; the file has "
                                f"{table.column_names}.")
        values = table.column(col)
        if pa.types.is_timestamp(values.type) or pa.types.is_date(values.type):
            values = pc.cast(pc.cast(values, pa.timestamp("s")), pa.int64())
        try:
            values = pc.cast(values, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataCardError(f"{where}: column `{col}` of {spec.path} holds {values.type}, which is not text, "
                                "a number or a time; map another column.") from None
        if values.null_count:
            row = pc.index(pc.is_null(values), True).as_py() + 1
            raise DataCardError(f"{loc} line {row}: `{name}` (column `{col}`) is missing; fill it or drop the row.")
        cols[name] = values.to_pylist()
    return Table(path=spec.path, columns=cols, lines=list(range(1, table.num_rows + 1)))


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
