"""Encoding on a Ray cluster: `RayHistoryEncoder` is a callable class for ``ray.data.Dataset.map_batches``.

Each Ray actor loads the model once (merged, as `interestbert encode` does) and encodes the batches of verbalised
histories it is given; Ray spreads the actors over the cluster and streams the data through them. Verbalise
first (`Verbaliser.texts`, on the driver or in an earlier ``map_batches``), then::

    import ray
    from interestbert.inference.ray_data import RayHistoryEncoder

    ds = ray.data.from_items([{"user_id": u, "text": t} for u, t in zip(users, verbaliser.texts(users))])
    ds = ds.map_batches(RayHistoryEncoder, fn_constructor_kwargs={"model": "my-org/office-recs",
                                                                  "max_seq_length": 256},
                        concurrency=8, batch_size=1024, num_cpus=1)
    ds.write_parquet("s3://bucket/embeddings/")  # user_id, text, embedding (fixed-size list of float32)

The extra ``interestbert[ray]`` installs Ray; the rest of interestbert never imports it.
"""

from __future__ import annotations

import numpy as np


class RayHistoryEncoder:
    """Encodes the ``text_column`` of each batch into ``output_column`` (unit-norm float32 rows).

    Args:
        model: A model folder or Hub id (default: the packaged base model).
        max_seq_length: Token budget (default: the model's); the texts should have been verbalised to it.
        precision, backend: As in `InterestEncoder.encode` (``auto`` picks bf16 where the worker's hardware has it).
        batch_size: Texts per forward pass (Ray's ``batch_size`` is how many rows one call receives).
        threads: torch threads per actor (match ``num_cpus`` of ``map_batches``).
        device: ``cpu``, ``cuda``, ...; default: CUDA when the actor has one.
        text_column, output_column: Where the texts are and where the vectors go.
    """

    def __init__(
        self,
        model: str | None = None,
        max_seq_length: int | None = None,
        precision: str = "auto",
        backend: str = "torch",
        batch_size: int = 32,
        threads: int | None = 1,
        device: str | None = None,
        text_column: str = "text",
        output_column: str = "embedding",
    ):
        import torch

        from interestbert.encoder.backends import EncodeOptions
        from interestbert.encoder.model import DEFAULT_BASE_MODEL, InterestEncoder

        if threads is not None:
            torch.set_num_threads(int(threads))
        self.encoder = InterestEncoder.from_pretrained(
            model or DEFAULT_BASE_MODEL, max_seq_length=max_seq_length, device=device
        ).merge_adapter()
        self.options = self.encoder.resolve_options(EncodeOptions(precision, backend, int(batch_size)))
        self.text_column, self.output_column = text_column, output_column

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t in batch[self.text_column]]
        vectors = self.encoder.encode(texts, options=self.options)
        return {**batch, self.output_column: np.asarray(vectors, dtype=np.float32)}
