"""Training checkpoints in safetensors and JSON only (no pickles): trainable weights (adapter + head), optimizer,
scheduler, every process's RNG states, the data position and the configuration that produced them.

A checkpoint folder ``checkpoint-<step>/`` holds:

- ``trainable.safetensors``: the parameters that train (LoRA matrices, the head's ``A`` and ``b'``), by name;
- ``optimizer.safetensors`` + ``optimizer.json``: the optimizer's per-parameter tensors and its param groups;
- ``scheduler.json``; ``rng_state_<rank>.safetensors`` + ``rng_state_<rank>.json`` (torch, CUDA, NumPy, random);
- ``trainer_state.json``: step, epoch, batches consumed, best metric, patience, log;
- ``training_config.json``: the options that determine the result (a resume under other options is refused).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from interestbert.encoder.errors import InterestBertError
from interestbert.encoder.files import atomic_write_json, replace_folder, save_safetensors

PREFIX = "checkpoint-"
# options added since checkpoints were first written, with the value that earlier runs used
OLDER_DEFAULTS = {"encode_precision": "fp32"}


def checkpoint_dirs(root: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and re.fullmatch(rf"{PREFIX}\d+", p.name) and (p / "trainer_state.json").is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    module: torch.nn.Module,
    optimizer,
    scheduler,
    trainer_state: dict,
    config: dict,
    keep: int | None,
    accelerator,
) -> Path | None:
    """Writes ``root/checkpoint-<step>`` (all processes write their RNG state; the main process the rest)."""
    root = Path(root)
    final = root / f"{PREFIX}{step}"
    tmp = root / f".{PREFIX}{step}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    _save_rng(tmp, accelerator.process_index)
    if accelerator.is_main_process:
        save_safetensors(
            tmp / "trainable.safetensors",
            {n: p.detach().float() for n, p in module.named_parameters() if p.requires_grad},
        )
        tensors, groups = _flatten_optimizer(optimizer.state_dict())
        save_safetensors(tmp / "optimizer.safetensors", tensors)
        _write_json(tmp / "optimizer.json", groups)
        _write_json(tmp / "scheduler.json", scheduler.state_dict())
        _write_json(tmp / "training_config.json", config)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json(tmp / "trainer_state.json", trainer_state)  # last: marks the checkpoint complete
        replace_folder(tmp, final)  # every file flushed, then one rename
        if keep is not None and keep > 0:
            for old in checkpoint_dirs(root)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resolve_checkpoint(value: str, root: str | os.PathLike) -> Path:
    """``latest`` or a path, as a complete checkpoint folder; a clear error otherwise."""
    if value == "latest":
        found = checkpoint_dirs(root)
        if not found:
            raise InterestBertError(f"--resume_from_checkpoint latest: no checkpoint under {root}; start without it.")
        return found[-1]
    path = Path(value)
    if not (path / "trainer_state.json").is_file():
        raise InterestBertError(
            f"--resume_from_checkpoint {value}: not a complete checkpoint folder (no "
            "trainer_state.json); pass a checkpoint-<step> folder or `latest`."
        )
    return path


def check_config(path: Path, config: dict) -> None:
    """Refuses a checkpoint made under other options, naming each difference."""
    saved = {**OLDER_DEFAULTS, **json.loads((path / "training_config.json").read_text(encoding="utf-8"))}
    keys = sorted(set(saved) | set(config))
    diff = [f"{k}: checkpoint {saved.get(k)!r}, now {config.get(k)!r}" for k in keys if saved.get(k) != config.get(k)]
    if diff:
        raise InterestBertError(
            f"checkpoint {path} was made with other options ({'; '.join(diff)}); resume with the "
            "same options or start a new run in another --output_dir."
        )


def load_trainable(path: Path, module: torch.nn.Module) -> None:
    """Copies a checkpoint's trained weights (adapter and head) into ``module``, the training's `Trainable`."""
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(module.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    if missing:
        raise InterestBertError(
            f"checkpoint {path} lacks {len(missing)} trainable tensors (first: {missing[0]}); "
            "it belongs to another model."
        )
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].dtype))


def load_checkpoint(path: Path, module: torch.nn.Module, optimizer, scheduler, accelerator) -> dict:
    """Restores weights, optimizer, scheduler and this process's RNG; returns the trainer state."""
    load_trainable(path, module)
    groups = json.loads((path / "optimizer.json").read_text(encoding="utf-8"))
    optimizer.load_state_dict(_unflatten_optimizer(load_file(str(path / "optimizer.safetensors")), groups))
    scheduler.load_state_dict(json.loads((path / "scheduler.json").read_text(encoding="utf-8")))
    _load_rng(path, accelerator.process_index)
    return json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------- internals


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: dict) -> dict:
    state: dict[int, dict] = {}
    for flat, value in [*tensors.items(), *groups.get("scalars", {}).items()]:
        idx, key = flat.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": groups["param_groups"]}


def _save_rng(folder: Path, rank: int) -> None:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    save_safetensors(folder / f"rng_state_{rank}.safetensors", tensors)
    np_state = np.random.get_state()
    py_state = random.getstate()
    _write_json(
        folder / f"rng_state_{rank}.json",
        {
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": [py_state[0], list(py_state[1]), py_state[2]],
        },
    )


def _load_rng(folder: Path, rank: int) -> None:
    file = folder / f"rng_state_{rank}.safetensors"
    if not file.is_file():  # resumed on more processes than saved: the extra ones keep their seeded state
        return
    tensors = load_file(str(file))
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    other = json.loads((folder / f"rng_state_{rank}.json").read_text(encoding="utf-8"))
    n = other["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = other["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def _write_json(path: Path, value) -> None:
    atomic_write_json(path, value, indent=1, default=_json_default)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
