"""The drift monitor: notice when a person's recent behaviour stops looking like their earlier behaviour, and say how.

Along a history, every ``stride`` events the monitor takes a vector of the newest ``window`` events and compares
it, by cosine, with the user's interest in the current segment: the mean of the earlier window vectors that do
not overlap the newest window (all of them since the segment began, or with ``reference_windows=K`` the newest
K). The window vector is the embedding of the window's joined text (``window_vector="text"``: one encoder call
per evaluation) or the normalised mean of its events' own vectors (``"mean"``: each distinct event text is
encoded once, in batch across all histories and in streaming from a bounded memo). The distance is
``1 - cosine``; the drift score is that distance minus the mean of the segment's earlier distances (``centre``,
the default: an eclectic user's windows always differ more from their mean than a focused user's, and only a rise
above their own level is a shift), or the distance itself. When the score reaches the threshold, a `DriftEvent` is
emitted and a new segment starts from the newest window, so one shift raises one alarm and the next comparison
waits until the new segment has a window of history and a few distances.

Before the mean, event vectors can pass through a learned projection (`DriftMonitor.fit_projection`, fitted by
`interestbert.encoder.drift.projection`); the score's form can be tuned to the domain (`DriftMonitor.tune_score`,
`interestbert.encoder.drift.tuning`). The threshold comes from `DriftMonitor.calibrate`, which picks it on real
histories so that alarms stay at a target number per 1,000 events; it is saved beside the model
(``interestbert/drift/config.json``, the projection in ``model.safetensors`` beside it) and used by default.

Batch (`scan`) and streaming (`update`) share one state machine, so they give the same detections on the same
history. The explanation of an event compares the item texts of the window before with the window after: the
terms whose share fell most are what the user moved *from*, those whose share rose most what they moved *to*.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ..errors import InterestBertError
from ..hub.folder import DRIFT as DRIFT_PART
from ..hub.folder import ModelFolder
from . import tuning
from .events import DriftConfig, DriftEvent, Event, History, ScanResult, explain, sort_events
from .projection import ITEMS_KEY
from .vectors import EventVectors

__all__ = ["DriftMonitor"]

MIN_DISTANCES = 3  # with `centre`, distances seen in a segment before a score is given
MAX_STREAM_USERS = 100_000  # users `update` follows at once by default (~1.6 GB at ~16 KB each)


class _UserState:
    """The small per-user state of the streaming monitor (also driven by `scan`)."""

    __slots__ = (
        "recent",
        "n",
        "last_ts",
        "pending",
        "ref_sum",
        "ref_count",
        "reordered",
        "tied",
        "last_score",
        "dist_n",
        "dist_mean",
        "ref_windows",
    )

    def __init__(self, window: int, reference_windows: int | None = None):
        self.recent: deque[Event] = deque(maxlen=2 * window)  # texts of the newest 2 windows
        self.ref_windows: deque[np.ndarray] = deque(maxlen=reference_windows)  # with a sliding reference
        self.n = 0
        self.last_ts: int | None = None
        self.pending: deque[tuple[int, np.ndarray]] = deque()  # (index, vector) still overlapping the newest window
        self.ref_sum: np.ndarray | None = None
        self.ref_count = 0
        self.reordered = 0
        self.tied = 0
        self.last_score = float("nan")
        self.dist_n, self.dist_mean = 0, 0.0  # the segment's distances so far and their mean


class DriftMonitor(EventVectors):
    """Detects and explains interest shifts along histories, in batch or per incoming event.

    Args:
        encode: Texts to unit-norm vectors, ``(n, dim)`` float32 (an `InterestEncoder`'s ``encode``).
        config: Window, stride, threshold and the record of its calibration.
        separator: Joins the event texts of a window (the card's separator).
        batch_size: Texts per encoder call in `scan_many` and `calibrate`.
        max_users: Users whose streaming state `update` keeps at once (the least recently updated is evicted
            beyond it); None for no limit.
        projection: ``(dim, k)`` matrix applied to every event (or window) vector before its window mean and the
            cosine (`fit_projection` learns one; ``(dim + actions, k)`` when it read the events' actions, which
            ``config.projection`` then lists); None: the vectors as encoded.
        item_vectors: With a projection, ``{item text: (k,) vector}`` added to the projected vector of every event
            of that item (`Event.item_text`), before it is normalised (`fit_projection` learns them); None: none.

    Example:
        >>> monitor = DriftMonitor.from_pretrained("my-model", encoder.encode)  # doctest: +SKIP
        >>> result = monitor.scan(history)  # doctest: +SKIP
        >>> for event in result.events:  # doctest: +SKIP
        ...     print(event.index, event.explanation)
        41 moved from yoga, mat to running, shoes
    """

    def __init__(
        self,
        encode: Callable[[list[str]], np.ndarray],
        config: DriftConfig | None = None,
        separator: str = "\n",
        batch_size: int = 64,
        max_users: int | None = MAX_STREAM_USERS,
        projection: np.ndarray | None = None,
        item_vectors: dict[str, np.ndarray] | None = None,
    ):
        self.config = config or DriftConfig()
        self.separator = separator
        super().__init__(encode, batch_size, projection, item_vectors)
        if max_users is not None and max_users < 1:
            raise ValueError(f"max_users is {max_users}; it must be at least 1 (or None for no limit).")
        self.max_users = max_users
        self.evicted = 0
        self._states: OrderedDict[str, _UserState] = OrderedDict()  # least recently updated first

    # ------------------------------------------------------------------------------------------- persistence

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, encode: Callable, separator: str = "\n", **overrides):
        """A monitor with the calibration saved in ``model_dir`` (uncalibrated defaults when there is none)."""
        folder = ModelFolder(model_dir)
        found = folder.load_part(DRIFT_PART)
        saved = None if found is None else found[1]
        tensors = None if found is None else found[0]
        config = DriftConfig()
        items = None
        if saved is not None:
            saved = dict(saved)
            items = saved.pop(ITEMS_KEY, None)
            try:
                config = DriftConfig(**saved)
            except (ValueError, TypeError) as err:
                raise InterestBertError(
                    f"{folder.drift_file()}: not a drift calibration ({err}); delete it and calibrate again."
                ) from None
        projection = item_vectors = None
        if config.projection is not None:
            if not tensors or "projection" not in tensors:
                raise InterestBertError(
                    f"{folder.drift_file()} records a projection but its folder holds no "
                    "model.safetensors with it; fit the projection and calibrate again."
                )
            projection = tensors["projection"].float().numpy()
            if items:
                table = tensors.get("item_vectors")
                if table is None or tuple(table.shape) != (len(items), projection.shape[1]):
                    raise InterestBertError(
                        f"{folder.drift_file()} lists {len(items)} items with vectors but its "
                        "model.safetensors holds no item_vectors of that shape; fit the "
                        "projection and calibrate again."
                    )
                item_vectors = dict(zip(items, table.float().numpy()))
        return cls(encode, replace(config, **overrides), separator, projection=projection, item_vectors=item_vectors)

    def save_pretrained(self, model_dir: str | Path) -> Path:
        """Writes the calibration to ``model_dir/interestbert/drift/config.json``, the projection (if any) to
        ``model.safetensors`` beside it (with the items' vectors; their item texts in the JSON), and the model card,
        when the folder holds a model; returns the JSON file."""
        import torch

        config, tensors = asdict(self.config), None
        if self.projection is not None:
            tensors = {"projection": torch.from_numpy(self.projection.copy())}
            if self.item_vectors:
                config[ITEMS_KEY] = list(self.item_vectors)
                tensors["item_vectors"] = torch.from_numpy(self._item_matrix.copy())
        return ModelFolder(model_dir).save_drift(config, tensors)

    @property
    def calibrated(self) -> bool:
        return self.config.threshold is not None

    # ----------------------------------------------------------------------------------------------- batch

    def scan(self, history: History) -> ScanResult:
        """Scores one history and returns its detections (the same as feeding it to `update` event by event)."""
        return self.scan_many([history])[0]

    def scan_many(self, histories: Sequence[History], show_progress_bar: bool = False) -> list[ScanResult]:
        """`scan` for many histories, with all window texts encoded in large batches."""
        threshold = self._threshold()
        plans = [self._plan(h) for h in histories]
        blocks = self._window_vectors(plans, show_progress_bar)
        return [
            self._replay(h.user_id, events, block, threshold, stats)
            for h, (events, stats, _), block in zip(histories, plans, blocks)
        ]

    def eval_positions(self, n_events: int) -> range:
        """Event indices after which the monitor embeds the newest window: every ``stride``-th event once a window
        is full. Distances start once a full earlier window exists (event ``2 * window - 1``); centred scores
        after `MIN_DISTANCES` distances more."""
        return range(self.first_evaluated, n_events, self.config.stride)

    @property
    def first_evaluated(self) -> int:
        """The first event index at which the newest window is embedded (then every ``stride`` events)."""
        return _first_eval(self.config.window, self.config.stride)

    def _plan(self, history: History) -> tuple[list[Event], tuple[int, int], list[str]]:
        """A history's events in time order, their order statistics, and the texts to encode: one per evaluation
        (the window's joined text) or, with ``window_vector="mean"``, one per event."""
        events, stats = sort_events(history.events)
        w, positions = self.config.window, self.eval_positions(len(events))
        if self.config.window_vector == "mean":
            return events, stats, [e.text for e in events] if len(positions) else []
        return events, stats, [self.separator.join(e.text for e in events[i - w + 1 : i + 1]) for i in positions]

    def _window_vectors(self, plans: list, show_progress_bar: bool) -> list[np.ndarray]:
        """Per plan, one unit vector per evaluation position; every distinct text of all plans encoded once."""
        texts = [text for _, _, plan_texts in plans for text in plan_texts]
        unique = list(dict.fromkeys(texts))
        encoded = self._vectors(
            unique, (e for events, _, plan_texts in plans if plan_texts for e in events), show_progress_bar
        )
        if unique:
            index = {text: k for k, text in enumerate(unique)}
            encoded = encoded[[index[text] for text in texts]]
        blocks = _split(encoded, plans)
        if self.config.window_vector == "text":
            return blocks
        return [self._mean_windows(block, len(events)) for (events, _, _), block in zip(plans, blocks)]

    def _mean_windows(self, event_vectors: np.ndarray, n_events: int) -> np.ndarray:
        """The unit-norm mean of the ``window`` newest event vectors at each evaluation position."""
        positions = np.asarray(self.eval_positions(n_events), dtype=np.int64)
        if not len(positions):
            return np.zeros((0, event_vectors.shape[-1] if event_vectors.ndim == 2 else 0), dtype=np.float32)
        w = self.config.window  # the same sum in `scan` and `update` (one window there), so they agree exactly
        windows = np.lib.stride_tricks.sliding_window_view(event_vectors, w, axis=0)[positions - w + 1]
        means = windows.sum(axis=-1, dtype=np.float64)
        return (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def _replay(
        self,
        user_id: str,
        events: list[Event],
        vectors: np.ndarray,
        threshold: float,
        stats: tuple[int, int],
        explain_events: bool = True,
    ) -> ScanResult:
        state = _UserState(self.config.window, self.config.reference_windows)
        positions = list(self.eval_positions(len(events)))
        scores = np.full(len(positions), np.nan, dtype=np.float32)
        detections = []
        k = 0
        for i, event in enumerate(events):
            state.recent.append(event)
            state.n += 1
            if k < len(positions) and positions[k] == i:
                score, detection = self._step(user_id, state, event, vectors[k], threshold, explain_events)
                scores[k] = score
                if detection is not None:
                    detections.append(detection)
                k += 1
        stamps = np.asarray([events[i].timestamp for i in positions], dtype=np.int64)
        return ScanResult(
            user_id,
            np.asarray(positions, dtype=np.int64),
            stamps,
            scores,
            detections,
            len(events),
            reordered=stats[0],
            tied=stats[1],
        )

    # ------------------------------------------------------------------------------------------- streaming

    def update(self, user_id: str, event: Event) -> DriftEvent | None:
        """Feeds one new event of ``user_id``; returns a `DriftEvent` when it completes a detected shift. At most one
        encoder call, on every ``stride``-th event. An event older than the user's last one is taken as arriving
        now (streams cannot be re-sorted) and counted in `stream_stats`.

        The monitor keeps a small state per user (the newest ``2 * window`` events and a few vectors; the event
        texts are the caller's strings; with ``window_vector="mean"`` one memo of event-text vectors, `MEMO_TEXTS` at
        most, is shared by all users) for at most ``max_users`` users: a new user beyond that
        evicts the one idle longest (counted as ``evicted`` in `stream_stats`), who starts a new history if they
        return."""
        state = self._states.get(user_id)
        if state is None:
            state = self._states[user_id] = _UserState(self.config.window, self.config.reference_windows)
            if self.max_users is not None and len(self._states) > self.max_users:
                self._states.popitem(last=False)  # the user idle longest starts afresh if they come back
                self.evicted += 1
        else:
            self._states.move_to_end(user_id)
        if state.last_ts is not None:
            state.reordered += int(event.timestamp < state.last_ts)
            state.tied += int(event.timestamp == state.last_ts)
        state.last_ts = event.timestamp if state.last_ts is None else max(state.last_ts, event.timestamp)
        state.recent.append(event)
        state.n += 1
        i = state.n - 1
        w, first = self.config.window, self.first_evaluated
        if i < first or (i - first) % self.config.stride:
            return None
        newest = list(state.recent)[-w:]
        if self.config.window_vector == "mean":
            vector = self._mean_windows(self._cached(newest), w)[0]
        else:
            vector = self._vectors([self.separator.join(e.text for e in newest)], (), False)[0]
        return self._step(user_id, state, event, vector, self._threshold())[1]

    def last_score(self, user_id: str) -> float:
        """The drift score at the user's last evaluation (NaN when none was possible yet)."""
        state = self._states.get(user_id)
        return float("nan") if state is None else state.last_score

    def stream_stats(self) -> dict:
        """Users followed, users evicted (the ``max_users`` limit), and the followed users' events, of which those
        that arrived out of time order or with a tied timestamp."""
        states = self._states.values()
        return {
            "users": len(self._states),
            "evicted": self.evicted,
            "events": sum(s.n for s in states),
            "reordered": sum(s.reordered for s in states),
            "tied": sum(s.tied for s in states),
        }

    def reset(self, user_id: str | None = None) -> None:
        """Forgets one user's streaming state, or everyone's."""
        if user_id is None:
            self._states.clear()
        else:
            self._states.pop(user_id, None)

    # ------------------------------------------------------------------------------------------ calibration

    # ------------------------------------------------------------------ fitting (`interestbert.encoder.drift.tuning`)

    calibrate = tuning.calibrate
    fit_projection = tuning.fit_projection
    tune_score = tuning.tune_score
    fit_and_tune = tuning.fit_and_tune

    # ---------------------------------------------------------------------------------------------- internals

    def _threshold(self) -> float:
        if self.config.threshold is None:
            raise InterestBertError(
                "this drift monitor is not calibrated: call calibrate(histories, "
                "target_false_alarms_per_1000_events) or load a model saved with a calibration."
            )
        return self.config.threshold

    def _step(
        self,
        user_id: str,
        state: _UserState,
        event: Event,
        vector: np.ndarray,
        threshold: float,
        explain_events: bool = True,
    ) -> tuple[float, DriftEvent | None]:
        """One evaluation at the newest event: compare, maybe detect, then update the segment's reference."""
        i, w = state.n - 1, self.config.window
        while state.pending and state.pending[0][0] <= i - w:  # no longer overlaps the newest window
            _, old = state.pending.popleft()
            if self.config.reference_windows is None:  # the whole segment: a running sum
                state.ref_sum = old.astype(np.float64) if state.ref_sum is None else state.ref_sum + old
            else:  # the newest K windows
                state.ref_windows.append(old)
                state.ref_sum = np.sum(state.ref_windows, axis=0, dtype=np.float64)
            state.ref_count += 1
        score = float("nan")
        if state.ref_count:
            ref = state.ref_sum / max(np.linalg.norm(state.ref_sum), 1e-12)
            distance = float(1.0 - np.dot(ref, vector.astype(np.float64)))
            score = distance
            if self.config.centre:  # a focused user's usual distance is small, an eclectic one's large
                score = distance - state.dist_mean if state.dist_n >= MIN_DISTANCES else float("nan")
                state.dist_n += 1
                state.dist_mean += (distance - state.dist_mean) / state.dist_n
        state.last_score = score
        detection = None
        if score == score and score >= threshold:
            recent = list(state.recent)
            after = [e.item_text for e in recent[-w:]]
            before = [e.item_text for e in recent[:-w]]
            moved_from, moved_to = explain(before, after, self.config.explain_terms) if explain_events else ((), ())
            detection = DriftEvent(user_id, i, int(event.timestamp), score, i - w + 1, moved_from, moved_to)
            state.pending.clear()  # a new segment starts with the newest window
            state.ref_sum, state.ref_count = None, 0
            state.ref_windows.clear()
            state.dist_n, state.dist_mean = 0, 0.0
        state.pending.append((i, vector))
        return score, detection


def _split(vectors: np.ndarray, plans: list) -> list[np.ndarray]:
    """The rows of ``vectors`` (all plans' window texts, in order) cut back into one block per plan."""
    ends = np.cumsum([len(texts) for _, _, texts in plans], dtype=np.int64)
    return [vectors[end - len(texts) : end] for (_, _, texts), end in zip(plans, ends.tolist())]


def _first_eval(window: int, stride: int) -> int:
    """The first event index at which the newest window is embedded: the first full window, moved on to the
    stride's grid (event counts that are multiples of ``stride``)."""
    return window - 1 + (-window) % stride
