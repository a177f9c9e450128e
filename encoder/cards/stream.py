"""Out-of-core reading of a card's events, for data larger than memory: DuckDB streams the events file (delimited
text, Parquet or JSON Lines) into a database on disk, checks it, and groups it by user there (sorting and spilling
within a memory limit); `StreamedCard.chunk` then gives a range of users as the `CardData` that `load_card_data`
would give for them, so that memory is bounded by a chunk of users, not by the dataset.

The order is `load_card_data`'s: users by first appearance in the file, each user's events by timestamp, ties in
file order (DuckDB keeps a table's insertion order as its ``rowid``). The catalogue (items) is read into memory as
`load_card_data` reads it. Error messages name the file and line as `load_card_data`'s do (a quoted field that
spans lines shifts the line numbers after it).
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import DataCardError, excerpt
from .card import DataCard, load_card
from .files import MAX_INTEGER, Table, _one_line, _safe_path, file_format
from .load import CardData, load_items
from .schema import FileSpec

_DUCKDB_ENCODINGS = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "ascii": "utf-8",
    "latin-1": "latin-1",
    "latin1": "latin-1",
    "iso-8859-1": "latin-1",
    "utf-16": "utf-16",
}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class StreamedCard:
    """A card's events grouped by user in a DuckDB database under ``work_dir``.

    Args:
        card: A `DataCard`, a shipped card name or a path to a card.
        data_dir: The folder holding the card's files.
        work_dir: Where the database and DuckDB's spill files go (default: a new temporary folder, removed by
            `close`); it needs room for about the events file's size.
        memory_limit: DuckDB's memory limit (``"512MB"``, ``"2GB"``, ...): it sorts and spills within it.

    Use as a context manager, or call `close`.
    """

    def __init__(
        self,
        card: DataCard | str | os.PathLike,
        data_dir: str | os.PathLike,
        work_dir: str | os.PathLike | None = None,
        memory_limit: str = "512MB",
    ):
        import duckdb

        self.card = card if isinstance(card, DataCard) else load_card(card)
        self.data_dir = Path(data_dir)
        self.where = f"data card {self.card.name}"
        if not self.data_dir.is_dir():
            raise DataCardError(
                f"{self.where}: --data-dir {data_dir} is not a folder; pass the folder that holds "
                f"{self.card.events.path}."
            )
        self._own_dir = work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="interestbert-events-")) if work_dir is None else Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        db = self.work_dir / "events.duckdb"
        db.unlink(missing_ok=True)
        self.con = duckdb.connect(str(db))
        self.con.execute(f"SET memory_limit = {_literal(memory_limit)}")
        self.con.execute(f"SET temp_directory = {_literal(str(self.work_dir / 'spill'))}")
        self.con.execute("SET preserve_insertion_order = true")
        self.items, _ = load_items(self.card, self.data_dir)
        self._fields = [c for c in self.card.events.columns if c not in ("user_id", "item_id", "timestamp")]
        try:
            self._build()
        except duckdb.Error as err:
            self.close()
            raise DataCardError(
                f"{self.where}: file {self.card.events.path} cannot be read out of core "
                f"({_one_line(err)[:300]}); check the file against the card, or read it in memory "
                "(without --out-of-core) to have the line named."
            ) from None
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------------------------------------- building

    def _scan(self, spec: FileSpec) -> tuple[str, int]:
        """DuckDB's table function reading ``spec``'s file, and how many lines precede its first row."""
        path = _safe_path(self.data_dir, spec.path, f"{self.where}: key path")
        kind = file_format(spec)
        if kind == "parquet":
            return f"read_parquet({_literal(str(path))})", 0
        gz = spec.compression == "gzip" or (spec.compression == "infer" and path.suffix == ".gz")
        compression = "gzip" if gz else "none"
        if kind == "jsonl":
            return (
                f"read_json({_literal(str(path))}, format = 'newline_delimited', compression = {_literal(compression)})"
            ), 0
        encoding = _DUCKDB_ENCODINGS.get(spec.encoding.lower().replace("_", "-"))
        if encoding is None:
            raise DataCardError(
                f"{self.where}: file {spec.path}: encoding {excerpt(spec.encoding)} cannot be read "
                "out of core (DuckDB reads utf-8, latin-1 and utf-16); convert the file or read it in memory."
            )
        names = list(spec.names or self._header(path, spec, gz))
        columns = "{" + ", ".join(f"{_literal(n)}: 'VARCHAR'" for n in names) + "}"
        quote = "'\"'" if spec.quoting == "minimal" and len(spec.separator) == 1 else "''"
        not_null = "[" + ", ".join(_literal(n) for n in names) + "]"  # an empty field is "", as in memory
        return (
            f"read_csv({_literal(str(path))}, delim = {_literal(spec.separator)}, header = {str(spec.header)}, "
            f"columns = {columns}, auto_detect = false, quote = {quote}, escape = {quote}, "
            f"compression = {_literal(compression)}, encoding = {_literal(encoding)}, strict_mode = true, "
            f"null_padding = false, force_not_null = {not_null})"
        ), int(spec.header)

    def _header(self, path: Path, spec: FileSpec, gz: bool) -> list[str]:
        import csv
        import io

        with gzip.open(path, "rb") if gz else open(path, "rb") as f:
            first = f.readline().decode(spec.encoding, errors="replace").rstrip("\r\n")
        if len(spec.separator) == 1:
            return [h.strip() for h in next(csv.reader(io.StringIO(first), delimiter=spec.separator))]
        return [h.strip() for h in first.split(spec.separator)]

    def _fail(self, sql: str, message) -> None:
        """Raises ``message(row)`` for the first row ``sql`` finds, if any."""
        rows = self.con.execute(sql + " LIMIT 1").fetchall()  # fetch to the end: duckdb 2 refuses a half-read one
        if rows:
            raise DataCardError(message(rows[0]))

    def _build(self) -> None:
        ev = self.card.events
        scan, offset = self._scan(ev)
        described = {r[0]: r[1] for r in self.con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()}
        exprs = []
        for name, col in ev.columns.items():
            if col not in described:
                raise DataCardError(
                    f"{self.where}: column `{col}` (for `{name}`) not found in {ev.path}; the file "
                    f"has {excerpt(list(described))}."
                )
            exprs.append(f"{_as_text(_quote(col), described[col])} AS {_quote(name)}")
        self.con.execute(f"CREATE TABLE ev AS SELECT {', '.join(exprs)} FROM {scan}")  # rowid: file order
        loc = f"{self.where}: file {ev.path}"
        self._offset = offset
        line = lambda rowid: int(rowid) + 1 + offset  # noqa: E731
        self._fail(
            "SELECT 1 FROM (SELECT count(*) AS n FROM ev) WHERE n = 0",
            lambda r: f"{self.where}: file {ev.path} has no events; point the card at a file with rows.",
        )
        for name in ev.columns:
            self._fail(
                f"SELECT rowid FROM ev WHERE {_quote(name)} IS NULL",
                lambda r, name=name: f"{loc} line {line(r[0])}: `{name}` is missing; fill it or drop the row.",
            )
        self._fail(
            "SELECT rowid FROM ev WHERE trim(user_id) = ''",
            lambda r: f"{loc} line {line(r[0])}: `user_id` is empty; fill it or drop the line.",
        )
        self._fail(
            "SELECT rowid, timestamp FROM ev WHERE TRY_CAST(timestamp AS DOUBLE) IS NULL OR "
            "NOT isfinite(TRY_CAST(timestamp AS DOUBLE)) OR "
            "TRY_CAST(timestamp AS DOUBLE) <> floor(TRY_CAST(timestamp AS DOUBLE))",
            lambda r: (
                f"{self.where}: file {ev.path} line {line(r[0])}: `timestamp` is {excerpt(r[1])}, not an "
                "integer (unix seconds); fix the line or map another column."
            ),
        )
        self._fail(
            f"SELECT rowid, timestamp FROM ev WHERE abs(CAST(timestamp AS DOUBLE)) > {MAX_INTEGER} ORDER BY 1",
            lambda r: (
                f"{loc} line {line(r[0])}: `timestamp` is {excerpt(r[1])}, outside the range of integers "
                f"read exactly (+-{MAX_INTEGER:,}: unix seconds or milliseconds); fix the line or map "
                "another column."
            ),
        )
        for name in self._fields:  # as `check_finite`: a column of numbers holds no NaN or infinity
            number = f"TRY_CAST({_quote(name)} AS DOUBLE)"
            self._fail(
                f"SELECT rowid, {_quote(name)} FROM ev WHERE NOT isfinite({number}) AND NOT EXISTS "
                f"(SELECT 1 FROM ev WHERE {number} IS NULL) ORDER BY 1",
                lambda r, name=name: (
                    f"{loc} line {line(r[0])}: `{name}` is {excerpt(r[1])} in a column of "
                    "numbers; write a finite number or drop the line."
                ),
            )
        item = "e.item_id"
        join = ""
        if self.card.id_map is not None:
            mp = self.card.id_map
            map_scan, _ = self._scan(mp)
            self.con.execute(
                f"CREATE TABLE idmap AS SELECT CAST({_quote(mp.columns['item_id'])} AS VARCHAR) AS "
                f"item_id, CAST({_quote(mp.columns['key'])} AS VARCHAR) AS key FROM {map_scan}"
            )
            self._fail(
                "SELECT e.rowid, e.item_id FROM ev e ANTI JOIN idmap m ON e.item_id = m.item_id ORDER BY 1",
                lambda r: (
                    f"{loc} line {line(r[0])}: item `{r[1]}` is not in {mp.path}; complete the id map "
                    "or drop the event."
                ),
            )
            item, join = "m.key", "JOIN idmap m ON e.item_id = m.item_id"
        import pyarrow as pa

        catalogue = pa.table({"item_id": pa.array(self.items["item_id"][:], pa.string())})
        self.con.register("catalogue_arrow", catalogue)
        self.con.execute("CREATE TABLE catalogue AS SELECT item_id FROM catalogue_arrow")
        self.con.unregister("catalogue_arrow")
        outside = f"FROM ev e {join} WHERE {item} NOT IN (SELECT item_id FROM catalogue)"

        def not_in_catalogue(r) -> str:
            (n_missing,), (n_events,) = self._one(f"SELECT count(*) {outside}"), self._one("SELECT count(*) FROM ev")
            return (
                f"{loc} line {line(r[0])}: item `{r[1][:80]}` is not in the catalogue {self.card.items.path} (nor "
                f"are those of {n_missing:,} of the {n_events:,} events, {100 * n_missing / n_events:.0f} %); add "
                "them there, map them with `id_map`, or drop the events."
            )

        self._fail(f"SELECT e.rowid, {item} {outside} ORDER BY 1", not_in_catalogue)
        self.con.execute(
            "CREATE TABLE users AS SELECT user_id, row_number() OVER (ORDER BY min(rowid)) - 1 AS pos "
            "FROM ev GROUP BY user_id"
        )
        fields = "".join(f", e.{_quote(f)}" for f in self._fields)
        self.con.execute(
            f"CREATE TABLE sorted AS SELECT u.pos, e.user_id, {item} AS item_id, "
            f"CAST(CAST(e.timestamp AS DOUBLE) AS BIGINT) AS timestamp, e.rowid AS ord{fields} "
            f"FROM ev e {join} JOIN users u ON e.user_id = u.user_id ORDER BY u.pos, timestamp, ord"
        )
        self.con.execute("DROP TABLE ev")
        self.n_users = int(self._one("SELECT count(*) FROM users")[0])
        self.stats = self._stats()

    def _one(self, sql: str) -> tuple:
        return self.con.execute(sql).fetchall()[0]

    def _stats(self) -> dict:
        events, items, first, last = self._one(
            "SELECT count(*), count(DISTINCT item_id), min(timestamp), max(timestamp) FROM sorted"
        )
        lo, hi, short = self._one(
            "SELECT min(n), max(n), count(*) FILTER (WHERE n < 3) FROM (SELECT count(*) AS n FROM sorted GROUP BY pos)"
        )
        (tied,) = self._one(
            "SELECT avg(CASE WHEN prev = timestamp THEN 1.0 ELSE 0.0 END) FROM (SELECT timestamp, lag(timestamp) OVER "
            "w AS prev, row_number() OVER w AS k, count(*) OVER (PARTITION BY pos) AS n FROM sorted "
            "WINDOW w AS (PARTITION BY pos ORDER BY timestamp, ord)) WHERE k = n"
        )
        return {
            "users": self.n_users,
            "items": int(items),
            "catalogue": len(self.items),
            "events": int(events),
            "first_timestamp": int(first),
            "last_timestamp": int(last),
            "min_events_per_user": int(lo),
            "max_events_per_user": int(hi),
            "users_under_3_events": int(short),
            "last_event_tied_share": float(tied),
        }

    # ---------------------------------------------------------------------------------------------- reading

    def user_ids(self, lo: int = 0, hi: int | None = None) -> list[str]:
        """The ids of users ``[lo, hi)`` in order."""
        hi = self.n_users if hi is None else hi
        return [
            r[0]
            for r in self.con.execute(
                "SELECT user_id FROM users WHERE pos >= ? AND pos < ? ORDER BY pos", [lo, hi]
            ).fetchall()
        ]

    def chunk(self, lo: int, hi: int) -> CardData:
        """Users ``[lo, hi)`` as `CardData` (their events; the whole catalogue; no switches)."""
        import datasets

        rel = self.con.sql(
            f"SELECT * FROM sorted WHERE pos >= {int(lo)} AND pos < {int(hi)} ORDER BY pos, timestamp, ord"
        )
        table = (rel.to_arrow_table if hasattr(rel, "to_arrow_table") else rel.arrow)()  # duckdb 2.x / 1.x
        fields = {f: table.column(f).to_pylist() for f in self._fields}
        rows = Table(
            path=self.card.events.path,
            columns={},
            lines=[int(r) + 1 + self._offset for r in table.column("ord").to_pylist()],
        )
        actions = self.card.action.render_table(fields, table.num_rows, rows)
        events = datasets.Dataset.from_dict(
            {
                "user_id": table.column("user_id").to_pylist(),
                "item_id": table.column("item_id").to_pylist(),
                "timestamp": np.asarray(table.column("timestamp").to_numpy(), dtype=np.int64),
                "action": actions,
            },
            features=datasets.Features(
                {
                    "user_id": datasets.Value("string"),
                    "item_id": datasets.Value("string"),
                    "timestamp": datasets.Value("int64"),
                    "action": datasets.Value("string"),
                }
            ),
        )
        return CardData(card=self.card, events=events, items=self.items, switches=None, stats=self.stats)

    def close(self) -> None:
        try:
            self.con.close()
        finally:
            if self._own_dir:
                shutil.rmtree(self.work_dir, ignore_errors=True)
            else:
                (self.work_dir / "events.duckdb").unlink(missing_ok=True)
                (self.work_dir / "events.duckdb.wal").unlink(missing_ok=True)
                shutil.rmtree(self.work_dir / "spill", ignore_errors=True)

    def __enter__(self) -> StreamedCard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _as_text(column: str, duck_type: str) -> str:
    """A column as text the way `load_card_data` reads it: times as unix seconds, whole floats without ``.0``."""
    t = duck_type.upper()
    if t.startswith("TIMESTAMP") or t == "DATE":
        return f"CAST(CAST(epoch({column}) AS BIGINT) AS VARCHAR)"
    if t in ("DOUBLE", "FLOAT", "REAL") or t.startswith("DECIMAL"):
        return (
            f"CASE WHEN isfinite(CAST({column} AS DOUBLE)) AND CAST({column} AS DOUBLE) = "
            f"floor(CAST({column} AS DOUBLE)) AND abs(CAST({column} AS DOUBLE)) < 1e15 "
            f"THEN CAST(CAST({column} AS BIGINT) AS VARCHAR) ELSE CAST({column} AS VARCHAR) END"
        )
    return f"CAST({column} AS VARCHAR)"
