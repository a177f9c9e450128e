"""What the commands load, with every failure as one sentence (`InterestBertError`): a card's data, a model, a
selection of users, a drift monitor with its calibration.

The command line (`interestbert.inference.cli`) parses options and calls these; library users can call them too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from interestbert.encoder.errors import InterestBertError, excerpt

logger = logging.getLogger(__name__)


def check_positive(value: int, flag: str) -> None:
    if value <= 0:
        raise InterestBertError(f"{flag} is {value}; it must be a positive integer.")


def encode_options(args):
    """``--precision``, ``--backend`` and ``--batch-size`` as one `EncodeOptions`, checked before anything loads
    (the backend is installed and runs the precision on ``--device``); the command then resolves it once on the
    loaded encoder (`InterestEncoder.resolve_options`) and passes it on."""
    from interestbert.encoder.backends import EncodeOptions

    check_positive(args.batch_size, "--batch-size")
    options = EncodeOptions(args.precision, args.backend, args.batch_size)
    try:
        options.resolve(args.device)
    except ValueError as err:
        raise InterestBertError(f"--backend {args.backend}: {err}") from None
    return options


def check_output(path: str | os.PathLike, folder: bool) -> None:
    """Before anything loads: ``path`` (a folder to write into when ``folder``, else a file to write) can be written:
    it is not the other kind, and the nearest folder that exists takes a new file (a read-only file system, a
    missing permission or a place like ``/proc`` is refused here, not after the work)."""
    path = Path(path)
    flag = "--output"
    if folder and path.exists() and not path.is_dir():
        raise InterestBertError(f"{flag} {path} is a file; the command writes a folder there: pass a folder's path.")
    if not folder and path.is_dir():
        raise InterestBertError(f"{flag} {path} is a folder; the command writes a file there: pass a file's path.")
    probe_in = path if folder and path.is_dir() else path.parent
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise InterestBertError(
            f"{flag} {path}: {probe_in} is a file, so nothing can be written under it; pass another path."
        )
    try:
        fd, probe = tempfile.mkstemp(dir=probe_in, prefix=".interestbert-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise InterestBertError(
            f"{flag} {path} cannot be written ({err.strerror or err} in {probe_in}); pass a "
            "path on a writable file system."
        ) from None


PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def check_model(model: str | None, max_seq_length: int | None = None) -> None:
    """Before anything loads: ``--model`` is a folder with safetensors weights (a folder of pickles only is refused:
    interestbert never unpickles) or a Hub id, and ``--max-seq-length`` fits the model's position embeddings."""
    from interestbert.encoder.model import DEFAULT_BASE_MODEL
    from interestbert.encoder.packaged import REPO_ID, resolve_model_path

    if max_seq_length is not None:
        check_positive(max_seq_length, "--max-seq-length")
    name = model or DEFAULT_BASE_MODEL
    folder = Path(resolve_model_path(name))
    if not folder.is_dir():
        if folder.exists():
            raise InterestBertError(f"--model {name} is a file; pass the folder that holds the model.")
        if not REPO_ID.match(name) or name.startswith((".", "/", "~")):
            raise InterestBertError(
                f"--model {name}: no such folder; pass a folder saved by interestbert, a "
                "BERT-family model folder, or a Hub id (ORG/NAME)."
            )
        return  # a Hub id: checked as it loads
    adapter = folder / "adapter_config.json"
    files = [p.name for p in folder.iterdir() if p.is_file()]
    if not any(f.endswith(".safetensors") for f in files):
        pickles = sorted(f for f in files if f.endswith(PICKLES))
        held = (
            f"only pickled weights ({', '.join(pickles[:3])}), which interestbert never loads (unpickling runs "
            "code); convert them with safetensors.torch.save_file"
            if pickles
            else "no model weights (no *.safetensors file); pass the folder that holds them"
        )
        raise InterestBertError(f"--model {name}: the folder holds {held}.")
    if max_seq_length is None:
        return
    config = folder / "config.json"
    if adapter.is_file():
        try:
            base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
        except (OSError, ValueError):
            return  # reported as the model loads
        config = Path(resolve_model_path(base)) / "config.json" if base else config
    try:
        positions = json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")
    except (OSError, ValueError):
        return
    if isinstance(positions, int) and max_seq_length > positions:
        raise InterestBertError(
            f"--max-seq-length {max_seq_length} is more than the {positions} token positions of "
            f"model {name}; pass at most {positions}."
        )


