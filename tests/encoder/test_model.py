"""InterestEncoder: LoRA options, a saved folder loads three ways with equal embeddings, the base named by Hub id."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from interestbert.encoder import DEFAULT_BASE_MODEL, InterestEncoder, LoraOptions
from interestbert.encoder.packaged import register_base_model, register_in_hub_cache, resolve_model_path

TEXTS = [
    "bought: Ergonomic pruning shears by GreenThumb (Gardening)\nviewed: Bamboo watering can",
    "rated 5/5: Toy Story (1995), Animation, Children's, Comedy",
    "viewed: Ultralight dome tent by Basecamp (Camping)",
]


def peft_route(base: str, folder, texts) -> np.ndarray:
    """The plain-PEFT way: PeftModel over AutoModel, then mean pooling and normalisation by hand."""
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    model = PeftModel.from_pretrained(AutoModel.from_pretrained(base), str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (batch, seq, hidden)
    mask = batch["attention_mask"].unsqueeze(-1).float()  # (batch, seq, 1)
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()


def test_lora_options_are_validated():
    with pytest.raises(ValueError, match="`r` should be a positive integer, got 0"):
        LoraOptions(r=0)
    with pytest.raises(ValueError, match="`lora_dropout`"):
        LoraOptions(lora_dropout=1.5)
    with pytest.raises(ValueError, match="`target_modules`"):
        LoraOptions(target_modules=[])
    assert LoraOptions(target_modules="query").target_modules == ["query"]


def test_fresh_adapter_trains_only_lora_and_starts_at_the_base(tiny_bert):
    from sentence_transformers import SentenceTransformer

    encoder = InterestEncoder.from_pretrained(str(tiny_bert), r=4, lora_alpha=8, target_modules=["query", "value"])
    trainable = [n for n, p in encoder.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("pooler" in n for n in trainable)
    # B starts at zero: the untouched adapter gives the base model's embeddings
    base = SentenceTransformer(str(tiny_bert)).encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(encoder.encode(TEXTS), base, atol=1e-6)


def test_a_fresh_adapter_is_skipped_exactly_and_a_trained_one_is_not(tiny_bert):
    import torch

    encoder = InterestEncoder.from_pretrained(str(tiny_bert))
    layers = encoder._zero_lora_layers()
    assert layers, "a fresh adapter (B = 0) is skipped while encoding"
    trainable = {n for n, p in encoder.model.named_parameters() if p.requires_grad}
    with_adapter = encoder.model.encode(TEXTS, convert_to_numpy=True)  # through the LoRA layers
    np.testing.assert_array_equal(encoder.encode(TEXTS), with_adapter)  # exactly, not just close
    assert not any(m.disable_adapters for m in layers), "the adapter is active again after encode"
    assert {n for n, p in encoder.model.named_parameters() if p.requires_grad} == trainable
    with torch.no_grad():  # as after a training step: B is no longer zero, so the adapter must be used
        for layer in layers:
            layer.lora_B["default"].weight.add_(0.5)
    assert encoder._zero_lora_layers() == []
    assert np.abs(encoder.encode(TEXTS) - with_adapter).max() > 1e-4


def test_encode_returns_unit_norm_float32_rows(tiny_encoder):
    vectors = tiny_encoder.encode(TEXTS, batch_size=2)
    assert vectors.shape == (3, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert tiny_encoder.encode([]).shape == (0, 32)
    with pytest.raises(TypeError, match="list of strings"):
        tiny_encoder.encode("one text")


def test_tiny_round_trip_three_ways(tiny_encoder, tiny_bert, tmp_path):
    from sentence_transformers import SentenceTransformer

    expected = tiny_encoder.encode(TEXTS)
    folder = tmp_path / "model"
    tiny_encoder.save_pretrained(folder)
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p], "no temporary folder left behind"
    assert (folder / "adapter_model.safetensors").is_file() and (folder / "interestbert" / "config.json").is_file()
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt")), "safetensors and JSON only"

    np.testing.assert_allclose(InterestEncoder.from_pretrained(folder).encode(TEXTS), expected, atol=1e-5)
    np.testing.assert_allclose(SentenceTransformer(str(folder)).encode(TEXTS), expected, atol=1e-5)
    np.testing.assert_allclose(peft_route(str(tiny_bert), folder, TEXTS), expected, atol=1e-5)
    # the adapter really changes the output, so equality above is not trivially the base model's
    base = SentenceTransformer(str(tiny_bert)).encode(TEXTS, normalize_embeddings=True)
    assert np.abs(base - expected).max() > 1e-3


def test_merged_adapter_gives_the_same_embeddings_and_still_saves(tiny_encoder, tmp_path):
    from peft.tuners.lora.layer import LoraLayer

    expected = tiny_encoder.encode(TEXTS)
    tiny_encoder.merge_adapter().merge_adapter()  # idempotent
    assert all(m.merged for m in tiny_encoder.model.modules() if isinstance(m, LoraLayer))
    np.testing.assert_allclose(tiny_encoder.encode(TEXTS), expected, atol=1e-5)
    tiny_encoder.save_pretrained(tmp_path / "m")
    np.testing.assert_allclose(InterestEncoder.from_pretrained(tmp_path / "m").encode(TEXTS), expected, atol=1e-5)


def test_saving_keeps_the_training_mode(tiny_encoder, tmp_path):
    tiny_encoder.model.train()
    tiny_encoder.save_pretrained(tmp_path / "m")
    assert all(m.training for m in tiny_encoder.model.modules()), "dropout must stay on for the rest of training"
    tiny_encoder.model.eval()
    tiny_encoder.save_pretrained(tmp_path / "m")
    assert not any(m.training for m in tiny_encoder.model.modules())


def test_saved_folder_refuses_different_lora_options(tiny_encoder, tmp_path):
    tiny_encoder.save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="differ"):
        InterestEncoder.from_pretrained(tmp_path / "m", r=tiny_encoder.lora.r * 2)
    assert InterestEncoder.from_pretrained(tmp_path / "m", r=tiny_encoder.lora.r).lora == tiny_encoder.lora


def test_save_overwrites_an_existing_model_folder(tiny_encoder, tmp_path):
    folder = tmp_path / "m"
    tiny_encoder.save_pretrained(folder)
    (folder / "interestbert" / "head.json").write_text("{}")  # another part, saved by its owner
    with torch.no_grad():
        next(p for n, p in tiny_encoder.model.named_parameters() if "lora_B" in n).add_(1.0)
    tiny_encoder.save_pretrained(folder)
    np.testing.assert_allclose(
        InterestEncoder.from_pretrained(folder).encode(TEXTS), tiny_encoder.encode(TEXTS), atol=1e-5
    )
    assert (folder / "interestbert" / "head.json").is_file()


def test_saving_without_a_head_removes_a_stale_head(tiny_encoder, tmp_path):
    from interestbert.encoder.head import StrategyHead

    tiny_encoder.head = StrategyHead(["a", "b"], np.eye(2, 32, dtype=np.float32))
    tiny_encoder.save_pretrained(tmp_path / "m")
    assert InterestEncoder.from_pretrained(tmp_path / "m").head.item_ids == ["a", "b"]
    tiny_encoder.head = None
    tiny_encoder.save_pretrained(tmp_path / "m")
    assert InterestEncoder.from_pretrained(tmp_path / "m").head is None


def test_real_model_round_trip_names_the_base_by_hub_id(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from sentence_transformers import SentenceTransformer

    encoder = InterestEncoder.from_pretrained(lora_dropout=0.0)
    assert encoder.base_model == DEFAULT_BASE_MODEL and encoder.embedding_dim == 384
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in encoder.model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)
    expected = encoder.encode(TEXTS)
    folder = tmp_path / "real"
    cache = tmp_path / "hub-cache"
    with monkeypatch.context() as m:
        m.setattr(constants, "HF_HUB_CACHE", str(cache))
        encoder.save_pretrained(folder)
        assert not cache.exists()  # saving never writes into the user's cache ...
        snapshot = register_base_model(folder)  # ... registering is a step of its own
        assert snapshot is not None and snapshot.is_relative_to(cache) and (snapshot / "config.json").is_file()
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: sentence-transformers\n") and "base_model_relation: adapter" in card
    assert "# interestbert:" in card and "This is a [sentence-transformers]" not in card  # not the base's card

    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".txt"):
            text = path.read_text(encoding="utf-8")
            assert "site-packages" not in text and str(tmp_path) not in text, f"a local path leaked into {path}"

    # offline (HF_HUB_OFFLINE=1 in conftest): the Hub id resolves through the registered packaged copy
    register_base_model(folder)
    np.testing.assert_allclose(SentenceTransformer(str(folder)).encode(TEXTS), expected, atol=1e-5)
    np.testing.assert_allclose(InterestEncoder.from_pretrained(folder).encode(TEXTS), expected, atol=1e-5)
    np.testing.assert_allclose(peft_route(resolve_model_path(DEFAULT_BASE_MODEL), folder, TEXTS), expected, atol=1e-5)


def test_register_in_hub_cache_is_idempotent_and_leaves_real_downloads_alone():
    first = register_in_hub_cache(DEFAULT_BASE_MODEL)
    assert first is not None and (first / "config.json").is_file()
    assert register_in_hub_cache(DEFAULT_BASE_MODEL) == first
    assert register_in_hub_cache("google-bert/bert-base-uncased") is None  # not packaged: nothing to do


def test_interest_horizons_parse_and_validate():
    from interestbert.encoder.options import WHOLE_HISTORY, format_horizons, parse_horizons

    assert parse_horizons(None) == WHOLE_HISTORY == parse_horizons("all:1") == parse_horizons("all")
    assert parse_horizons("1:2, 4:1, all:1") == ((1, 0.5), (4, 0.25), (None, 0.25))
    assert parse_horizons([[1, 0.5], [None, 0.5]]) == ((1, 0.5), (None, 0.5))
    assert parse_horizons(format_horizons(parse_horizons("1:0.5,4:0.3,all:0.2"))) == parse_horizons(
        "1:0.5,4:0.3,all:0.2"
    )
    for bad, match in [
        ("1:x", "EVENTS:WEIGHT"),
        ("0:1", ">= 1"),
        ("1:0", "positive"),
        ("1:1,1:2", "repeat"),
        ("", "at least one"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_horizons(bad)


def test_encode_histories_is_the_weighted_sum_of_horizon_texts_and_survives_saving(
    tiny_encoder, synthetic_data, tmp_path
):
    from interestbert.encoder import InterestEncoder, Verbaliser

    verbaliser = Verbaliser(synthetic_data, tiny_encoder.tokenizer, 48)
    users, ends = np.arange(12), np.full(12, 9)
    whole = tiny_encoder.encode(verbaliser.texts_for_indices(users, ends))
    assert np.allclose(tiny_encoder.encode_histories(verbaliser, users, ends), whole, atol=1e-6), "default: plain"

    tiny_encoder.horizons = ((1, 0.6), (None, 0.4))
    newest = tiny_encoder.encode(verbaliser.texts_for_indices(users, ends, max_events=1))
    expected = 0.6 * newest + 0.4 * whole
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got = tiny_encoder.encode_histories(verbaliser, users, ends)
    assert np.allclose(got, expected, atol=1e-5)
    assert not np.allclose(got, whole, atol=1e-3), "the newest event must move the interest"

    tiny_encoder.save_pretrained(tmp_path / "m")
    loaded = InterestEncoder.from_pretrained(tmp_path / "m", max_seq_length=64)
    assert loaded.horizons == ((1, 0.6), (None, 0.4))
    assert np.allclose(loaded.encode_histories(verbaliser, users, ends), got, atol=1e-5)


def test_a_reloaded_model_keeps_the_token_budget_it_was_saved_with(tiny_encoder, tmp_path):
    """sentence-transformers 6.3 no longer records the budget in sentence_bert_config.json: a folder saved at 48
    tokens must not come back at the base model's 64 (nor with the budget passed again to hide it)."""
    from interestbert.encoder import InterestEncoder

    tiny_encoder.max_seq_length = 48
    tiny_encoder.save_pretrained(tmp_path / "m")
    assert InterestEncoder.from_pretrained(tmp_path / "m").max_seq_length == 48
    assert InterestEncoder.from_pretrained(tmp_path / "m", max_seq_length=32).max_seq_length == 32
