"""Batch encoding: verbalised user histories to interest vectors in sharded, resumable Parquet.

The selected users are split into ``num_shards`` contiguous shards and each shard into chunks of ``chunk_users``;
every chunk is verbalised, encoded and written as its own complete file, so memory is bounded by a chunk and a
killed run (kill -9 at any moment) continues from its last complete chunk when the same command runs again. The
folder's layout, its manifest and its resume state are `interestbert.inference.embedding_files`'.

Processes split the shards by rank: under ``accelerate launch`` or ``torchrun`` (``WORLD_SIZE`` and ``RANK`` set,
on one machine or many sharing the output folder) each process takes the shards ``rank, rank + world_size, ...``
without any collective communication, and whichever finishes the last shard writes the manifest.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from interestbert.encoder.backends import EncodeOptions
from interestbert.encoder.cards.stream import StreamedCard
from interestbert.encoder.errors import InterestBertError
from interestbert.encoder.model import InterestEncoder
from interestbert.encoder.options import format_horizons
from interestbert.encoder.verbalise import Verbaliser

from .embedding_files import (
    MANIFEST_FILE,
    EmbeddingsFolder,
    embedding_files,
    embeddings_schema,
    iter_embeddings,
    read_embeddings,
    read_manifest,
    run_metadata,
    shard_bounds,
)

__all__ = [
    "EncodeResult",
    "encode_users",
    "shard_plan",
    "read_embeddings",
    "iter_embeddings",
    "read_manifest",
    "embedding_files",
    "run_metadata",
    "MANIFEST_FILE",
]

logger = logging.getLogger(__name__)


@dataclass
class EncodeResult:
    """What one call of `encode_users` did: the folder, the shards it owned, the users it encoded now and those
    it found already done, how fast, and whether the folder is complete (its manifest written)."""

    path: Path
    shards: list[int]
    users: int
    seconds: float
    cut_histories: int
    resumed_users: int = 0
    complete: bool = False
    precision: str = "fp32"
    files: list[Path] = field(default_factory=list)

    @property
    def users_per_second(self) -> float:
        return self.users / self.seconds if self.seconds > 0 else float("inf")


def shard_plan(
    num_shards: int | None = None, shard_index: int | None = None, environ: os._Environ | dict | None = None
) -> tuple[int, list[int]]:
    """``(num_shards, the shards this process encodes)``.

    Default: one shard per process of a distributed launch (``WORLD_SIZE``/``RANK`` from ``accelerate launch`` or
    ``torchrun``), or one shard. With ``num_shards`` and no ``shard_index`` a process takes every
    ``world_size``-th shard from its rank (all of them when not launched); ``shard_index`` takes that one only.
    """
    env = os.environ if environ is None else environ
    try:
        world, rank = int(env.get("WORLD_SIZE", 1)), int(env.get("RANK", 0))
    except ValueError:
        raise InterestBertError(
            f"WORLD_SIZE={env.get('WORLD_SIZE')!r} / RANK={env.get('RANK')!r} are not integers; "
            "unset them or launch with accelerate launch / torchrun."
        ) from None
    n = world if num_shards is None else int(num_shards)
    if n <= 0:
        raise InterestBertError(f"--num-shards is {n}; it must be a positive integer.")
    if shard_index is not None:
        if not 0 <= shard_index < n:
            raise InterestBertError(f"--shard-index is {shard_index}; with --num-shards {n} it must be 0 to {n - 1}.")
        return n, [int(shard_index)]
    if not 0 <= rank < world:
        raise InterestBertError(f"RANK={rank} is outside WORLD_SIZE={world}; check the launcher's settings.")
    return n, list(range(rank, n, world))


def _users_hash(users: list[str]) -> str:
    return hashlib.sha256("\n".join(users).encode()).hexdigest()


class _Histories:
    """The selected users of a `Verbaliser` (in memory) or a `StreamedCard` (out of core), encoded a chunk at a
    time: ``encode(encoder, lo, hi, ...)`` -> (n_events, last timestamps, vectors, histories cut) of the
    selected users ``[lo, hi)``."""

    def __init__(self, source, user_indices, max_seq_length: int):
        self.source = source
        self.streamed = isinstance(source, StreamedCard)
        n = source.n_users if self.streamed else len(source.users)
        self.idx = np.arange(n) if user_indices is None else np.asarray(user_indices, dtype=np.int64)
        self.card = source.card
        self.max_seq_length = max_seq_length if self.streamed else source.max_seq_length
        if self.streamed:
            if len(self.idx) and not (np.diff(self.idx) == 1).all():
                raise ValueError("out of core, the selected users must be a contiguous range (--limit-users K).")
            lo = int(self.idx[0]) if len(self.idx) else 0
            self.user_ids = source.user_ids(lo, lo + len(self.idx))
        else:
            self.user_ids = [source.users[i] for i in self.idx.tolist()]

    def encode(self, encoder, lo: int, hi: int, **kwargs):
        chunk = self.idx[lo:hi]
        if self.streamed:  # a Verbaliser over just these users' events
            first = int(chunk[0])
            verbaliser = Verbaliser(
                self.source.chunk(first, int(chunk[-1]) + 1), encoder.tokenizer, self.max_seq_length
            )
            chunk = chunk - first
        else:
            verbaliser = self.source
        vectors = encoder.encode_histories(verbaliser, chunk, show_progress_bar=False, **kwargs)
        last_ts = verbaliser.timestamps[verbaliser.offsets[chunk + 1] - 1]
        return verbaliser.n_events[chunk], last_ts, vectors, verbaliser.stats.cut


def encode_users(
    encoder: InterestEncoder,
    verbaliser: Verbaliser | StreamedCard,
    output_dir: str | os.PathLike,
    *,
    user_indices: np.ndarray | None = None,
    batch_size: int = 32,
    chunk_users: int = 1024,
    num_shards: int | None = None,
    shard_index: int | None = None,
    overwrite: bool = False,
    model_id: str | None = None,
    precision: str = "auto",
    backend: str = "torch",
    options: EncodeOptions | None = None,
    show_progress_bar: bool = True,
) -> EncodeResult:
    """Encodes each user's history into ``output_dir``'s Parquet shards; resumes a killed run of the same options.

    Columns: ``user_id``, ``n_events``, ``last_timestamp``, ``embedding`` (fixed-size list of float32, unit norm).
    ``output_dir/_manifest.json`` is written last, when every shard is complete: the model and its hash, the card,
    max_seq_length, the interest horizons, and per shard its rows, sha256 and speed.

    Args:
        encoder: The model (merge its adapter first for speed: `InterestEncoder.merge_adapter`).
        verbaliser: Built from the card's data with the encoder's tokenizer and budget; or a `StreamedCard`
            (out of core: each chunk's users are read from it and verbalised with the encoder's budget).
        output_dir: The folder (created when missing).
        user_indices: Positions in ``verbaliser.users`` to encode (default: all), in output order.
        batch_size: Texts per forward pass.
        chunk_users: Users per chunk: the unit of memory, of resumption and of a shard's row groups.
        num_shards, shard_index: See `shard_plan`.
        overwrite: Replace a folder that holds another run (or this run complete) instead of refusing.
        model_id: The model's name to record (default: the encoder's base model).
        precision, backend: As in `InterestEncoder.encode`; ``auto`` is resolved (and recorded) here.
        options: `EncodeOptions` in place of ``batch_size``, ``precision`` and ``backend``.
        show_progress_bar: A bar over this process's users.
    """
    if chunk_users <= 0:
        raise InterestBertError(f"--chunk-users is {chunk_users}; it must be a positive integer.")
    n_shards, mine = shard_plan(num_shards, shard_index)
    try:
        options = encoder.resolve_options(options or EncodeOptions(precision, backend, batch_size))
    except ValueError as err:
        raise InterestBertError(str(err)) from None
    precision, backend, batch_size = options.precision, options.backend, options.batch_size
    try:
        histories = _Histories(verbaliser, user_indices, encoder.max_seq_length)
    except ValueError as err:
        raise InterestBertError(str(err)) from None
    idx, user_ids = histories.idx, histories.user_ids
    dim = encoder.embedding_dim
    run = {
        "model": model_id or encoder.base_model,
        "model_hash": encoder.fingerprint(),
        "card": histories.card.name,
        "precision": precision,
        "backend": backend,
        "max_seq_length": histories.max_seq_length,
        "interest_horizons": format_horizons(encoder.horizons),
        "embedding_dim": dim,
        "num_shards": n_shards,
        "chunk_users": int(chunk_users),
        "users": len(user_ids),
        "users_sha256": _users_hash(user_ids),
    }
    folder = EmbeddingsFolder(output_dir, run)
    result = EncodeResult(path=folder.path, shards=mine, users=0, seconds=0.0, cut_histories=0, precision=precision)
    if folder.start(mine, overwrite=overwrite):
        logger.info("%s already holds this run complete; nothing to encode (--overwrite to redo it)", folder.path)
        result.complete, result.files = True, embedding_files(folder.path)
        return result
    logger.info("precision %s, backend %s", precision, backend)
    bounds = {shard: shard_bounds(len(idx), shard, n_shards) for shard in mine}
    todo = {}  # shard -> the starts of its chunks still to encode
    for shard, (lo, hi) in bounds.items():
        done = folder.done_chunks(shard)
        todo[shard] = (
            [] if folder.shard_done(shard) else [s for c, s in enumerate(range(lo, hi, chunk_users)) if c not in done]
        )
        result.resumed_users += (hi - lo) - sum(min(chunk_users, hi - s) for s in todo[shard])
    if result.resumed_users:
        logger.info("resuming: %d of this process's users are already encoded in %s", result.resumed_users, folder.path)
    start = time.perf_counter()
    with tqdm(
        total=sum(hi - lo for lo, hi in bounds.values()),
        initial=result.resumed_users,
        unit="user",
        desc="encode",
        disable=not show_progress_bar,
    ) as bar:
        for shard, (lo, hi) in bounds.items():
            schema = embeddings_schema(dim, {**run, "shard": shard})
            shard_start, shard_users = time.perf_counter(), 0
            for s in todo[shard]:
                e = min(s + chunk_users, hi)
                n_events, last_ts, vectors, cut = histories.encode(encoder, s, e, options=options)
                result.cut_histories += cut
                folder.write_chunk(
                    shard,
                    (s - lo) // chunk_users,
                    pa.table(
                        {
                            "user_id": pa.array(user_ids[s:e], pa.string()),
                            "n_events": pa.array(n_events, pa.int32()),
                            "last_timestamp": pa.array(last_ts, pa.int64()),
                            "embedding": pa.FixedSizeListArray.from_arrays(
                                pa.array(vectors.reshape(-1), pa.float32()), dim
                            ),
                        },
                        schema=schema,
                    ),
                    cut=cut,
                )
                shard_users += e - s
                bar.update(e - s)
            if not folder.shard_done(shard):
                seconds = time.perf_counter() - shard_start
                folder.finish_shard(
                    shard,
                    len(range(lo, hi, chunk_users)),
                    schema,
                    {
                        "encoded_now": shard_users,
                        "seconds": round(seconds, 3),
                        "users_per_second": round(shard_users / seconds, 2) if seconds > 0 and shard_users else None,
                        "device": str(encoder.device),
                        "batch_size": batch_size,
                    },
                )
            result.users += shard_users
    result.seconds = time.perf_counter() - start
    result.complete = folder.finish_run()
    result.files = [
        folder.path / f for f in sorted(os.listdir(folder.path)) if f.endswith(".parquet") and not f.startswith(".")
    ]
    return result
