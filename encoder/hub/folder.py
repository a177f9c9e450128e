"""ModelFolder: the one owner of a saved model's layout.

```
README.md                         the generated model card (`interestbert.encoder.hub.model_card`)
modules.json, adapter_config.json, adapter_model.safetensors, tokenizer files, 1_Pooling/, 2_Normalize/, ...
                                  a plain sentence-transformers + PEFT folder (written by sentence-transformers)
all_results.json                  the fine-tuning's metrics (validation, test), when there are any
interestbert/config.json          the encoder: version, base model, LoRA, budget, horizons, which parts exist
interestbert/training_args.json   the fine-tuning options, with no local absolute path
interestbert/strategy_head/       model.safetensors + config.json (`StrategyHead`)
interestbert/sequence_head/       model.safetensors + config.json (`SequenceHead`)
interestbert/drift/config.json    the drift monitor's calibration (`DriftMonitor`)
```

Every part is saved and loaded through this class, every file written atomically (`interestbert.encoder.files`);
the card is rendered again after each write, from what the folder then holds.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..files import (
    atomic_folder,
    atomic_write_json,
    atomic_write_text,
    fsync_path,
    fsync_tree,
    remove_stale_temporaries,
    save_safetensors,
    temporary_sibling,
)

SUBFOLDER = "interestbert"
CONFIG = "config.json"
TRAINING_ARGS = "training_args.json"
RESULTS = "all_results.json"
CARD = "README.md"
WEIGHTS = "model.safetensors"
HEADS = ("strategy_head", "sequence_head")
DRIFT = "drift"
PATH_ARGS = ("card", "data_dir", "output_dir", "model_name_or_path", "resume_from_checkpoint")


class ModelFolder:
    """A saved model's folder (it need not exist yet).

    Example:
        >>> folder = ModelFolder("my-model")  # doctest: +SKIP
        >>> folder.save_encoder(encoder)      # the ST/PEFT files, config.json, heads, the card
        >>> folder.save_results({"test": {...}})
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def subfolder(self) -> Path:
        return self.path / SUBFOLDER

    def part(self, name: str) -> Path:
        """The folder of one part (``strategy_head``, ``sequence_head``, ``drift``)."""
        return self.subfolder / name

    def is_model(self) -> bool:
        return (self.path / "adapter_config.json").is_file()

    # ------------------------------------------------------------------------------------------- the encoder

    def save_encoder(self, encoder) -> None:
        """Writes the encoder (`InterestEncoder`): the sentence-transformers + PEFT files (under a temporary
        name, moved in when complete), its heads and ``config.json``; the card. Other parts (the drift
        calibration, training args, results) stay."""
        self.path.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        tmp = temporary_sibling(self.path)
        tmp.mkdir(mode=0o755)
        modes = [(m, m.training) for m in encoder.model.modules()]
        try:
            encoder.model.save_pretrained(str(tmp))
            adapter = json.loads((tmp / "adapter_config.json").read_text(encoding="utf-8"))
            adapter["base_model_name_or_path"] = encoder.base_model  # a Hub id, never a local path
            atomic_write_text(tmp / "adapter_config.json", json.dumps(adapter, indent=2, sort_keys=True) + "\n")
            (tmp / CARD).unlink(missing_ok=True)  # the base model's card: replaced by our own below
            fsync_tree(tmp)
            for entry in sorted(tmp.iterdir()):
                dest = self.path / entry.name
                if dest.is_dir():
                    shutil.rmtree(dest)
                os.replace(entry, dest)
            fsync_path(self.path)
        finally:
            for module, training in modes:  # saving switches the model to eval mode; training goes on after it
                module.train(training)
            shutil.rmtree(tmp, ignore_errors=True)
        self.save_heads(encoder)

    def save_heads(self, encoder) -> None:
        """Writes the encoder's heads (a missing head's folder is removed: it belongs to another adapter) and
        ``config.json``; renders the card."""
        for name, head in zip(HEADS, (encoder.head, encoder.sequence_head)):
            if head is None:
                self.remove_part(name)
            else:
                self.save_part(name, *head.to_parts())
        atomic_write_json(self.subfolder / CONFIG, encoder.config())
        self.write_card()

    def config(self) -> dict | None:
        """``interestbert/config.json``, or None for a folder without one."""
        return _read_json(self.subfolder / CONFIG)

    # ------------------------------------------------------------------------------------------- the parts

    def save_part(self, name: str, tensors: dict | None, config: dict) -> Path:
        """Writes one part's folder whole (``model.safetensors`` when it has tensors, ``config.json``)."""
        write_part(self.part(name), tensors, config)
        return self.part(name)

    def load_part(self, name: str) -> tuple[dict | None, dict] | None:
        """``(tensors or None, config)`` of a part; None when absent."""
        from safetensors.torch import load_file

        folder = self.part(name)
        weights_file, config_file = folder / WEIGHTS, folder / CONFIG
        if not config_file.is_file():
            return None
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if not weights_file.is_file():
            if name in HEADS:
                raise FileNotFoundError(f"{config_file} has no weights file beside it; save the model again.")
            return None, config
        return load_file(str(weights_file)), config

    def remove_part(self, name: str) -> None:
        shutil.rmtree(self.part(name), ignore_errors=True)

    def save_drift(self, config: dict, tensors: dict | None = None) -> Path:
        """The drift monitor's calibration (`DriftConfig` as a dict) to ``interestbert/drift/config.json``, and its
        learned projection (``tensors``) to ``model.safetensors`` beside it."""
        path = self.save_part(DRIFT, tensors, config) / CONFIG
        self.write_card()
        return path

    def load_drift(self) -> dict | None:
        found = self.load_part(DRIFT)
        return None if found is None else found[1]

    def drift_file(self) -> Path:
        """Where the calibration is read from."""
        return self.part(DRIFT) / CONFIG

    # ------------------------------------------------------------------------------------------- the run

    def save_training_args(self, args: dict) -> Path:
        """The fine-tuning options; paths become names (``card``: the card's name; a folder beside the model:
        relative to it, ``../data``; others: their last part), so the folder carries no local absolute path."""
        portable = {k: (_portable(v, self.path) if k in PATH_ARGS else v) for k, v in args.items()}
        path = atomic_write_json(self.subfolder / TRAINING_ARGS, portable)
        self.write_card()
        return path

    def training_args(self) -> dict | None:
        return _read_json(self.subfolder / TRAINING_ARGS)

    def save_results(self, results: dict) -> Path:
        path = atomic_write_json(self.path / RESULTS, results)
        self.write_card()
        return path

    def results(self) -> dict | None:
        return _read_json(self.path / RESULTS)

    def clear(self) -> None:
        """Removes a model saved here (adapter, results, interestbert's parts, card, checkpoints are the
        trainer's), so that a new run does not mix with it."""
        for name in ("adapter_config.json", "adapter_model.safetensors", RESULTS, CARD):
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.subfolder, ignore_errors=True)

    # ------------------------------------------------------------------------------------------- the card

    def card_data(self, model_id: str | None = None):
        """The `ModelCardData` of what the folder holds now."""
        from .model_card import RESULT_ROWS, ModelCardData

        config = self.config() or {}
        args = self.training_args() or {}
        results = self.results() or {}
        drift = self.load_drift()
        parts = [
            label
            for key, label in (
                ("strategy_head", "a strategy head over the catalogue"),
                ("sequence_head", "a sequence head"),
            )
            if config.get(key)
        ]
        if drift and drift.get("threshold") is not None:
            parts.append("a calibrated drift monitor")
        rows = {label: results[key] for key, label in RESULT_ROWS.items() if isinstance(results.get(key), dict)}
        training = {k: v for k, v in args.items() if k not in ("output_dir", "overwrite_output_dir", "disable_tqdm")}
        summary = ""
        if results:
            summary = (
                f"{results.get('global_step', '?')} steps, best validation step {results.get('best_step')}, "
                f"{results.get('train_runtime_s', '?')} s on {results.get('hardware', 'unknown hardware')}"
            )
        horizons = ", ".join(
            f"{'all' if n is None else n} events: {w:g}" for n, w in config.get("interest_horizons", [[None, 1.0]])
        )
        return ModelCardData(
            model_id=model_id or self.path.name,
            base_model=config.get("base_model", "unknown"),
            lora=config.get("lora", {"r": "?", "lora_alpha": "?"}),
            embedding_dim=config.get("embedding_dim", 0),
            max_seq_length=config.get("max_seq_length", 0),
            horizons=horizons,
            parts=parts,
            dataset=results.get("card") or args.get("card"),
            dataset_id=results.get("dataset_id"),
            training=training,
            training_summary=summary,
            results=rows,
            test_users=(results.get("test") or {}).get("n"),
            tie_share=results.get("test_tie_share"),
            drift=None
            if not drift or drift.get("threshold") is None
            else {
                "target": (drift.get("calibration") or {}).get("target_false_alarms_per_1000_events", "?"),
                "window": drift.get("window"),
                "stride": drift.get("stride"),
                "threshold": drift["threshold"],
            },
        )

    def write_card(self, model_id: str | None = None) -> Path | None:
        """Renders ``README.md`` from the folder's contents (nothing before the encoder is saved)."""
        if self.config() is None:
            return None
        return atomic_write_text(self.path / CARD, self.card_data(model_id).render())


