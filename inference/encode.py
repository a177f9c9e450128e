"""Batch encoding: verbalised user histories to interest vectors in Parquet.

Users are verbalised and encoded in chunks and each chunk is appended to the Parquet file as a row group, so memory
stays flat however many users there are. The file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from interestbert.encoder.files import atomic_write, atomic_write_json
from interestbert.encoder.model import InterestEncoder
from interestbert.encoder.verbalise import Verbaliser

EMBEDDINGS_FILE = "embeddings.parquet"
INFO_FILE = "encode_info.json"


@dataclass
class EncodeResult:
    """Where the embeddings went and how fast they were made."""

    path: Path
    users: int
    seconds: float
    cut_histories: int

    @property
    def users_per_second(self) -> float:
        return self.users / self.seconds if self.seconds > 0 else float("inf")


def embeddings_schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("user_id", pa.string()),
        ("n_events", pa.int32()),
        ("last_timestamp", pa.int64()),
        ("embedding", pa.list_(pa.float32(), dim)),
    ])


def encode_users(
    encoder: InterestEncoder,
    verbaliser: Verbaliser,
    output_dir: str | os.PathLike,
    *,
    user_indices: np.ndarray | None = None,
    batch_size: int = 32,
    chunk_users: int = 1024,
    show_progress_bar: bool = True,
    extra_info: dict | None = None,
) -> EncodeResult:
    """Encodes each user's whole history and writes ``output_dir/embeddings.parquet``.

    Columns: ``user_id``, ``n_events``, ``last_timestamp``, ``embedding`` (fixed-size list of float32, unit norm).
    ``output_dir/encode_info.json`` records the model, the budget, the counts and the speed.

    Args:
        encoder: The model.
        verbaliser: Built from the card's data with the encoder's tokenizer and budget.
        output_dir: Created if missing; existing embeddings there are replaced only once the new file is complete.
        user_indices: Positions in ``verbaliser.users`` to encode (default: all).
        batch_size: Texts per forward pass.
        chunk_users: Users verbalised and written per row group.
        show_progress_bar: A bar over users.
        extra_info: Merged into ``encode_info.json`` (the card name, ...).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    idx = np.arange(len(verbaliser.users)) if user_indices is None else np.asarray(user_indices, dtype=np.int64)
    schema = embeddings_schema(encoder.embedding_dim)
    n_events = verbaliser.n_events
    last_ts = verbaliser.timestamps[verbaliser.offsets[1:] - 1]
    cut = 0
    start = time.perf_counter()

    def write(tmp: Path) -> None:
        nonlocal cut
        with pq.ParquetWriter(tmp, schema) as writer, tqdm(total=len(idx), unit="user", desc="encode",
                                                           disable=not show_progress_bar) as bar:
            for lo in range(0, len(idx), chunk_users):
                chunk = idx[lo: lo + chunk_users]
                vectors = encoder.encode_histories(verbaliser, chunk, batch_size=batch_size,
                                                   show_progress_bar=False)  # (chunk, dim)
                cut += verbaliser.stats.cut
                writer.write_table(pa.table({
                    "user_id": pa.array([verbaliser.users[i] for i in chunk.tolist()], pa.string()),
                    "n_events": pa.array(n_events[chunk], pa.int32()),
                    "last_timestamp": pa.array(last_ts[chunk], pa.int64()),
                    "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()),
                                                                   encoder.embedding_dim),
                }, schema=schema))
                bar.update(len(chunk))

    final = atomic_write(out / EMBEDDINGS_FILE, write)  # replaced only once the new file is complete
    seconds = time.perf_counter() - start
    result = EncodeResult(path=final, users=len(idx), seconds=seconds, cut_histories=cut)
    info = {
        "model": encoder.base_model,
        **(extra_info or {}),
        "max_seq_length": verbaliser.max_seq_length,
        "embedding_dim": encoder.embedding_dim,
        "users": result.users,
        "histories_cut_to_budget": cut,
        "seconds": round(seconds, 3),
        "users_per_second": round(result.users_per_second, 2),
        "device": str(encoder.device),
    }
    atomic_write_json(out / INFO_FILE, info)
    return result


def read_embeddings(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """``(user_ids, (n, dim) float32 array)`` from a file or folder written by `encode_users`."""
    path = Path(path)
    if path.is_dir():
        path = path / EMBEDDINGS_FILE
    table = pq.read_table(path)
    emb = table.column("embedding").combine_chunks()
    dim = emb.type.list_size
    return table.column("user_id").to_pylist(), emb.values.to_numpy().reshape(-1, dim).astype(np.float32)
