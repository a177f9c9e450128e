"""Fast inference for `InterestEncoder.encode`: a precision (fp32, bf16, int8) and a backend (torch, OpenVINO,
ONNX Runtime).

``precision="auto"`` picks bf16 where the hardware computes it natively (a CUDA device that supports it; a CPU
with AMX or avx512_bf16) and fp32 elsewhere (on an AVX2-only CPU bf16 is emulated and slower), and says what it
picked and why (`resolve_precision`). It never picks int8: ``precision="int8"`` (torch or ONNX Runtime dynamic
quantisation) runs only on request, after `int8_check` has logged its cosine to fp32 on a sample. The torch
backend at fp32 is sentence-transformers' own ``encode``; every other combination runs the same steps here: texts
tokenised once and sorted by token length (so a batch pads to its longest text, not the corpus'), one forward per
batch (on CUDA through pinned host memory), mean pooling over the attention mask in fp32, L2 normalisation. bf16
runs a merged copy of the model whose weights and activations are bf16 (not autocast, which keeps the activations
in fp32 and re-casts every weight in every batch, for no gain in closeness to fp32).

OpenVINO and ONNX Runtime run an export of the merged model (LoRA folded into the base weights), made on first use
and cached in ``$INTERESTBERT_CACHE`` (default ``~/.cache/interestbert``) under ``exports/<model hash>-<backend>``,
keyed by `InterestEncoder.fingerprint` and the backend's version: outside the model folder, so `interestbert
publish` never uploads it. They are optional extras (``pip install "interestbert[openvino]"``, ``[onnx]``).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "int8")
INT8_SAMPLE = 64  # texts of the first call that int8 is checked on against fp32
BACKENDS = ("torch", "openvino", "onnx")
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what the model and its exports take
_EXTRA = {"openvino": ("openvino", "openvino"), "onnx": ("onnxruntime", "onnx")}  # backend: (module, extra)


def bf16_support(device=None) -> str | None:
    """Why bf16 is native on ``device`` (None: it is not)."""
    import torch

    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} computes bf16" if torch.cuda.is_bf16_supported() else None
    if device.type != "cpu":
        return None
    if torch.cpu._is_amx_tile_supported():
        return "the CPU has AMX"
    if torch.cpu._is_avx512_bf16_supported():
        return "the CPU has avx512_bf16"
    return None


def resolve_precision(precision: str, device=None) -> tuple[str, str]:
    """``(fp32 or bf16, why)`` for a requested precision on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
    if precision != "auto":
        return precision, "requested"
    why = bf16_support(device)
    if why is not None:
        return "bf16", f"auto: {why}"
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    where = (
        f"this CPU ({capability}) has neither AMX nor avx512_bf16"
        if torch.device(device or "cpu").type == "cpu"
        else f"{device} does not compute bf16"
    )
    return "fp32", f"auto: {where}, so bf16 would be emulated and slower"


def check_backend(backend: str, precision: str, device=None) -> None:
    """Refuses a backend that is not installed or cannot run this precision/device, with the fix."""
    import importlib.util

    import torch

    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}.")
    if backend == "torch":
        if precision == "int8" and torch.device(device or "cpu").type != "cpu":
            raise ValueError("dynamic int8 runs on the CPU; on a GPU use bf16.")
        return
    module, extra = _EXTRA[backend]
    if importlib.util.find_spec(module) is None:
        raise ValueError(f'backend {backend!r} needs the {module} package: pip install "interestbert[{extra}]".')
    if torch.device(device or "cpu").type != "cpu":
        raise ValueError(f"backend {backend!r} runs on the CPU here; on {device} use --backend torch.")
    if backend == "onnx" and precision == "bf16":
        raise ValueError("ONNX Runtime has no bf16 kernels on the CPU; use --backend openvino or torch for bf16.")
    if backend == "openvino" and precision == "int8":
        raise ValueError(
            "int8 with OpenVINO needs a calibrated NNCF model, which interestbert does not make; use "
            "--backend onnx or torch for dynamic int8."
        )


