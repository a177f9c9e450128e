"""The drift monitor's data model: events and histories as it sees them, a detection (`DriftEvent`), one history's
score series (`ScanResult`) and the options (`DriftConfig`); how a detection is explained (`explain`: the terms
whose share fell and rose); time order with late and tied events counted (`sort_events`); histories of a
`Verbaliser` (`histories_from_verbaliser`). `interestbert.encoder.drift` re-exports all of them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

WINDOW_VECTORS = ("text", "mean")
_WORD = re.compile(r"[^\W\d_][\w'&-]*[^\W_]|[^\W\d_]{2,}", re.UNICODE)
_ACTION_PUNCTUATION = " \t\n:;,.-|()[]"
_STOP = frozenset(
    """a an and are as at be by for from in into is it its of on or the to with without your you
                     this that these those new set pack vol edition de la le les el""".split()
)


@dataclass(frozen=True)
class Event:
    """One behaviour event as the monitor sees it: the event's text (how the card renders it), the item's text
    (for explanations) and its timestamp."""

    text: str
    item_text: str
    timestamp: int

    @property
    def action(self) -> str:
        """What the event's text says besides the item: "rated 4/5", "viewed", "reviewed, 5/5" (the card's action
        and rating as rendered), "" when the text does not contain the item's text."""
        if not self.item_text or self.item_text not in self.text:
            return ""
        return self.text.replace(self.item_text, "", 1).strip(_ACTION_PUNCTUATION)


@dataclass
class History:
    """One user's events, oldest first (`scan` sorts them by timestamp, keeping the order of ties)."""

    user_id: str
    events: list[Event]


@dataclass(frozen=True)
class DriftEvent:
    """A detected shift: raised at event ``index`` (0-based, the newest event seen) of ``user_id``'s history; the
    shift happened within the last ``window`` events, from ``since_index`` on."""

    user_id: str
    index: int
    timestamp: int
    score: float
    since_index: int
    moved_from: tuple[str, ...]
    moved_to: tuple[str, ...]

    @property
    def explanation(self) -> str:
        before = ", ".join(self.moved_from) or "(nothing distinctive)"
        after = ", ".join(self.moved_to) or "(nothing distinctive)"
        return f"moved from {before} to {after}"


@dataclass
class ScanResult:
    """The score series of one history (one entry per evaluation; NaN where no comparison was possible yet) and
    its detections."""

    user_id: str
    indices: np.ndarray  # (n_evals,) event index of each evaluation
    timestamps: np.ndarray  # (n_evals,)
    scores: np.ndarray  # (n_evals,) float32, NaN before a reference exists
    events: list[DriftEvent]
    n_events: int
    reordered: int = 0  # events whose timestamp was older than the one before (sorted)
    tied: int = 0  # events whose timestamp equals the one before (file order kept)


@dataclass
class DriftConfig:
    """What a monitor needs besides the encoder; saved as JSON beside the model."""

    window: int = 4
    stride: int = 2
    threshold: float | None = None
    explain_terms: int = 3
    centre: bool = True  # score = distance minus the mean of the segment's earlier distances (the user's own level)
    reference_windows: int | None = 5  # the reference: the newest K earlier windows (None: the whole segment)
    window_vector: str = "mean"  # "mean": the mean of the window's event vectors; "text": its joined text encoded
    alpha_max: float = 0.25  # drift-aware recommendation: the short-term weight at and above the threshold
    calibration: dict = field(default_factory=dict)
    projection: dict | None = None  # the record of `DriftMonitor.fit_projection` (None: event vectors as encoded)
    score_tuning: dict | None = None  # the record of `DriftMonitor.tune_score` (None: centre/reference as set)

    def __post_init__(self):
        if self.window < 2:
            raise ValueError(f"`window` should be at least 2 events, got {self.window}.")
        if not 1 <= self.stride <= self.window:
            raise ValueError(f"`stride` should be between 1 and `window` ({self.window}), got {self.stride}.")
        if self.reference_windows is not None and self.reference_windows < 1:
            raise ValueError(f"`reference_windows` should be at least 1 (or None), got {self.reference_windows}.")
        if self.window_vector not in WINDOW_VECTORS:
            raise ValueError(
                f"`window_vector` should be one of {', '.join(WINDOW_VECTORS)}, got {self.window_vector!r}."
            )
        if not 0 <= self.alpha_max <= 1:
            raise ValueError(f"`alpha_max` should be in [0, 1], got {self.alpha_max}.")


def terms(text: str) -> set[str]:
    """The distinct content words of an item text, lower-cased (explanations count these)."""
    return {w for w in (m.group(0).lower() for m in _WORD.finditer(text)) if w not in _STOP and len(w) > 2}


def explain(before: Sequence[str], after: Sequence[str], n: int = 3) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The ``n`` terms whose share of items fell most from ``before`` to ``after``, and the ``n`` that rose most."""
    count_before = Counter(t for text in before for t in terms(text))
    count_after = Counter(t for text in after for t in terms(text))
    delta = {
        t: count_after[t] / max(len(after), 1) - count_before[t] / max(len(before), 1)
        for t in count_before.keys() | count_after.keys()
    }
    fell = sorted((t for t in delta if delta[t] < 0), key=lambda t: (delta[t], t))[:n]
    rose = sorted((t for t in delta if delta[t] > 0), key=lambda t: (-delta[t], t))[:n]
    return tuple(fell), tuple(rose)


def sort_events(events: Sequence[Event]) -> tuple[list[Event], tuple[int, int]]:
    """Events in time order (ties keep their order) and the counts of (late, tied) events: late ones are older
    than an event before them in the input, tied ones share the timestamp of the event before them once sorted."""
    stamps = np.asarray([e.timestamp for e in events], dtype=np.int64)
    # an event older than one before it arrived late (the count a stream would make)
    reordered = int((stamps[1:] < np.maximum.accumulate(stamps)[:-1]).sum()) if len(stamps) > 1 else 0
    order = np.argsort(stamps, kind="stable") if reordered else np.arange(len(events))
    ordered = [events[i] for i in order]
    sorted_stamps = stamps[order]
    tied = int((np.diff(sorted_stamps) == 0).sum()) if len(stamps) > 1 else 0
    return ordered, (reordered, tied)


def histories_from_verbaliser(
    verbaliser, users: Sequence[int] | None = None, ends: Sequence[int] | None = None, last: int | None = None
) -> list[History]:
    """`History` objects for users of a `Verbaliser` (positions in ``verbaliser.users``; default all), each cut to
    its first ``ends[i]`` events when given (e.g. the training part of a leave-one-out split), and then to its
    newest ``last`` events when given (the events are in time order per user)."""
    idx = range(len(verbaliser.users)) if users is None else [int(u) for u in users]
    out = []
    for k, u in enumerate(idx):
        lo, hi = int(verbaliser.offsets[u]), int(verbaliser.offsets[u + 1])
        if ends is not None:
            hi = lo + int(ends[k])
        if last is not None:
            lo = max(lo, hi - int(last))
        events = [
            Event(
                verbaliser.pieces[verbaliser.event_piece[j]],
                verbaliser.item_texts[verbaliser.event_items[j]],
                int(verbaliser.timestamps[j]),
            )
            for j in range(lo, hi)
        ]
        out.append(History(verbaliser.users[u], events))
    return out
