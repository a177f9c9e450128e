"""The saved model and the Hub: the folder's layout, its generated model card, and publishing behind a privacy gate.

- `folder`: `ModelFolder`, which owns a saved model's layout (adapter, heads, drift calibration, configs, card).
- `model_card`: `ModelCardData` and its Jinja template (``model_card.md`` beside it).
- `publish`: staging a folder, the privacy gate that refuses training users' ids and events, and the upload.
"""

from .folder import ModelFolder, SavedPart, read_part, write_part
from .model_card import ModelCardData
from .publish import DATA_CARD, Published, check_repo_id, privacy_check, publish, publish_card, stage

__all__ = [
    "DATA_CARD",
    "ModelCardData",
    "ModelFolder",
    "Published",
    "SavedPart",
    "check_repo_id",
    "privacy_check",
    "publish",
    "publish_card",
    "read_part",
    "stage",
    "write_part",
]
