"""ModelFolder: the one layout of a saved model, its generated card, and portable training args."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from interestbert.encoder import InterestEncoder
from interestbert.encoder.drift import DriftConfig, DriftMonitor
from interestbert.encoder.head import StrategyHead
from interestbert.encoder.hub.folder import ModelFolder
from interestbert.encoder.sequence import SequenceHead, SequenceOptions

ITEMS = ["I1", "I2", "I3", "I4"]


def with_heads(encoder: InterestEncoder) -> InterestEncoder:
    rng = np.random.default_rng(0)
    encoder.head = StrategyHead(ITEMS, rng.normal(size=(4, 32)).astype(np.float32), popularity=np.arange(4))
    torch.manual_seed(0)
    encoder.sequence_head = SequenceHead(
        ITEMS,
        rng.normal(size=(4, 32)).astype(np.float32),
        options=SequenceOptions(dim=8, layers=1, heads=2, dropout=0.0, max_events=5),
    )
    return encoder


def files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_every_part_has_its_own_subfolder(tiny_encoder, tmp_path):
    folder = ModelFolder(tmp_path / "m")
    folder.save_encoder(with_heads(tiny_encoder))
    DriftMonitor(tiny_encoder.encode, DriftConfig(threshold=0.3)).save_pretrained(folder.path)
    folder.save_training_args({"card": "synthetic-shop", "lora_r": 8})
    folder.save_results({"card": "synthetic-shop", "test": {"hr@10": 0.5, "ndcg@10": 0.25, "mrr@10": 0.2, "n": 9}})
    ours = {f for f in files(folder.path) if f.startswith("interestbert/")}
    assert ours == {
        "interestbert/config.json",
        "interestbert/training_args.json",
        "interestbert/strategy_head/model.safetensors",
        "interestbert/strategy_head/config.json",
        "interestbert/sequence_head/model.safetensors",
        "interestbert/sequence_head/config.json",
        "interestbert/drift/config.json",
    }
    assert {
        "README.md",
        "all_results.json",
        "adapter_config.json",
        "adapter_model.safetensors",
        "modules.json",
    } <= files(folder.path)
    assert not [f for f in files(folder.path) if ".tmp" in f]  # no temporary file is left behind
    loaded = InterestEncoder.from_pretrained(folder.path)
    x = torch.randn(2, 32)
    torch.testing.assert_close(loaded.head(x), tiny_encoder.head(x))
    history = torch.tensor([[-1, 0, 1, 2, 3]])
    torch.testing.assert_close(loaded.sequence_head.scores(history), tiny_encoder.sequence_head.eval().scores(history))
    assert DriftMonitor.from_pretrained(folder.path, tiny_encoder.encode).config.threshold == 0.3


def test_the_card_is_interestberts_own_and_lists_the_test_metrics(tiny_encoder, tmp_path):
    folder = ModelFolder(tmp_path / "m")
    folder.save_encoder(tiny_encoder)
    card = (folder.path / "README.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["library_name"] == "sentence-transformers" and meta["base_model_relation"] == "adapter"
    assert meta["base_model"] == tiny_encoder.base_model and "interestbert" in meta["tags"] and meta["license"]
    assert "model-index" not in meta and "No evaluation is recorded" in card  # nothing measured yet
    for section in ("## Usage", "## Training", "## Evaluation", "## Limitations", "## Privacy"):
        assert section in card

    folder.save_results(
        {
            "card": "synthetic-shop",
            "test": {"hr@10": 0.5, "ndcg@10": 0.25, "mrr@10": 0.125, "n": 9},
            "popularity_test": {"hr@10": 0.1, "ndcg@10": 0.05, "mrr@10": 0.02, "n": 9},
        }
    )
    card = (folder.path / "README.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(card.split("---\n")[1])
    (index,) = meta["model-index"]
    (result,) = index["results"]  # popularity is a baseline, not this model's result
    assert result["dataset"]["name"] == "synthetic-shop" and result["dataset"]["split"] == "test"
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"hr@10": 0.5, "ndcg@10": 0.25, "mrr@10": 0.125}
    assert "| strategy head | 0.5000 | 0.2500 | 0.1250 |" in card and "| popularity | 0.1000 |" in card
    assert "9 users" in card


def test_training_args_record_no_local_path(tiny_encoder, tmp_path):
    card = tmp_path / "cards" / "my-shop" / "README.md"
    card.parent.mkdir(parents=True)
    card.write_text("---\n---\n")
    folder = ModelFolder(tmp_path / "out")
    folder.save_encoder(tiny_encoder)
    folder.save_training_args(
        {
            "card": str(card),
            "data_dir": str(tmp_path / "data"),
            "output_dir": str(folder.path),
            "model_name_or_path": "sentence-transformers/all-MiniLM-L6-v2",
            "lora_r": 8,
        }
    )
    (tmp_path / "data").mkdir()
    folder.save_training_args(
        {
            "card": str(card),
            "data_dir": str(tmp_path / "data"),
            "output_dir": str(folder.path),
            "model_name_or_path": "sentence-transformers/all-MiniLM-L6-v2",
            "lora_r": 8,
        }
    )
    saved = folder.training_args()
    assert saved == {
        "card": "my-shop",
        "data_dir": "../data",
        "output_dir": ".",
        "model_name_or_path": "sentence-transformers/all-MiniLM-L6-v2",
        "lora_r": 8,
    }
    for path in folder.path.rglob("*.json"):
        assert str(tmp_path) not in path.read_text(encoding="utf-8"), path
    assert str(tmp_path) not in (folder.path / "README.md").read_text(encoding="utf-8")


def test_clear_removes_the_model_but_not_other_files(tiny_encoder, tmp_path):
    folder = ModelFolder(tmp_path / "m")
    folder.save_encoder(with_heads(tiny_encoder))
    folder.save_results({"test": {"hr@10": 0.1, "ndcg@10": 0.1, "mrr@10": 0.1}})
    (folder.path / "notes.txt").write_text("mine")
    folder.clear()
    assert not folder.is_model() and folder.config() is None and folder.results() is None
    assert not (folder.path / "interestbert").exists() and (folder.path / "notes.txt").read_text() == "mine"


def test_a_part_without_weights_is_refused_with_a_fix(tiny_encoder, tmp_path):
    folder = ModelFolder(tmp_path / "m")
    folder.save_encoder(with_heads(tiny_encoder))
    (folder.part("strategy_head") / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="save the model again"):
        InterestEncoder.from_pretrained(folder.path)
