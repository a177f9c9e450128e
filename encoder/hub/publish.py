"""Publishing a saved model to the Hugging Face Hub, behind a privacy gate.

`stage` gathers exactly what would be uploaded from a `ModelFolder` into a folder of its own: every file of the
model except checkpoints and temporary files, the data card the model was trained with
(``interestbert/data_card/README.md``: the card only, never the data), and the model card rendered again for the
repo id (``README.md``). `privacy_check` then reads every staged file and refuses, naming the file and what it
found, one that holds a user id of the training data, an event's verbalised text, an absolute local path or a
token. `publish` runs both and makes one commit with ``huggingface_hub`` (``create_repo(exist_ok=True)``, then
``upload_folder``), or, with ``dry_run``, writes the staged files to a folder and uploads nothing.

Item ids and item texts may appear (they are the catalogue, not anyone's behaviour); the card says so. The token
is passed to ``huggingface_hub`` only: never printed, logged or written.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InterestBertError
from ..packaged import REPO_ID
from .folder import CARD, ModelFolder

DATA_CARD = "interestbert/data_card/README.md"
SKIPPED = ("checkpoints",)  # optimizer states and RNG of a run: the trainer's, not the model's
TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")
LOCAL_PATH = re.compile(
    r"(?<![\w.:/-])(?:/(?:home|Users|root|tmp|mnt|private|var/folders|work)/[^\s\"'<>|]+"
    r"|[A-Za-z]:\\[^\s\"'<>|]+|[^\s\"']*site-packages[^\s\"']*)"
)
MIN_ID_LENGTH = 4  # shorter user ids ("1", "943") cannot be told from numbers and words; see `privacy_check`


@dataclass
class Published:
    """What `publish` did: the staged (or uploaded) files, and the repo URL and commit id of an upload."""

    files: list[str]
    folder: Path | None = None  # the dry run's folder
    url: str | None = None
    commit: str | None = None


def check_repo_id(repo_id: str) -> None:
    if not REPO_ID.match(repo_id):
        raise InterestBertError(
            f"--repo-id {repo_id!r} is not a Hub repo id; write it as ORG/NAME (letters, digits, '-', '_', '.')."
        )


def stage(model_dir: str | os.PathLike, out: str | os.PathLike, repo_id: str, data_card: Path | None) -> list[str]:
    """Copies what would be uploaded into ``out`` (which must be empty or absent); returns the files, sorted."""
    folder = ModelFolder(model_dir)
    if not folder.is_model() or folder.config() is None:
        raise InterestBertError(
            f"{model_dir} is not an interestbert model folder (no adapter_config.json or "
            "interestbert/config.json); pass the --output_dir of `interestbert finetune`."
        )
    base = folder.config().get("base_model", "")
    if os.path.isabs(base) or os.path.isdir(base):
        raise InterestBertError(
            f"{model_dir} is built on the local folder {base}, which nobody else can load; "
            "fine-tune from the base model's Hub id to publish."
        )
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise InterestBertError(f"--dry-run {out} is not empty; pass an empty or new folder.")
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.path.rglob("*")):
        rel = path.relative_to(folder.path)
        if (
            not path.is_file()
            or rel.parts[0] in SKIPPED
            or any(p.startswith(".") for p in rel.parts)
            or rel.as_posix() == CARD
        ):
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out / rel)
    if data_card is not None:
        (out / DATA_CARD).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(data_card, out / DATA_CARD)
    card = folder.card_data(model_id=repo_id)
    card.published = True  # the card says what the gate checked; nothing is published if it refuses
    (out / CARD).write_text(card.render(), encoding="utf-8")
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def privacy_check(
    folder: str | os.PathLike,
    user_ids: Iterable[str] = (),
    event_texts: Iterable[str] = (),
    local_paths: Iterable[str] = (),
    tokens: Iterable[str] = (),
    base_files: Path | None = None,
) -> None:
    """Refuses (`InterestBertError`, naming the file and what was found) a staged folder that holds a user id of
    the training data, an event's verbalised text, an absolute local path or a token.

    Args:
        user_ids: The training data's user ids. Ids shorter than `MIN_ID_LENGTH` characters, purely numeric
            ones, and ids that are also item ids are not looked for (they cannot be told from numbers and
            catalogue entries); the others are looked for as whole words.
        event_texts: The distinct verbalised events of the training data (``rated 4/5: Toy Story``), looked for
            as substrings.
        local_paths: Paths of this machine (the home, the model and data folders, ...), besides the patterns of
            `LOCAL_PATH`.
        tokens: Secrets that must not appear (the Hub token), besides the pattern of `TOKEN`.
        base_files: The base model's folder: a staged file byte-identical to the base's file of the same name
            (the tokenizer) is not read.
    """
    folder = Path(folder)
    ids = {u for u in user_ids if len(u) >= MIN_ID_LENGTH and not u.isdigit()}
    words = re.compile(r"[\w-]+") if ids else None
    events = sorted({t for t in event_texts if len(t) >= 8})
    paths = sorted({p for p in local_paths if len(p) > 1})
    secrets = [t for t in tokens if t]
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if base_files is not None and _same_file(path, base_files / rel):
            continue
        text = _readable_text(path)
        if any(secret in text for secret in secrets) or TOKEN.search(text):
            raise InterestBertError(f"{rel} holds an access token; remove it from the model folder before publishing.")
        found = next((p for p in paths if p in text), None) or (m.group(0) if (m := LOCAL_PATH.search(text)) else None)
        if found:
            raise InterestBertError(
                f"{rel} holds the absolute local path {found!r}; save the model again with this "
                "version (it records names, not paths), or remove the path."
            )
        if words is not None:
            user = next((w for w in words.findall(text) if w in ids), None)
            if user:
                raise InterestBertError(
                    f"{rel} holds the user id {user!r} of the training data; a published model "
                    "may not carry anyone's identity: remove it."
                )
        event = next((e for e in events if e in text), None)
        if event:
            raise InterestBertError(
                f"{rel} holds the verbalised event {event[:60]!r} of the training data; a "
                "published model may not carry anyone's behaviour: remove it."
            )


def _readable_text(path: Path) -> str:
    """A file's text as the gate reads it: a safetensors file's JSON header, any other file decoded (binary
    bytes replaced)."""
    data = path.read_bytes()
    if path.suffix == ".safetensors" and len(data) >= 8:
        (size,) = struct.unpack("<Q", data[:8])
        return data[8 : 8 + size].decode("utf-8", "replace")
    return data.decode("utf-8", "replace")


def _same_file(path: Path, other: Path) -> bool:
    if not other.is_file() or other.stat().st_size != path.stat().st_size:
        return False
    return hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(other.read_bytes()).digest()


def publish(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    verbaliser=None,
    data_dir: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    token: str | None = None,
    dry_run: str | os.PathLike | None = None,
    extra_tokens: Iterable[str] = (),
) -> Published:
    """Stages ``model_dir``, runs the privacy gate against the training data and uploads it as one commit to
    ``repo_id``, or writes it to ``dry_run``.

    Args:
        verbaliser: The training data as a `Verbaliser`: its user ids and verbalised events are what the gate
            looks for, its card is published as ``interestbert/data_card/README.md``. None skips those checks
            and the data card (paths and tokens are always checked).
        data_dir: The training data's folder (a path the files may not name).
        extra_tokens: Other secrets no file may hold (the saved login's token, ``HF_TOKEN``).
        private, revision, commit_message, create_pr, token: As in ``huggingface_hub.HfApi.upload_folder``
            (``revision`` is a branch, created when missing).
    """
    check_repo_id(repo_id)
    with _staging(dry_run) as staging:
        files = stage(model_dir, staging, repo_id, None if verbaliser is None else verbaliser.card.path)
        privacy_check(
            staging,
            **_private_values(verbaliser),
            local_paths=_local_paths(model_dir, data_dir),
            tokens=[token or "", *extra_tokens],
            base_files=_base_folder(model_dir),
        )
        if dry_run is not None:
            return Published(files, folder=staging)
        url, commit = _upload(staging, repo_id, private, revision, commit_message, create_pr, token)
        return Published(files, url=url, commit=commit)


def publish_card(
    card,
    repo_id: str,
    *,
    private: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    dry_run: str | os.PathLike | None = None,
    extra_tokens: Iterable[str] = (),
) -> Published:
    """A data card (`DataCard`) as the ``README.md`` of the dataset repo ``repo_id`` (no data files), after the
    gate's path and token checks; ``load_card(repo_id)`` reads it back. With ``dry_run``, written there only."""
    check_repo_id(repo_id)
    with _staging(dry_run) as staging:
        shutil.copy2(card.path, staging / CARD)
        privacy_check(staging, local_paths=_local_paths(card.path.parent, None), tokens=[token or "", *extra_tokens])
        if dry_run is not None:
            return Published([CARD], folder=staging)
        url, commit = _upload(
            staging,
            repo_id,
            private,
            None,
            commit_message or f"Upload data card {card.name}",
            False,
            token,
            repo_type="dataset",
        )
        return Published([CARD], url=url, commit=commit)


@contextlib.contextmanager
def _staging(dry_run: str | os.PathLike | None):
    """The folder the files to upload are gathered in: ``dry_run`` (empty or new; removed again when staging or
    the gate fails, so nothing half-written is left) or a temporary folder (always removed)."""
    if dry_run is not None and Path(dry_run).exists() and any(Path(dry_run).iterdir()):
        raise InterestBertError(f"--dry-run {dry_run} is not empty; pass an empty or new folder.")
    staging = Path(dry_run) if dry_run is not None else Path(tempfile.mkdtemp(prefix="interestbert-publish-"))
    staging.mkdir(parents=True, exist_ok=True)
    try:
        yield staging
    except BaseException:
        if dry_run is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if dry_run is None:
            shutil.rmtree(staging, ignore_errors=True)


def _base_folder(model_dir) -> Path | None:
    """The local copy of the model's base (the packaged one), whose files the gate need not read."""
    from ..packaged import resolve_model_path

    base = resolve_model_path((ModelFolder(model_dir).config() or {}).get("base_model", ""))
    return Path(base) if base and os.path.isdir(base) else None


def _private_values(verbaliser) -> dict:
    if verbaliser is None:
        return {}
    return {"user_ids": set(verbaliser.users) - set(verbaliser.item_ids), "event_texts": verbaliser.pieces}


def _local_paths(model_dir, data_dir) -> list[str]:
    paths = [str(Path.home()), str(Path(model_dir).resolve()), tempfile.gettempdir()]
    if data_dir is not None:
        paths.append(str(Path(data_dir).resolve()))
    return [p for p in paths if p not in ("/", "")]


def _upload(
    folder: Path,
    repo_id: str,
    private: bool,
    revision: str | None,
    commit_message: str | None,
    create_pr: bool,
    token: str | None,
    repo_type: str = "model",
) -> tuple[str, str]:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type)
        if revision is not None and not create_pr:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type=repo_type)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            revision=revision,
            create_pr=create_pr,
            repo_type=repo_type,
            commit_message=commit_message or f"Upload interestbert {repo_type}",
        )
    except OfflineModeIsEnabled:
        raise InterestBertError(
            "the Hub cannot be reached: HF_HUB_OFFLINE is set; unset it to publish, or pass "
            "--dry-run OUT to write the files only."
        ) from None
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        fix = {
            401: "the token is missing or invalid: pass --token-env VAR, set HF_TOKEN or run `hf auth login`",
            403: f"the token may not write to {repo_id}: use a repo of your own or a token with write access",
            404: f"{repo_id} or its revision was not found: check the id and --revision",
        }.get(status, "check the repo id, the token and the network")
        raise InterestBertError(f"the Hub refused the upload to {repo_id} (HTTP {status}); {fix}.") from None
    except OSError as err:  # no network, DNS, proxy
        raise InterestBertError(
            f"the Hub cannot be reached ({type(err).__name__}); check the network, or pass "
            "--dry-run OUT to write the files only."
        ) from None
    return str(getattr(repo, "url", f"https://huggingface.co/{repo_id}")), str(info.oid)
