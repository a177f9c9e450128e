"""The Ray recipe: `RayHistoryEncoder` in ``ray.data.Dataset.map_batches`` on a local Ray with 2 workers gives the
embeddings `InterestEncoder.encode` gives."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="ray is in the test extra (interestbert[ray])")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_map_batches_on_two_workers_equals_encode(local_ray, tiny_bert, synthetic_data):
    from interestbert.encoder import InterestEncoder, Verbaliser
    from interestbert.inference.ray_data import RayHistoryEncoder

    encoder = InterestEncoder.from_pretrained(str(tiny_bert), max_seq_length=40).merge_adapter()
    verbaliser = Verbaliser(synthetic_data, encoder.tokenizer, 40)
    users = verbaliser.users[:30]
    texts = verbaliser.texts(users)
    ds = ray.data.from_items([{"user_id": u, "text": t} for u, t in zip(users, texts)], override_num_blocks=6)
    ds = ds.map_batches(
        RayHistoryEncoder,
        fn_constructor_kwargs={"model": str(tiny_bert), "max_seq_length": 40, "precision": "fp32"},
        concurrency=2,
        batch_size=5,
        num_cpus=1,
    )
    rows = {r["user_id"]: r for r in ds.take_all()}
    assert sorted(rows) == sorted(users)  # every user once
    got = np.stack([np.asarray(rows[u]["embedding"], dtype=np.float32) for u in users])
    np.testing.assert_allclose(got, encoder.encode(texts), atol=1e-5)
    assert rows[users[0]]["text"] == texts[0]
