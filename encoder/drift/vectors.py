"""The drift monitor's event vectors: each distinct text encoded once (within `sharing_encodings` across fits, in
streaming from a bounded memo), the event's action read beside its text and its item's own vector added when the
projection was fitted with them, then projected and normalised row by row, so a text's vector does not depend on
the batch it came in and `scan` and `update` agree exactly. `DriftMonitor` inherits it.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager

import numpy as np

from ..errors import InterestBertError
from .events import Event
from .projection import with_actions

MEMO_TEXTS = 20_000  # event texts whose vectors `update` keeps with ``window_vector="mean"`` (~31 MB at dim 384)


class EventVectors:
    """Texts to the unit vectors the monitor compares; subclasses hold ``config`` (a `DriftConfig`)."""

    def __init__(
        self,
        encode: Callable[[list[str]], np.ndarray],
        batch_size: int = 64,
        projection: np.ndarray | None = None,
        item_vectors: dict[str, np.ndarray] | None = None,
    ):
        self.encode_fn = encode
        self.batch_size = batch_size
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()  # event text -> vector (``window_vector="mean"``)
        self._shared: dict[str, np.ndarray] | None = None  # raw vectors within `sharing_encodings`
        self.set_projection(projection, item_vectors, clear=False)
        try:
            params = inspect.signature(encode).parameters
        except (TypeError, ValueError):  # some builtins have no signature
            params = {}
        self._plain_encode = not (
            {"batch_size", "show_progress_bar"} <= params.keys()
            or any(p.kind is p.VAR_KEYWORD for p in params.values())
        )

    def set_projection(
        self, projection: np.ndarray | None, item_vectors: dict[str, np.ndarray] | None = None, clear: bool = True
    ) -> None:
        """Replaces the projection and the items' vectors (None: the vectors as encoded); the streaming states and
        the memo of event vectors, made under the old one, are dropped, and ``config.projection`` is cleared when it
        is None."""
        self.projection = None if projection is None else np.ascontiguousarray(projection, dtype=np.float32)
        self.item_vectors = dict(item_vectors) if item_vectors and projection is not None else None
        self._item_index = {item: k for k, item in enumerate(self.item_vectors or ())}
        self._item_matrix = None
        if self.item_vectors:
            self._item_matrix = np.ascontiguousarray(np.stack(list(self.item_vectors.values())), dtype=np.float32)
            if self._item_matrix.shape != (len(self._item_index), self.projection.shape[1]):
                raise ValueError(
                    f"item vectors of shape {self._item_matrix.shape[1:]} do not match the projection's "
                    f"output ({self.projection.shape[1]},)."
                )
        if not clear:
            return
        if projection is None:
            self.config.projection = None
        self._memo.clear()
        self.reset()

    @contextmanager
    def sharing_encodings(self):
        """Within the block every distinct text is encoded once across calls, its raw vector kept until the block
        ends: calibrating on the fly reads many of the same event texts three times (`fit_projection`,
        `tune_score`, `calibrate`)."""
        self._shared = {}
        try:
            yield self
        finally:
            self._shared = None

    def _encode(self, texts: list[str], show_progress_bar: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        if self._shared is not None:
            missing = list(dict.fromkeys(t for t in texts if t not in self._shared))
            if missing:
                self._shared.update(zip(missing, self._encode_now(missing, show_progress_bar)))
            return np.stack([self._shared[t] for t in texts])
        return self._encode_now(texts, show_progress_bar)

    def _encode_now(self, texts: list[str], show_progress_bar: bool) -> np.ndarray:
        if self._plain_encode:  # a callable of texts alone
            return np.asarray(self.encode_fn(texts), dtype=np.float32)
        out = self.encode_fn(texts, batch_size=self.batch_size, show_progress_bar=show_progress_bar)
        return np.asarray(out, dtype=np.float32)

    def _vectors(self, texts: list[str], events: Iterable[Event], show_progress_bar: bool) -> np.ndarray:
        """The unit vectors the monitor compares for distinct ``texts`` (event texts, or window texts with
        ``window_vector="text"``): encoded, with their events' actions beside them when the projection was fitted
        with actions, projected, plus their items' own vectors (``events``: where the event texts come from)."""
        raw = self._encode(texts, show_progress_bar)
        vocab, weight = self._action_vocab()
        with_items = self._item_matrix is not None and self.config.window_vector == "mean"
        if not vocab and not with_items:
            return self._project(raw)
        event_of = {e.text: e for e in events}
        found = [event_of.get(t) for t in texts]
        if vocab:
            raw = with_actions(raw, ["" if e is None else e.action for e in found], vocab, weight)
        return self._project(raw, [None if e is None else e.item_text for e in found] if with_items else None)

    def _action_vocab(self) -> tuple[list[str], float]:
        """The actions the projection reads (`fit_projection` records them) and their one-hot's weight."""
        record = self.config.projection or {}
        if self.projection is None or self.config.window_vector != "mean" or not record.get("actions"):
            return [], 0.0
        return record["actions"], float(record["action_weight"])

    def _project(self, vectors: np.ndarray, items: Sequence[str | None] | None = None) -> np.ndarray:
        """Unit rows of ``vectors @ projection`` (unchanged without one), each plus its item's own vector when
        ``items`` names one that has it. Row by row in a fixed order (einsum, not BLAS), so a text's projected
        vector does not depend on the batch it came in: `scan` and `update` agree exactly."""
        if self.projection is None or not len(vectors):
            return vectors
        if vectors.shape[1] != self.projection.shape[0]:
            actions = len(self._action_vocab()[0])
            raise InterestBertError(
                f"the drift projection reads {self.projection.shape[0]} numbers per event but gets "
                f"{vectors.shape[1]} ({vectors.shape[1] - actions} from the encoder, {actions} action features): it "
                "was fitted with another encoder; fit the projection and calibrate again (interestbert drift "
                "--calibrate)."
            )
        out = np.einsum("nd,dk->nk", vectors.astype(np.float32), self.projection, optimize=False)
        if items is not None:
            rows = np.fromiter((self._item_index.get(i, -1) for i in items), np.int64, len(items))
            has = rows >= 0
            out[has] += self._item_matrix[rows[has]]
        return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def _cached(self, events: list[Event]) -> np.ndarray:
        """Vectors of events for `update`, from a memo of the `MEMO_TEXTS` most recently used event texts (the
        same item's text recurs across users), the missing ones encoded in one call."""
        texts = [e.text for e in events]
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if missing:
            self._memo.update(zip(missing, self._vectors(missing, events, False)))
        for text in texts:
            self._memo.move_to_end(text)
        while len(self._memo) > MEMO_TEXTS:
            self._memo.popitem(last=False)
        return np.stack([self._memo[t] for t in texts])

    def reset(self, user_id: str | None = None) -> None:
        """Forgets streaming state made under the old vectors (the monitor's per-user states)."""
