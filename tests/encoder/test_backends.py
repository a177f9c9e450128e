"""The fast inference paths: precision auto/fp32/bf16 and the torch, OpenVINO and ONNX Runtime backends give the
embeddings of the fp32 model; exports are cached by the model's hash and redone when the weights change."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from interestbert.encoder import backends
from interestbert.encoder.backends import resolve_precision
from interestbert.inference.cli import main

TEXTS = [
    "viewed: bamboo watering can",
    "bought: pruning shears\nviewed: watering can\nrated 4/5: gardening gloves",
    "added to cart: toy story",
    "viewed: a b c d e f g h i j k l m n o p",
] * 3


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERESTBERT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_auto_precision_follows_the_hardware(monkeypatch):
    assert resolve_precision("fp32") == ("fp32", "requested") and resolve_precision("bf16")[0] == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    precision, why = resolve_precision("auto", "cpu")
    assert precision == "fp32" and "neither AMX nor avx512_bf16" in why
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert resolve_precision("auto", "cpu") == ("bf16", "auto: the CPU has avx512_bf16")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_precision("auto", "cpu") == ("bf16", "auto: the CPU has AMX")
    with pytest.raises(ValueError, match="not one of"):
        resolve_precision("int4")


@pytest.mark.parametrize("has_bf16", [False, True])
def test_encode_command_records_what_auto_picked(tiny_bert, synthetic_dir, tmp_path, capsys, monkeypatch, has_bf16):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: has_bf16)
    out = tmp_path / "emb"
    assert (
        main(
            [
                "encode",
                "--card",
                "synthetic-shop",
                "--data-dir",
                str(synthetic_dir),
                "--model",
                str(tiny_bert),
                "--max-seq-length",
                "40",
                "--limit-users",
                "4",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    expected = "bf16" if has_bf16 else "fp32"
    assert json.loads((out / "_manifest.json").read_text())["precision"] == expected
    assert f"precision {expected} (auto: " in capsys.readouterr().err


def cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_own_loop_equals_sentence_transformers_and_bf16_is_close(tiny_encoder):
    reference = tiny_encoder.encode(TEXTS, batch_size=3)
    own = backends.TorchRunner(tiny_encoder, "fp32").encode(TEXTS, batch_size=3)
    np.testing.assert_allclose(own, reference, atol=1e-5)
    bf16 = tiny_encoder.encode(TEXTS, batch_size=3, precision="bf16")
    assert bf16.dtype == np.float32 and cosines(bf16, reference).min() > 0.99
    assert np.abs(bf16 - reference).max() > 0  # it did run in bf16


def test_bf16_runs_a_bf16_copy_of_the_merged_model_that_follows_the_weights(tiny_encoder):
    """bf16 is weights and activations in bf16 (a merged copy), not autocast over the fp32 model; the encoder
    itself stays fp32, and a change of its weights (a training step) rebuilds the copy."""

    def set_adapter(seed):
        with torch.no_grad():
            for name, p in tiny_encoder.model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))

    set_adapter(0)
    first = tiny_encoder.encode(TEXTS, batch_size=3)
    assert cosines(tiny_encoder.encode(TEXTS, batch_size=3, precision="bf16"), first).min() > 0.99
    (runner,) = [r for (backend, precision, _), (_, r) in tiny_encoder._runners.items() if precision == "bf16"]
    assert {p.dtype for p in runner.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in tiny_encoder.model.parameters()} == {torch.float32}
    assert not any("lora" in name for name, _ in runner.model.named_parameters())  # merged, not run beside
    set_adapter(1)
    second = tiny_encoder.encode(TEXTS, batch_size=3)
    assert cosines(second, first).min() < 0.99  # the new adapter changes the embeddings ...
    assert cosines(tiny_encoder.encode(TEXTS, batch_size=3, precision="bf16"), second).min() > 0.99  # ... and bf16's


@pytest.mark.parametrize("backend", ["openvino", "onnx"])
def test_exported_backends_equal_fp32_and_are_cached_by_hash(tiny_encoder, private_cache, backend):
    reference = tiny_encoder.encode(TEXTS, batch_size=4)
    fast = tiny_encoder.encode(TEXTS, batch_size=4, backend=backend)
    np.testing.assert_allclose(fast, reference, atol=2e-5)
    exports = sorted((private_cache / "exports").iterdir())
    assert len(exports) == 1 and exports[0].name.startswith(tiny_encoder.fingerprint()[:32])
    tiny_encoder.encode(TEXTS[:2], backend=backend)
    assert sorted((private_cache / "exports").iterdir()) == exports  # reused, not exported again
    tiny_encoder.max_seq_length = 8  # the budget is read at each call, not when the runner was made
    np.testing.assert_allclose(tiny_encoder.encode(TEXTS, backend=backend), tiny_encoder.encode(TEXTS), atol=2e-5)
    tiny_encoder.max_seq_length = 64
    with torch.no_grad():  # new weights: a new export under the new hash
        next(p for n, p in tiny_encoder.model.named_parameters() if "lora_B" in n).mul_(3)
    np.testing.assert_allclose(tiny_encoder.encode(TEXTS, backend=backend), tiny_encoder.encode(TEXTS), atol=2e-5)
    assert len(list((private_cache / "exports").iterdir())) == 2
    assert not list((private_cache / "exports").glob(".*")), "no temporary export left"


def test_backend_refusals(monkeypatch):
    with pytest.raises(ValueError, match="no bf16 kernels"):
        backends.check_backend("onnx", "bf16")
    with pytest.raises(ValueError, match="runs on the CPU here"):
        backends.check_backend("openvino", "fp32", "cuda")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # openvino not installed
    with pytest.raises(ValueError, match=r'pip install "interestbert\[openvino\]"'):
        backends.check_backend("openvino", "fp32")


def test_fingerprint_ignores_a_fresh_adapter_and_sees_a_trained_one(tiny_bert, tiny_encoder):
    from interestbert.encoder import InterestEncoder

    a, b = (InterestEncoder.from_pretrained(str(tiny_bert)) for _ in range(2))
    assert a.fingerprint() == b.fingerprint()  # random lora_A, zero lora_B: the same function
    trained = tiny_encoder.fingerprint()
    assert trained != a.fingerprint()
    assert tiny_encoder.merge_adapter().fingerprint() != trained  # merged: the same function, other tensors
    assert tiny_encoder.fingerprint() == tiny_encoder.fingerprint()


def test_encode_command_with_openvino_records_it(tiny_bert, synthetic_dir, tmp_path, capsys):
    from interestbert.inference.encode import read_embeddings

    args = [
        "encode",
        "--card",
        "synthetic-shop",
        "--data-dir",
        str(synthetic_dir),
        "--model",
        str(tiny_bert),
        "--max-seq-length",
        "40",
        "--limit-users",
        "16",
    ]
    assert main([*args, "--output", str(tmp_path / "ov"), "--backend", "openvino", "--precision", "fp32"]) == 0
    assert "fp32, openvino" in capsys.readouterr().out
    assert main([*args, "--output", str(tmp_path / "pt"), "--precision", "fp32"]) == 0
    manifest = json.loads((tmp_path / "ov" / "_manifest.json").read_text())
    assert manifest["backend"] == "openvino" and manifest["precision"] == "fp32"
    (ua, a), (ub, b) = read_embeddings(tmp_path / "ov"), read_embeddings(tmp_path / "pt")
    assert ua == ub
    np.testing.assert_allclose(a, b, atol=2e-5)
    capsys.readouterr()
    assert main([*args, "--output", str(tmp_path / "x"), "--backend", "onnx", "--precision", "bf16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --backend onnx: ONNX Runtime has no bf16") and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_int8_runs_on_request_after_printing_its_cosine(tiny_encoder, backend, caplog, monkeypatch):
    for capability in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        for value in (False, True):
            monkeypatch.setattr(torch.cpu, capability, lambda value=value: value)
            assert resolve_precision("auto")[0] != "int8"  # never picked by itself
    reference = tiny_encoder.encode(TEXTS)
    with caplog.at_level("WARNING", logger="interestbert.encoder.backends"):
        quantised = tiny_encoder.encode(TEXTS, backend=backend, precision="int8")
    assert f"cosine to fp32 on a sample of {len(TEXTS)} texts: min" in caplog.text
    assert np.abs(quantised - reference).max() > 0 and cosines(quantised, reference).min() > 0.8
    caplog.clear()
    tiny_encoder.encode(TEXTS, backend=backend, precision="int8")
    assert "cosine" not in caplog.text  # checked once per model
    with pytest.raises(ValueError, match="int8 with OpenVINO"):
        backends.check_backend("openvino", "int8")


def test_an_exported_runner_is_reused_and_follows_the_thread_count(tiny_encoder):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        first = tiny_encoder._runner("openvino", "fp32", TEXTS, 4)
        assert tiny_encoder._runner("openvino", "fp32", TEXTS, 4) is first  # not compiled again per call
        assert first.compiled.get_property("INFERENCE_NUM_THREADS") == 1
        torch.set_num_threads(2)
        second = tiny_encoder._runner("openvino", "fp32", TEXTS, 4)
        assert second is not first and second.compiled.get_property("INFERENCE_NUM_THREADS") == 2
    finally:
        torch.set_num_threads(threads)
