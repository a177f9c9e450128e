"""StrategyHead: logits, log-popularity bias, top-k without excluded items, save/load and cold-start rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interestbert.encoder.head import StrategyHead


def test_head_scores_topk_save_load_and_cold_start(tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(6, 4)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    head = StrategyHead([f"i{i}" for i in range(6)], emb, popularity=[5, 0, 0, 0, 0, 100], init_scale=10)
    interest = torch.as_tensor(emb[[1]])
    logits = head(interest)
    np.testing.assert_allclose(
        logits.detach().numpy(), 10 * interest.numpy() @ emb.T + head.bias.detach().numpy(), rtol=1e-5
    )
    assert head.bias[5] > head.bias[0] > head.bias[1]  # log popularity
    top = head.topk(interest, k=3, exclude=[[1]])
    assert 1 not in top.indices[0].tolist() and len(top.indices[0]) == 3

    head.save_pretrained(tmp_path)
    loaded = StrategyHead.from_pretrained(tmp_path)
    assert loaded.item_ids == head.item_ids
    torch.testing.assert_close(loaded(interest), head(interest))

    new = emb[[2]] * -1
    loaded.add_items(["fresh"], new)
    assert loaded.n_items == 7 and loaded.index["fresh"] == 6
    torch.testing.assert_close(loaded.weight[6], torch.as_tensor(new[0]) * 10)
    assert loaded.topk(torch.as_tensor(new), k=1).indices.item() == 6  # found from its text alone
    with pytest.raises(ValueError, match="already"):
        loaded.add_items(["i0"], emb[[0]])


def test_a_saved_head_whose_weights_do_not_match_its_config_is_refused(tmp_path):
    head = StrategyHead(["a", "b"], np.eye(2, 4, dtype=np.float32))
    head.save_pretrained(tmp_path)
    import json

    config = json.loads((tmp_path / "config.json").read_text())
    config["item_ids"].append("c")
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"shape \(2, 4\) but its config lists 3 items of dim 4"):
        StrategyHead.from_pretrained(tmp_path)