def load_data(card: str, data_dir: str | None):
    from interestbert.encoder.cards import load_card_data

    return load_card_data(card, data_dir)


def load_encoder(model: str | None, max_seq_length: int | None = None, device: str | None = None):
    """The encoder for ``--model`` (default: the base model with a fresh adapter), merged for inference; the
    command checked ``--model`` and ``--max-seq-length`` first (`check_model`)."""
    from interestbert.encoder.model import DEFAULT_BASE_MODEL, InterestEncoder

    name = model or DEFAULT_BASE_MODEL
    try:
        return InterestEncoder.from_pretrained(name, max_seq_length=max_seq_length, device=device).merge_adapter()
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InterestBertError(
            f"model {name!r} could not be loaded ({first}); pass a folder saved by interestbert, "
            "a BERT-family model folder, or a Hub id reachable from this machine."
        ) from None


def check_catalogue(model: str | None, encoder, data, fix: str) -> None:
    """A model's heads (strategy and sequence) must score the card's own catalogue, row for row."""
    for head in (encoder.head, encoder.sequence_head):
        if head is not None and head.item_ids != data.items["item_id"][:]:
            raise InterestBertError(
                f"model {model} was trained on another catalogue ({head.n_items} items) than "
                f"data card {data.card.name} ({len(data.items)}); {fix}"
            )


def load_all(args, catalogue_fix: str | None = None):
    """``(data, encoder, verbaliser)`` for a command's ``--card``, ``--data-dir``, ``--model``, ``--max-seq-length``
    and ``--device``: `load_checked_data`, then `load_model`."""
    data = load_checked_data(args)
    return (data, *load_model(args, data, catalogue_fix))


def load_checked_data(args):
    """The card's data, after ``--model`` and ``--max-seq-length`` were checked (`check_model`): a command then
    checks what needs the data (``--users``) before `load_model`."""
    check_model(args.model, args.max_seq_length)
    return load_data(args.card, args.data_dir)


def load_model(args, data, catalogue_fix: str | None = None):
    """``(encoder, verbaliser)`` for ``--model`` on ``data``; with ``catalogue_fix``, the model's heads must score
    the card's catalogue (`check_catalogue`)."""
    from interestbert.encoder.verbalise import Verbaliser

    encoder = load_encoder(args.model, args.max_seq_length, args.device)
    if catalogue_fix is not None:
        check_catalogue(args.model, encoder, data, catalogue_fix)
    return encoder, Verbaliser(data, encoder.tokenizer, encoder.max_seq_length)


def user_ids(data) -> list[str]:
    """A card's users in order (the `Verbaliser`'s), from its events alone."""
    column = data.events.data.column("user_id").to_pylist()
    return [u for i, u in enumerate(column) if i == 0 or u != column[i - 1]]  # contiguous: sorted by user


def first_users(n: int, limit: int | None) -> np.ndarray:
    """Positions of the first ``limit`` of ``n`` users (all when None)."""
    if limit is None:
        return np.arange(n)
    check_positive(limit, "--limit-users")
    return np.arange(min(n, limit))


def select_users(known: list[str], users: list[str] | None, limit: int | None) -> np.ndarray:
    """Positions among ``known`` (a card's users in order: `user_ids`, a `Verbaliser`'s ``users``) of the given
    user ids (all must have events; checked before a model loads), or of the first ``limit`` users."""
    if users:
        index = {u: i for i, u in enumerate(known)}
        missing = [u for u in users if u not in index]
        if missing:
            raise InterestBertError(
                f"--users: {len(missing)} of the given users have no events in this card "
                f"(first: {excerpt(missing[0])}); pass user ids exactly as in the events file."
            )
        return np.asarray([index[u] for u in users], dtype=np.int64)
    return first_users(len(known), limit)


