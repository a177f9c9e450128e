"""What the commands load, with every failure as one sentence (`InterestBertError`): a card's data, a model, a
selection of users, a drift monitor with its calibration.

The command line (`interestbert.inference.cli`) parses options and calls these; library users can call them too.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from interestbert.encoder.errors import InterestBertError

logger = logging.getLogger(__name__)


def check_positive(value: int, flag: str) -> None:
    if value <= 0:
        raise InterestBertError(f"{flag} is {value}; it must be a positive integer.")


def check_backend(backend: str, precision: str, device: str | None) -> None:
    """``--backend`` is installed and runs ``--precision`` on ``--device`` (checked before anything loads)."""
    from interestbert.encoder.backends import check_backend as check, resolve_precision

    try:
        check(backend, resolve_precision(precision, device)[0], device)
    except ValueError as err:
        raise InterestBertError(f"--backend {backend}: {err}") from None


def load_data(card: str, data_dir: str | None):
    from interestbert.encoder.cards import load_card_data

    return load_card_data(card, data_dir)


def load_encoder(model: str | None, max_seq_length: int | None = None, device: str | None = None):
    """The encoder for ``--model`` (default: the base model with a fresh adapter), merged for inference."""
    from interestbert.encoder.model import DEFAULT_BASE_MODEL, InterestEncoder

    name = model or DEFAULT_BASE_MODEL
    if max_seq_length is not None:
        check_positive(max_seq_length, "--max-seq-length")
    try:
        return InterestEncoder.from_pretrained(name, max_seq_length=max_seq_length, device=device).merge_adapter()
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InterestBertError(f"model {name!r} could not be loaded ({first}); pass a folder saved by interestbert, "
                                "a BERT-family model folder, or a Hub id reachable from this machine.") from None


def check_catalogue(model: str | None, encoder, data, fix: str) -> None:
    """A model's heads (strategy and sequence) must score the card's own catalogue, row for row."""
    for head in (encoder.head, encoder.sequence_head):
        if head is not None and head.item_ids != data.items["item_id"][:]:
            raise InterestBertError(f"model {model} was trained on another catalogue ({head.n_items} items) than "
                                    f"data card {data.card.name} ({len(data.items)}); {fix}")


def load_all(args, catalogue_fix: str | None = None):
    """``(data, encoder, verbaliser)`` for a command's ``--card``, ``--data-dir``, ``--model``, ``--max-seq-length``
    and ``--device``; with ``catalogue_fix``, the model's heads must score the card's catalogue (`check_catalogue`)."""
    from interestbert.encoder.verbalise import Verbaliser

    data = load_data(args.card, args.data_dir)
    encoder = load_encoder(args.model, args.max_seq_length, args.device)
    if catalogue_fix is not None:
        check_catalogue(args.model, encoder, data, catalogue_fix)
    return data, encoder, Verbaliser(data, encoder.tokenizer, encoder.max_seq_length)


def first_users(n: int, limit: int | None) -> np.ndarray:
    """Positions of the first ``limit`` of ``n`` users (all when None)."""
    if limit is None:
        return np.arange(n)
    check_positive(limit, "--limit-users")
    return np.arange(min(n, limit))


def select_users(verbaliser, users: list[str] | None, limit: int | None) -> np.ndarray:
    """Positions of the given user ids (all must have events), or of the first ``limit`` users."""
    if users:
        missing = [u for u in users if u not in verbaliser.user_index]
        if missing:
            raise InterestBertError(f"--users: {len(missing)} of the given users have no events in this card "
                                    f"(first: {missing[0]!r}); pass user ids exactly as in the events file.")
        return np.asarray([verbaliser.user_index[u] for u in users], dtype=np.int64)
    return first_users(len(verbaliser.users), limit)


def model_folder(model: str | None) -> str | None:
    """``model`` when it is a local folder (one a calibration can be read from and written to), else None."""
    return model if model is not None and Path(model).is_dir() else None


def drift_monitor(model: str | None, data, encoder, verbaliser, *, window: int | None = None,
                  stride: int | None = None, target_false_alarms: float | None = None, calibrate: bool = False,
                  save_calibration: bool = False, batch_size: int = 64):
    """The drift monitor of a model with its calibration: the model's saved one, or made now on the card's
    training split when it has none, when ``calibrate`` asks for it, or when ``window``/``stride`` differ from
    the saved ones. Returns ``(monitor, Calibration)``."""
    from interestbert.encoder.drift import DriftConfig, DriftMonitor
    from interestbert.inference.drift import ensure_calibrated

    for value, flag in ((window, "--window"), (stride, "--stride")):
        if value is not None:
            check_positive(value, flag)
    if target_false_alarms is not None and not target_false_alarms > 0:
        raise InterestBertError(f"--target-false-alarms is {target_false_alarms}; it must be > 0.")
    overrides = {k: v for k, v in (("window", window), ("stride", stride)) if v is not None}
    local = model_folder(model)
    folder = local or getattr(encoder, "folder", None)  # a model from the Hub: its snapshot, read only
    saved = DriftMonitor.from_pretrained(folder, encoder.encode).config if folder is not None else DriftConfig()
    changed = any(getattr(saved, k) != v for k, v in overrides.items())
    try:
        config = dataclasses.replace(saved, **overrides)  # validates the options
    except ValueError as err:
        raise InterestBertError(f"drift options: {err}") from None
    monitor = DriftMonitor(encoder.encode, config, verbaliser.separator)
    monitor.batch_size = batch_size
    reason = None
    if calibrate:
        reason = "asked for by --calibrate"
    elif changed and monitor.calibrated:
        reason = "the model's calibration is for another --window or --stride"
    calibration = ensure_calibrated(monitor, verbaliser, target_false_alarms, reason=reason, data=data)
    if save_calibration:
        if local is None:
            raise InterestBertError("--save-calibration needs --model to be a local model folder to write into.")
        logger.info("saved the drift calibration to %s", monitor.save_pretrained(local))
    return monitor, calibration
