"""The embeddings folder that `interestbert encode` writes: Parquet shards, a manifest written last, and the state
that lets a killed run continue where it stopped.

::

    DIR/
      part-00000-of-00002.parquet    one per shard, renamed into place once complete
      part-00001-of-00002.parquet
      _manifest.json                 written last, once every shard is complete
      _work/                         only while the run is unfinished
        run.json                     the run's options: a re-run with other options is refused
        part-00000/chunk-000000.parquet, ...   one complete file per chunk of users (a row group of the shard)
        part-00000.done.json         the shard's rows and sha256, once its part file is in place

Shard ``i`` of ``N`` holds the contiguous slice ``users[i*n//N : (i+1)*n//N]`` of the selected users, and chunk
``c`` of a shard its users ``[c*chunk_users, (c+1)*chunk_users)``: boundaries fixed by the options alone, so that
a resumed run encodes exactly the chunks that are missing and its files equal an uninterrupted run's. Every
Parquet file carries the run (model, its hash, card, precision, ...) as JSON under the schema metadata key
``interestbert``; DuckDB (``SELECT * FROM 'DIR/*.parquet'``; Parquet has no fixed-size list, so cast the embedding
``embedding::FLOAT[dim]`` for DuckDB's ARRAY type) and Polars read the folder as it is, and nothing but finished
shards matches ``DIR/*.parquet``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from interestbert.encoder.errors import InterestBertError
from interestbert.encoder.files import atomic_write, atomic_write_json, fsync_path

MANIFEST_FILE = "_manifest.json"
WORK_DIR = "_work"
RUN_FILE = "run.json"
METADATA_KEY = b"interestbert"
_CHUNK_KEY = b"interestbert_chunk_cut"  # a chunk file's histories cut to the budget (summed into the manifest)
FORMAT = "interestbert-embeddings/1"
_PART = re.compile(r"part-(\d{5})-of-(\d{5})\.parquet")


def shard_name(shard: int, num_shards: int) -> str:
    return f"part-{shard:05d}-of-{num_shards:05d}.parquet"


def shard_bounds(n_users: int, shard: int, num_shards: int) -> tuple[int, int]:
    """``[lo, hi)`` of shard ``shard`` in the selected users."""
    return shard * n_users // num_shards, (shard + 1) * n_users // num_shards


def embeddings_schema(dim: int, run: dict | None = None) -> pa.Schema:
    schema = pa.schema(
        [
            ("user_id", pa.string()),
            ("n_events", pa.int32()),
            ("last_timestamp", pa.int64()),
            ("embedding", pa.list_(pa.float32(), dim)),
        ]
    )
    return schema if run is None else schema.with_metadata({METADATA_KEY: json.dumps(run, sort_keys=True)})


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _differences(on_disk: dict, now: dict) -> list[str]:
    keys = [k for k in now if on_disk.get(k) != now[k]] + [k for k in on_disk if k not in now]
    short = lambda v: v[:12] if isinstance(v, str) and len(v) == 64 else v  # noqa: E731 (hashes)
    return [f"{k} {short(on_disk.get(k))!r} there, {short(now.get(k))!r} now" for k in keys]


def _writing(path: Path, action):
    """Runs ``action()``; a failed write (disk full, permissions, ...) becomes one sentence naming ``path``."""
    try:
        return action()
    except OSError as err:
        raise InterestBertError(
            f"writing {path} failed ({err.strerror or err}); free space or fix the folder's "
            "permissions and run the same command again: it continues from the last complete "
            "chunk."
        ) from None


class EmbeddingsFolder:
    """One run's view of an embeddings folder: its identity (``run``), its shards' chunks and the manifest.

    Args:
        path: The folder (created when missing).
        run: What identifies the run's output (model and its hash, card, max_seq_length, horizons, precision,
            backend, num_shards, chunk_users, the users' count and hash, ...); JSON values.
    """

    def __init__(self, path: str | os.PathLike, run: dict):
        self.path = Path(path)
        self.run = run
        self.num_shards = int(run["num_shards"])
        self.work = self.path / WORK_DIR

    # ---------------------------------------------------------------------------------------------- the run

    def start(self, shards: list[int], overwrite: bool = False) -> bool:
        """Checks the folder against this run before any work. Returns True when the folder already holds this
        run complete (nothing to do). Refuses a folder that holds another run's files, naming the difference,
        unless ``overwrite``: then this process's shards (and what no shard of this run owns) are removed.
        Temporary files this process's shards left behind in a killed run are removed."""
        if self.path.exists() and not self.path.is_dir():
            raise InterestBertError(f"--output {self.path} is a file; pass a folder (it is created when missing).")
        _writing(self.path, lambda: self.path.mkdir(parents=True, exist_ok=True))
        manifest = read_manifest(self.path) if (self.path / MANIFEST_FILE).is_file() else None
        on_disk = manifest["run"] if manifest is not None and not (self.work / RUN_FILE).is_file() else None
        if on_disk is None and (self.work / RUN_FILE).is_file():
            on_disk = json.loads((self.work / RUN_FILE).read_text(encoding="utf-8"))
        foreign = [
            p.name
            for p in self.path.iterdir()
            if p.suffix == ".parquet" and not p.name.startswith(".") and _PART.fullmatch(p.name) and on_disk is None
        ]
        if not overwrite:
            if on_disk is not None and on_disk != self.run:
                raise InterestBertError(
                    f"{self.path} holds embeddings of another run ("
                    f"{'; '.join(_differences(on_disk, self.run))}); run with the same options "
                    "to continue it, or pass --overwrite to start again."
                )
            if on_disk is None and foreign:
                raise InterestBertError(
                    f"{self.path} already holds {foreign[0]} from an earlier encode; pass "
                    "--overwrite to replace it, or choose another --output."
                )
            if manifest is not None and on_disk == self.run:
                return True
        else:
            self._clear(shards, manifest is not None or on_disk != self.run)
        self._claim()
        for shard in shards:
            self._remove_temporaries(shard)
        return False

    def _clear(self, shards: list[int], everything_else: bool) -> None:
        (self.path / MANIFEST_FILE).unlink(missing_ok=True)
        (self.path / "encode_info.json").unlink(missing_ok=True)
        for part in self.path.glob("part-*-of-*.parquet"):
            m = _PART.fullmatch(part.name)
            if m and (int(m.group(2)) != self.num_shards or int(m.group(1)) in shards):
                part.unlink(missing_ok=True)
        for shard in shards:
            shutil.rmtree(self._chunk_dir(shard), ignore_errors=True)
            self._done_file(shard).unlink(missing_ok=True)
        if everything_else:  # the old run's identity goes; other processes of this run clear their own shards
            (self.work / RUN_FILE).unlink(missing_ok=True)

    def _claim(self) -> None:
        """Records the run in ``_work/run.json`` (exclusively: the first process of a run writes it; the others
        check that theirs is the same)."""
        _writing(self.work, lambda: self.work.mkdir(exist_ok=True))
        target = self.work / RUN_FILE
        if target.is_file():
            on_disk = json.loads(target.read_text(encoding="utf-8"))
            if on_disk != self.run:
                raise InterestBertError(
                    f"{self.path} is being written by another run ("
                    f"{'; '.join(_differences(on_disk, self.run))}); give every process the "
                    "same options, or another --output."
                )
            return
        tmp = self.work / f".{RUN_FILE}.{os.getpid()}.tmp"
        _writing(tmp, lambda: tmp.write_text(json.dumps(self.run, indent=2, sort_keys=True) + "\n", encoding="utf-8"))
        try:
            os.link(tmp, target)  # fails if another process got there first
        except FileExistsError:
            tmp.unlink(missing_ok=True)
            return self._claim()
        tmp.unlink(missing_ok=True)
        fsync_path(self.work)

    def _remove_temporaries(self, shard: int) -> None:
        name = shard_name(shard, self.num_shards)
        for tmp in self.path.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
        chunks = self._chunk_dir(shard)
        if chunks.is_dir():
            for tmp in chunks.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)

    # ---------------------------------------------------------------------------------------------- chunks

    def _chunk_dir(self, shard: int) -> Path:
        return self.work / f"part-{shard:05d}"

    def _done_file(self, shard: int) -> Path:
        return self.work / f"part-{shard:05d}.done.json"

    def shard_done(self, shard: int) -> bool:
        return self._done_file(shard).is_file()

    def done_chunks(self, shard: int) -> set[int]:
        """Chunks of ``shard`` already written (each file is complete: it was renamed into place)."""
        folder = self._chunk_dir(shard)
        if not folder.is_dir():
            return set()
        return {int(p.stem.split("-")[1]) for p in folder.glob("chunk-*.parquet")}

    def write_chunk(self, shard: int, chunk: int, table: pa.Table, cut: int) -> None:
        """Writes chunk ``chunk`` of ``shard`` as one complete file; ``cut``: its histories cut to the budget."""
        path = self._chunk_dir(shard) / f"chunk-{chunk:06d}.parquet"
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), _CHUNK_KEY: str(int(cut))})
        _writing(path, lambda: atomic_write(path, lambda tmp: pq.write_table(table, tmp)))

    def finish_shard(self, shard: int, n_chunks: int, schema: pa.Schema, info: dict) -> dict:
        """Merges the shard's chunks, in order, into its part file (one row group each), records it as done and
        removes the chunks. Returns the shard's entry of the manifest."""
        name = shard_name(shard, self.num_shards)
        final = self.path / name
        rows = cut = 0

        def write(tmp: Path) -> None:
            nonlocal rows, cut
            with pq.ParquetWriter(tmp, schema) as writer:
                for chunk in range(n_chunks):
                    table = pq.read_table(self._chunk_dir(shard) / f"chunk-{chunk:06d}.parquet")
                    cut += int(table.schema.metadata[_CHUNK_KEY])
                    writer.write_table(table.replace_schema_metadata(schema.metadata))
                    rows += table.num_rows

        _writing(final, lambda: atomic_write(final, write))
        entry = {
            "file": name,
            "shard": shard,
            "rows": rows,
            "histories_cut_to_budget": cut,
            "sha256": file_sha256(final),
            **info,
        }
        _writing(self._done_file(shard), lambda: atomic_write_json(self._done_file(shard), entry))
        shutil.rmtree(self._chunk_dir(shard), ignore_errors=True)
        return entry

    def finish_run(self) -> bool:
        """Writes ``_manifest.json`` (last) when every shard is done, and removes ``_work``. Returns whether the
        folder is now complete. Any process may call it; the one that sees every shard done writes it (two that
        finish together both write the same manifest, each through its own temporary file)."""
        if not all(self.shard_done(s) for s in range(self.num_shards)):
            return (self.path / MANIFEST_FILE).is_file()  # another process finished and removed `_work`
        try:
            shards = [json.loads(self._done_file(s).read_text(encoding="utf-8")) for s in range(self.num_shards)]
        except FileNotFoundError:  # another process finished meanwhile
            return (self.path / MANIFEST_FILE).is_file()
        manifest = {
            "format": FORMAT,
            **{
                k: self.run[k]
                for k in (
                    "model",
                    "model_hash",
                    "card",
                    "precision",
                    "backend",
                    "max_seq_length",
                    "interest_horizons",
                    "embedding_dim",
                )
            },
            "rows": sum(s["rows"] for s in shards),
            "histories_cut_to_budget": sum(s["histories_cut_to_budget"] for s in shards),
            "shards": shards,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "run": self.run,
        }
        path = self.path / MANIFEST_FILE  # atomic_write removes dead processes' temporaries, never a live one's
        _writing(path, lambda: atomic_write_json(path, manifest))
        shutil.rmtree(self.work, ignore_errors=True)
        return True