@dataclass(frozen=True)
class EncodeOptions:
    """How texts are encoded: one object, checked here once, resolved once per command (`resolve`) and carried by
    the scorers, `InterestEncoder.encode_histories` and the encode run.

    Args:
        precision: One of `PRECISIONS`: ``fp32``, ``bf16``, ``auto`` (bf16 where the hardware computes it, else
            fp32; `resolve` says which) or ``int8`` (on request only).
        backend: One of `BACKENDS`: ``torch``, ``openvino`` or ``onnx``.
        batch_size: Texts per forward pass.
    """

    precision: str = "fp32"
    backend: str = "torch"
    batch_size: int = 32

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}.")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}.")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size is {self.batch_size!r}; it must be a positive integer.")

    def resolve(self, device=None) -> tuple[EncodeOptions, str]:
        """``(options, why)``: these options with ``auto`` replaced by what it means on ``device`` (fp32 or bf16),
        after checking that the backend is installed and runs that precision there (`check_backend`)."""
        precision, why = resolve_precision(self.precision, device)
        check_backend(self.backend, precision, device)
        return replace(self, precision=precision), why


def cache_root() -> Path:
    return Path(os.environ.get("INTERESTBERT_CACHE") or Path.home() / ".cache" / "interestbert")


# -------------------------------------------------------------------------------------------------- the loop


def _batches(tokenizer, texts: list[str], max_length: int, batch_size: int):
    """``(positions, encoded batch)`` in order of token length, longest first."""
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    order = np.argsort(-np.asarray(lengths), kind="stable")
    for lo in range(0, len(order), batch_size):
        pos = order[lo : lo + batch_size]
        yield (
            pos,
            tokenizer(
                [texts[i] for i in pos.tolist()],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="np",
                return_token_type_ids=True,
            ),
        )


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    mask = mask[..., None].astype(np.float32)
    pooled = (hidden.astype(np.float32) * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
    return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)


class _Runner:
    """Encodes texts with one backend at one precision; subclasses give ``_hidden(batch) -> (B, T, dim)``."""

    def __init__(self, encoder, precision: str):
        self.encoder = encoder  # its tokenizer and max_seq_length are read at each call (they may change)
        self.precision = precision

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = np.zeros((len(texts), self.encoder.embedding_dim), dtype=np.float32)
        for pos, batch in _batches(self.encoder.tokenizer, texts, self.encoder.max_seq_length, batch_size):
            out[pos] = _mean_pool(self._hidden(batch), batch["attention_mask"])
        return out


class TorchRunner(_Runner):
    """The model itself (fp32), on its device; bf16: a merged copy in bf16 on the same device; int8: a merged
    copy with every Linear dynamically quantised (``torch.ao.quantization.quantize_dynamic``), on the CPU."""

    def __init__(self, encoder, precision: str):
        import torch

        super().__init__(encoder, precision)
        self.model = encoder.model[0].auto_model
        self.device = encoder.device
        if precision == "bf16":
            self.model = _merged_copy(encoder).to(self.device, torch.bfloat16)
        elif precision == "int8":
            from torch.ao.quantization import quantize_dynamic

            self.model = quantize_dynamic(_merged_copy(encoder), {torch.nn.Linear}, dtype=torch.qint8)

    def _hidden(self, batch) -> np.ndarray:
        import torch

        inputs = {k: torch.from_numpy(batch[k]) for k in _INPUTS}
        if self.device.type == "cuda":
            inputs = {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in inputs.items()}
        with torch.inference_mode():
            hidden = self.model(**inputs).last_hidden_state  # (B, T, dim), bf16 in a bf16 copy
        return hidden.float().cpu().numpy()


def _merged_copy(encoder):
    """A copy of the encoder's transformer with every LoRA layer folded into its base layer and removed."""
    from peft.tuners.lora.layer import LoraLayer

    model = copy.deepcopy(encoder.model[0].auto_model).cpu().float().eval()
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            if not module.merged and encoder._live_lora([module]):
                module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module.base_layer)
    return model


def _hidden_module(model):
    """``model`` as ``forward(input_ids, attention_mask, token_type_ids) -> last_hidden_state`` (what the exports
    trace)."""
    import torch

    class Hidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    return Hidden().eval()


def _example(encoder):
    import torch

    batch = encoder.tokenizer(
        ["an example history", "a longer example history of two events"],
        padding=True,
        return_tensors="pt",
        return_token_type_ids=True,
    )
    return tuple(batch[k].to(torch.int64) for k in _INPUTS)


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


