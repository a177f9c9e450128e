"""Drift-aware recommendation: top-k items from a blend of short- and long-term interest.

For each user, at the end of the history (or of a prefix, for evaluation):

- ``long``: the model's interest vector of the history (`InterestEncoder.encode_histories`: what the strategy head
  is trained on);
- ``short``: the embedding of the newest ``window`` events, the DriftMonitor's view of the present;
- the drift score: the monitor's score at the newest event, from a scan of the last ``2 * window + TAIL`` events
  (its reference is the long-term interest within that tail, not the whole history);

and the interest vector is ``normalize(a * short + (1 - a) * long)`` with ``a = alpha_max * min(1, score /
threshold)``: long-term only while nothing drifts (score 0 gives ``a = 0``; see `short_term_weight` for a threshold
at or below 0), up to ``alpha_max`` of short-term when the score reaches the calibrated threshold. Items are then
scored by the model's strategy head (or, for a model without one, by cosine to the item texts), the user's seen
items excluded; `recommend_users` does it all, through `interestbert.encoder.scoring`.

The sequence head reads the order of the newest events, not an interest vector, so its blend is of scores:
``(1 - a) * scores(history) + a * scores(the newest window events alone)``, with the same ``a``
(`SequenceHeadScorer` with ``short_window``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from interestbert.encoder.drift import DriftMonitor, History, histories_from_verbaliser
from interestbert.encoder.files import atomic_write
from interestbert.encoder.scoring import InterestScorer, Scorer, SequenceHeadScorer, scorer_for

TAIL = 24  # events before the newest window that the end-of-history drift scan looks at
RECENT = 20  # "a detection in the last RECENT events" marks a user as recently drifted


@dataclass
class UserVectors:
    """End-of-history vectors of many users (rows in the order given)."""

    long: np.ndarray  # (n, dim)
    short: np.ndarray  # (n, dim)
    score: np.ndarray  # (n,) NaN where the tail holds too few events for a score
    recent_detection: np.ndarray  # (n,) bool: a detection among the last RECENT events


def user_vectors(
    encoder,
    verbaliser,
    monitor: DriftMonitor,
    users: np.ndarray,
    ends: np.ndarray | None = None,
    batch_size: int = 64,
    show_progress_bar: bool = False,
) -> UserVectors:
    users = np.asarray(users, dtype=np.int64)
    ends = verbaliser.n_events[users] if ends is None else np.asarray(ends, dtype=np.int64)
    w = monitor.config.window
    long = encoder.encode_histories(verbaliser, users, ends, batch_size=batch_size, show_progress_bar=show_progress_bar)
    histories = tail_histories(verbaliser, monitor, users, ends)
    short_texts = [monitor.separator.join(e.text for e in h.events[-w:]) for h in histories]
    short = encoder.encode(short_texts, batch_size=batch_size, show_progress_bar=False)
    score, recent = drift_scores(monitor, histories, show_progress_bar)
    return UserVectors(np.asarray(long, np.float32), np.asarray(short, np.float32), score, recent)


def tail_histories(verbaliser, monitor: DriftMonitor, users: np.ndarray, ends: np.ndarray | None = None):
    """The newest events of each history that `drift_scores` reads (``TAIL + 2 * window``), and no more."""
    return histories_from_verbaliser(verbaliser, users, ends, last=TAIL + 2 * monitor.config.window)


def drift_scores(
    monitor: DriftMonitor, histories: list[History], show_progress_bar: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The monitor's score at each history's newest event (NaN where the tail holds too few events) and whether a
    detection fell among its last `RECENT` events (whole histories or `tail_histories`: the same result)."""
    scans = tail_scans(monitor, histories, show_progress_bar)
    score = np.asarray(
        [r.scores[-1] if len(r.scores) and r.indices[-1] == r.n_events - 1 else np.nan for r in scans], dtype=np.float32
    )
    recent = np.asarray([any(e.index >= r.n_events - RECENT for e in r.events) for r in scans], dtype=bool)
    return score, recent


def tail_scans(monitor: DriftMonitor, histories: list[History], show_progress_bar: bool = False) -> list:
    """The monitor's scan (`ScanResult`) of each history's tail: its newest ``TAIL + 2 * window`` events, cut so
    that the newest event falls on the stride's grid and is evaluated (indices count from the tail's start)."""
    first, stride = monitor.first_evaluated, monitor.config.stride
    w = monitor.config.window
    tails = []
    for h in histories:
        events = h.events[-(TAIL + 2 * w) :]
        shift = (len(events) - 1 - first) % stride if len(events) - 1 >= first else 0
        tails.append(History(h.user_id, events[shift:]))
    return monitor.scan_many(tails, show_progress_bar=show_progress_bar)


