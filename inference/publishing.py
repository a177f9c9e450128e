"""``interestbert publish``: a saved model to the Hugging Face Hub, after the privacy gate has read every file
against the data it was trained on (see `interestbert.encoder.hub`).

The training data is found from the model's own record (``interestbert/training_args.json``: the card's name and
the data folder, relative to the model folder when it sits beside it), or from ``--card``/``--data-dir``.
"""

from __future__ import annotations

import os

from interestbert.encoder.errors import InterestBertError
from interestbert.encoder.hub import Published, check_repo_id, publish
from interestbert.encoder.hub.folder import ModelFolder


def training_data(model_dir: str | os.PathLike, card: str | None = None, data_dir: str | None = None):
    """``(verbaliser, data_dir)`` of the data a model was trained on: from ``card``/``data_dir`` when given, else
    from its training args (a relative data folder is taken from the model folder)."""
    from transformers import AutoTokenizer

    from interestbert.encoder.cards import load_card_data
    from interestbert.encoder.verbalise import Verbaliser

    folder = ModelFolder(model_dir)
    args = folder.training_args() or {}
    card = card or args.get("card")
    if card is None:
        raise InterestBertError(
            f"{model_dir} does not record the data card it was trained on; pass --card C and "
            "--data-dir D so that the privacy gate can check the files against that data."
        )
    if data_dir is None and args.get("data_dir"):
        beside = folder.path / args["data_dir"]
        data_dir = str(beside) if beside.is_dir() else None
    beside_card = folder.path / card
    try:
        data = load_card_data(str(beside_card) if beside_card.exists() else card, data_dir)
    except InterestBertError as err:
        raise InterestBertError(
            f"the privacy gate needs the training data ({err}); pass --card and --data-dir "
            "of the data the model was trained on."
        ) from None
    config = folder.config() or {}
    tokenizer = AutoTokenizer.from_pretrained(str(folder.path))
    return Verbaliser(data, tokenizer, config.get("max_seq_length") or 256), data_dir


def hub_token(token_env: str | None) -> str | None:
    """The token from ``token_env`` (an environment variable's name), else None (``huggingface_hub`` then reads
    ``HF_TOKEN`` or the saved login). Never printed."""
    if token_env is None:
        return None
    token = os.environ.get(token_env)
    if not token:
        raise InterestBertError(
            f"--token-env {token_env}: that environment variable is not set; export the token "
            "in it, or leave --token-env out to use HF_TOKEN or `hf auth login`."
        )
    return token


def known_tokens(token: str | None) -> list[str]:
    """Every token this machine would publish with: none of them may appear in a published file."""
    found = [token, os.environ.get("HF_TOKEN")]
    try:
        from huggingface_hub import get_token

        found.append(get_token())
    except Exception:  # noqa: BLE001 - a missing or unreadable login is no token
        pass
    return [t for t in found if t]


def publish_model(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    card: str | None = None,
    data_dir: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    token_env: str | None = None,
    dry_run: str | os.PathLike | None = None,
) -> Published:
    """What ``interestbert publish`` does (see the module docstring); returns the files and the commit."""
    check_repo_id(repo_id)  # before any data is read
    if not ModelFolder(model_dir).is_model():
        raise InterestBertError(
            f"{model_dir} is not an interestbert model folder (no adapter_config.json); pass "
            "the --output_dir of `interestbert finetune`."
        )
    token = hub_token(token_env)
    verbaliser, data_dir = training_data(model_dir, card, data_dir)
    return publish(
        model_dir,
        repo_id,
        verbaliser=verbaliser,
        data_dir=data_dir,
        private=private,
        revision=revision,
        commit_message=commit_message,
        create_pr=create_pr,
        token=token,
        dry_run=dry_run,
        extra_tokens=known_tokens(token),
    )