# -------------------------------------------------------------------------------------------------- reading


def read_manifest(folder: str | os.PathLike) -> dict:
    path = Path(folder) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InterestBertError(f"{path} cannot be read ({err}); encode the folder again with --overwrite.") from None
    if manifest.get("format") != FORMAT:
        raise InterestBertError(
            f"{path} is not an interestbert embeddings manifest (format "
            f"{manifest.get('format')!r}, expected {FORMAT!r})."
        )
    return manifest


def embedding_files(path: str | os.PathLike, verify: bool = False) -> list[Path]:
    """The Parquet files of an embeddings folder in shard order (checked against its manifest: every shard there,
    with its row count, and with ``verify`` its sha256), or ``[path]`` for a single file."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    if not (path / MANIFEST_FILE).is_file():
        unfinished = (path / WORK_DIR).is_dir()
        raise InterestBertError(
            f"{path} has no {MANIFEST_FILE}: "
            + (
                "its encode has not finished; run the same command again to complete it."
                if unfinished
                else "it is not a folder written by `interestbert encode`."
            )
        )
    files = []
    for shard in read_manifest(path)["shards"]:
        file = path / shard["file"]
        if not file.is_file():
            raise InterestBertError(f"{file} is missing (the manifest lists it); encode the folder again.")
        if pq.ParquetFile(file).metadata.num_rows != shard["rows"] or (verify and file_sha256(file) != shard["sha256"]):
            raise InterestBertError(
                f"{file} does not match {path / MANIFEST_FILE} (rows or sha256 differ): it was "
                "changed after the encode; encode the folder again."
            )
        files.append(file)
    return files


def iter_embeddings(path: str | os.PathLike, batch_rows: int = 65_536) -> Iterator[tuple[list[str], np.ndarray]]:
    """``(user_ids, (rows, dim) float32)`` batches of an embeddings folder or file, in order, memory bounded by
    ``batch_rows``."""
    for file in embedding_files(path):
        for batch in pq.ParquetFile(file).iter_batches(batch_size=batch_rows, columns=["user_id", "embedding"]):
            emb = batch.column("embedding")
            dim = emb.type.list_size
            yield batch.column("user_id").to_pylist(), emb.values.to_numpy().reshape(-1, dim).astype(np.float32)


def read_embeddings(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """``(user_ids, (n, dim) float32 array)`` of every shard of a folder written by `encode_users` (or of one
    Parquet file), in shard order."""
    users, arrays = [], []
    for ids, vectors in iter_embeddings(path):
        users += ids
        arrays.append(vectors)
    if not arrays:
        return users, np.zeros((0, 0), dtype=np.float32)
    return users, np.concatenate(arrays)


def run_metadata(path: str | os.PathLike) -> dict:
    """The run recorded in a Parquet file's schema metadata (model, hash, card, ...)."""
    meta = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in meta:
        raise InterestBertError(f"{path} has no interestbert metadata; it was not written by `interestbert encode`.")
    return json.loads(meta[METADATA_KEY])