def short_term_weight(score: np.ndarray, threshold: float, alpha_max: float) -> np.ndarray:
    """``a = alpha_max * clip(score / threshold, 0, 1)``; 0 where the score is unknown (NaN). A threshold at or
    below 0 (centred scores can calibrate there) makes it a step: ``alpha_max`` at or above the threshold."""
    score = np.nan_to_num(score, nan=-np.inf)
    if threshold <= 0:
        return np.where(score >= threshold, alpha_max, 0.0).astype(np.float32)
    return (alpha_max * np.clip(score / threshold, 0.0, 1.0)).astype(np.float32)


def blend(vectors: UserVectors, threshold: float, alpha_max: float) -> np.ndarray:
    """``normalize(a * short + (1 - a) * long)`` with ``a`` from `short_term_weight`."""
    alpha = short_term_weight(vectors.score, threshold, alpha_max)
    mixed = alpha[:, None] * vectors.short + (1 - alpha[:, None]) * vectors.long
    mixed = mixed / np.maximum(np.linalg.norm(mixed, axis=1, keepdims=True), 1e-12)
    # no drift: the long-term vector itself, not a renormalised copy, whose last-bit changes can reorder near-ties
    return np.where(alpha[:, None] == 0, vectors.long, mixed)


def strategies(vectors: UserVectors, threshold: float, alpha_max: float) -> dict[str, np.ndarray]:
    """The interest vectors of the three strategies compared by the benchmark."""
    return {"long-only": vectors.long, "short-only": vectors.short, "drift-aware": blend(vectors, threshold, alpha_max)}


@dataclass
class Recommendations:
    """Top-k of many users: catalogue rows and scores ``(n, k)``, best first; the drift score at each user's newest
    event and the short-term weight it gave (NaN and 0 without the drift-aware blend); the scorer's name."""

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    drift: np.ndarray
    short_term_weight: np.ndarray
    scorer: str


def recommend_users(
    encoder,
    verbaliser,
    users: np.ndarray,
    k: int = 10,
    scorer: str | Scorer = "auto",
    monitor: DriftMonitor | None = None,
    batch_size: int = 64,
    show_progress_bar: bool = False,
) -> Recommendations:
    """Top-``k`` unseen items for each of ``users`` (positions in ``verbaliser.users``) at the end of their history.

    Args:
        scorer: ``auto``, ``sequence``, ``strategy`` or ``text`` (see `interestbert.encoder.scoring.scorer_for`), or
            a `Scorer` made ahead over ``verbaliser`` (the live service binds one to each person's history).
        monitor: A calibrated `DriftMonitor`: recommend from the drift-aware blend of short- and long-term
            interest (see the module docstring) instead of the long-term interest alone.
    """
    users = np.asarray(users, dtype=np.int64)
    chosen = scorer if isinstance(scorer, Scorer) else scorer_for(encoder, verbaliser, scorer, batch_size=batch_size)
    drift = np.full(len(users), np.nan, np.float32)
    alpha = np.zeros(len(users), np.float32)
    inputs = {}
    if monitor is not None and isinstance(chosen, SequenceHeadScorer):
        chosen = SequenceHeadScorer(chosen.head, verbaliser, short_window=monitor.config.window)
        drift, _ = drift_scores(monitor, tail_histories(verbaliser, monitor, users), show_progress_bar)
        alpha = inputs["alpha"] = short_term_weight(drift, monitor.config.threshold, monitor.config.alpha_max)
    elif monitor is not None:
        vectors = user_vectors(
            encoder, verbaliser, monitor, users, batch_size=batch_size, show_progress_bar=show_progress_bar
        )
        inputs["interest"] = blend(vectors, monitor.config.threshold, monitor.config.alpha_max)
        drift = vectors.score
        alpha = short_term_weight(drift, monitor.config.threshold, monitor.config.alpha_max)
    elif isinstance(chosen, InterestScorer):
        inputs["interest"] = encoder.encode_histories(
            verbaliser, users, batch_size=batch_size, show_progress_bar=show_progress_bar
        )
    items, scores = chosen.topk(users, k, **inputs)
    return Recommendations(users, items, scores, drift, alpha, chosen.name)


def write_recommendations(path: str | os.PathLike, verbaliser, recs: Recommendations) -> None:
    """``user_id``, ``rank`` (1 = best), ``item_id``, ``score``, ``drift_score``, ``short_term_weight``: one row per
    recommended item, written atomically."""
    import pyarrow.parquet as pq

    users, items, scores = recs.users, recs.items, recs.scores
    drift, alpha = recs.drift, recs.short_term_weight
    k = items.shape[1]
    table = pa.table(
        {
            "user_id": pa.array(np.repeat([verbaliser.users[u] for u in users.tolist()], k).tolist(), pa.string()),
            "rank": pa.array(np.tile(np.arange(1, k + 1), len(users)), pa.int16()),
            "item_id": pa.array([verbaliser.item_ids[i] for i in items.reshape(-1).tolist()], pa.string()),
            "score": pa.array(scores.reshape(-1), pa.float32()),
            "drift_score": pa.array(np.repeat(drift, k), pa.float32()),
            "short_term_weight": pa.array(np.repeat(alpha, k), pa.float32()),
        }
    )
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