class SavedPart:
    """``save_pretrained(folder)`` / ``from_pretrained(folder)`` for a part that has ``to_parts()`` and
    ``from_parts(tensors, config, source)`` (the heads): a folder of its own with ``model.safetensors`` and
    ``config.json``, replaced whole."""

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        write_part(folder, *self.to_parts())

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike):
        return cls.from_parts(*read_part(folder), source=str(folder))


def write_part(folder: str | os.PathLike, tensors: dict | None, config: dict) -> Path:
    """A part's folder, replaced whole: ``model.safetensors`` (float32, on the CPU) when it has tensors, and
    ``config.json``."""
    with atomic_folder(folder) as tmp:
        if tensors is not None:
            save_safetensors(tmp / WEIGHTS, {k: v.float() for k, v in tensors.items()})
        atomic_write_json(tmp / CONFIG, config)
    return Path(folder)


def read_part(folder: str | os.PathLike) -> tuple[dict, dict]:
    """``(tensors, config)`` of a part's folder written by `write_part`."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for file in (folder / CONFIG, folder / WEIGHTS):
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing; save the part again.")
    return load_file(str(folder / WEIGHTS)), json.loads((folder / CONFIG).read_text(encoding="utf-8"))


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _portable(value, folder: Path):
    """A local path as something that names no machine: a card file as its card's folder name; a folder beside
    the model (``out/data`` for the model ``out/model``) relative to the model folder (``../data``); any other
    path as its last part. Other values unchanged."""
    if not isinstance(value, str) or not value or not os.path.exists(value):
        return value
    path = Path(value).resolve()
    if path.is_file() and path.name == CARD:
        return path.parent.name
    home = folder.resolve()
    if path == home:
        return "."
    if path.is_relative_to(home.parent):
        return os.path.relpath(path, home)
    return path.name