class _ExportedRunner(_Runner):
    """A runner of an export of the merged model, made on first use into the cache (atomically) and reused."""

    name = file = ""

    def __init__(self, encoder, precision: str, fingerprint: str):
        from .files import atomic_folder

        super().__init__(encoder, precision)
        self.folder = cache_root() / "exports" / f"{fingerprint[:32]}-{self.name}-{self.version()}"
        if not (self.folder / self.file).is_file():
            logger.info("exporting the merged model to %s (once per model) -> %s", self.name, self.folder)
            with atomic_folder(self.folder) as tmp:
                self.export(_hidden_module(_merged_copy(encoder)), _example(encoder), tmp / self.file)
        self.load(self.folder / self.file)

    def _hidden(self, batch) -> np.ndarray:
        return self.run({k: batch[k].astype(np.int64) for k in _INPUTS})


class OpenVinoRunner(_ExportedRunner):
    """An OpenVINO IR of the merged model (fp32 weights), compiled for the CPU at the precision asked."""

    name, file = "openvino", "model.xml"

    @staticmethod
    def version() -> str:
        import openvino as ov

        return ov.__version__.split("-")[0]

    def export(self, model, example, path: Path) -> None:
        import openvino as ov

        ov.save_model(ov.convert_model(model, example_input=dict(zip(_INPUTS, example))), path, compress_to_fp16=False)

    def load(self, path: Path) -> None:
        import openvino as ov

        config = {
            "INFERENCE_NUM_THREADS": _threads(),
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
        }
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)

    def run(self, inputs: dict) -> np.ndarray:
        return next(iter(self.compiled(inputs).values()))


class OnnxRunner(_ExportedRunner):
    """An ONNX export of the merged model (``torch.onnx.export``), run by ONNX Runtime on the CPU in fp32; int8: the
    export dynamically quantised (``onnxruntime.quantization.quantize_dynamic``, int8 weights)."""

    name, file = "onnx", "model.onnx"

    def __init__(self, encoder, precision: str, fingerprint: str):
        if precision == "int8":
            self.name, self.file = "onnx-int8", "model.int8.onnx"
        super().__init__(encoder, precision, fingerprint)

    @staticmethod
    def version() -> str:
        import onnxruntime as ort

        return ort.__version__

    def export(self, model, example, path: Path) -> None:
        import torch

        axes = {n: {0: "batch", 1: "tokens"} for n in (*_INPUTS, "last_hidden_state")}
        fp32 = path.with_name("model.onnx")
        with torch.no_grad():
            torch.onnx.export(
                model,
                example,
                str(fp32),
                input_names=list(_INPUTS),
                output_names=["last_hidden_state"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        if self.precision == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
            fp32.unlink()

    def load(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, inputs: dict) -> np.ndarray:
        return self.session.run(None, inputs)[0]


def make_runner(encoder, backend: str, precision: str):
    """The runner for a resolved ``precision`` (fp32, bf16 or int8) and a checked ``backend``."""
    if backend == "torch":
        return TorchRunner(encoder, precision)
    fingerprint = encoder.fingerprint()
    return (OpenVinoRunner if backend == "openvino" else OnnxRunner)(encoder, precision, fingerprint)


def int8_check(encoder, runner, texts: list[str], batch_size: int) -> dict:
    """The cosine of int8 embeddings to fp32 ones on the first `INT8_SAMPLE` texts, logged as a warning: int8 is
    several times faster on some CPUs and measurably less exact (min cosine 0.86-0.91 measured on MiniLM)."""
    sample = list(texts[:INT8_SAMPLE])
    reference = encoder.encode(sample, batch_size=batch_size)
    quantised = runner.encode(sample, batch_size)
    cos = (reference * quantised).sum(1)
    check = {"texts": len(sample), "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}
    logger.warning(
        "int8 (%s): cosine to fp32 on a sample of %d texts: min %.4f, mean %.4f; use fp32 where the "
        "embeddings must match",
        type(runner).__name__,
        check["texts"],
        check["min_cosine"],
        check["mean_cosine"],
    )
    return check