def model_folder(model: str | None) -> str | None:
    """``model`` when it is a local folder (one a calibration can be read from and written to), else None."""
    return model if model is not None and Path(model).is_dir() else None


def drift_monitor(
    model: str | None,
    data,
    encoder,
    verbaliser,
    *,
    window: int | None = None,
    stride: int | None = None,
    target_false_alarms: float | None = None,
    calibrate: bool = False,
    save_calibration: bool = False,
    batch_size: int = 64,
    projection: bool = True,
    tune_score: bool = True,
    alpha_max: float | None = None,
):
    """The drift monitor of a model with its calibration: the model's saved one, or made now on the card's
    training split when it has none, when ``calibrate`` asks for it, or when ``window``/``stride`` differ from
    the saved ones (``projection``: fitting the same-user projection first, ``tune_score``: then picking the
    score's form, see `ensure_calibrated`). ``alpha_max`` replaces the config's blend weight (it needs no new
    calibration). Returns ``(monitor, Calibration)``."""
    from interestbert.encoder.drift import DriftConfig, DriftMonitor, ensure_calibrated

    for value, flag in ((window, "--window"), (stride, "--stride")):
        if value is not None:
            check_positive(value, flag)
    if target_false_alarms is not None and not target_false_alarms > 0:
        raise InterestBertError(f"--target-false-alarms is {target_false_alarms}; it must be > 0.")
    overrides = {k: v for k, v in (("window", window), ("stride", stride)) if v is not None}
    local = model_folder(model)
    folder = local or getattr(encoder, "folder", None)  # a model from the Hub: its snapshot, read only
    found = DriftMonitor.from_pretrained(folder, encoder.encode) if folder is not None else None
    saved = found.config if found is not None else DriftConfig()
    changed = any(getattr(saved, k) != v for k, v in overrides.items())
    try:
        config = dataclasses.replace(saved, **overrides)  # validates the options
        if alpha_max is not None:
            config = dataclasses.replace(config, alpha_max=alpha_max)
    except ValueError as err:
        raise InterestBertError(f"drift options: {err}") from None
    monitor = DriftMonitor(
        encoder.encode,
        config,
        verbaliser.separator,
        projection=None if found is None else found.projection,
        item_vectors=None if found is None else found.item_vectors,
    )
    monitor.batch_size = batch_size
    reason = None
    if calibrate:
        reason = "asked for by --calibrate"
    elif changed and monitor.calibrated:
        reason = "the model's calibration is for another --window or --stride"
    calibration = ensure_calibrated(
        monitor, verbaliser, target_false_alarms, reason=reason, data=data, projection=projection, tune_score=tune_score
    )
    if save_calibration:
        if local is None:
            raise InterestBertError("--save-calibration needs --model to be a local model folder to write into.")
        logger.info("saved the drift calibration to %s", monitor.save_pretrained(local))
    return monitor, calibration


def drift_monitor_of(args, data, encoder, verbaliser, alpha_max: float | None = None):
    """`drift_monitor` with a command's drift options (``--window``, ``--stride``, ``--target-false-alarms``,
    ``--calibrate``, ``--save-calibration``, ``--batch-size``, ``--projection``, ``--tune-score``)."""
    return drift_monitor(
        args.model,
        data,
        encoder,
        verbaliser,
        window=args.window,
        stride=args.stride,
        target_false_alarms=args.target_false_alarms,
        calibrate=args.calibrate,
        save_calibration=args.save_calibration,
        batch_size=args.batch_size,
        projection=args.projection,
        tune_score=args.tune_score,
        alpha_max=alpha_max,
    )
