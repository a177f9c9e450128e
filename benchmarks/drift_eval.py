"""The drift benchmark's half of stream evaluation: per-dataset designs and user pools, paired bootstrap intervals,
event-level AUC/AP, content-free reference detectors, threshold calibration of raw score series, and the downstream
queries and headroom measure. The stream builder and scorer they share with the product live in
`interestbert.encoder.drift.streams`; their names are re-exported here, so a benchmark reads one module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from interestbert.encoder.drift.events import History
from interestbert.encoder.drift.streams import (
    Stream,
    StreamDesign,
    StreamOutcome,
    change_magnitude,
    js_divergence,
    magnitude_terciles,
    match_alarms,
    outcomes,
    renewal_streams,
    score_alarms,
    scored_events,
    segment_lengths,
    shifted,
    summarise,
)

__all__ = [
    "DESIGNS",
    "DOWNSTREAM_OFFSETS",
    "SPLITS",
    "Stream",
    "StreamDesign",
    "StreamOutcome",
    "best_content_free",
    "best_within_budget",
    "bootstrap",
    "calibrate_threshold",
    "change_magnitude",
    "downstream_queries",
    "event_labels",
    "event_scores",
    "fixed_alarms",
    "forward_fill",
    "headroom_interval",
    "headroom_recovered",
    "js_divergence",
    "magnitude_terciles",
    "match_alarms",
    "ndcg_at",
    "next_item_ranks",
    "outcomes",
    "periodic_alarms",
    "query_ranks",
    "random_alarms",
    "renewal_streams",
    "score_alarms",
    "scored_events",
    "segment_lengths",
    "shifted",
    "split_users",
    "summarise",
    "threshold_alarms",
]

SPLITS = ("tune", "calibrate", "evaluate")


DESIGNS = {  # P1 renewal splicing (MovieLens), P2 short renewal (Amazon)
    "movielens-1m": StreamDesign((100, 300), 20, 40, warmup=20, margin=8, min_user_events=100),
    "movielens-100k": StreamDesign((80, 200), 20, 40, warmup=20, margin=8, min_user_events=60),
    "amazon-beauty": StreamDesign((30, 60), 8, 12, warmup=8, margin=5, min_user_events=20, magnitude_window=8),
    "amazon-office": StreamDesign((24, 40), 8, 10, warmup=8, margin=5, min_user_events=20, magnitude_window=8),
}


def split_users(
    histories: Sequence[History],
    design: StreamDesign,
    seed: int = 0,
    fractions: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
) -> dict[str, list[History]]:
    """The users with at least ``design.min_user_events`` events, shuffled by ``seed`` and cut into disjoint
    tune / calibrate / evaluate pools in the given proportions."""
    pool = [h for h in histories if len(h.events) >= design.min_user_events]
    order = np.random.default_rng([seed, 11]).permutation(len(pool))
    cuts = np.round(np.cumsum([0, *fractions]) / sum(fractions) * len(pool)).astype(int)
    return {name: [pool[i] for i in order[cuts[k] : cuts[k + 1]]] for k, name in enumerate(SPLITS)}


def bootstrap(
    per_detector: Mapping[str, Sequence[StreamOutcome]],
    metric: str = "recall",
    reference: str | None = None,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Intervals of ``metric`` for each detector, resampling streams with replacement (the same resample for
    every detector: paired), and with ``reference``, of each detector's ratio to it. ``per_detector``: each
    detector's `outcomes` on the same streams. Returns ``{name: {"value", "low", "high"[, "ratio", "ratio_low",
    "ratio_high"]}}``."""
    names = list(per_detector)
    n_streams = len(per_detector[names[0]])
    if any(len(v) != n_streams for v in per_detector.values()):
        raise ValueError("bootstrap: every detector's outcomes must be on the same streams")
    rng = np.random.default_rng([seed, 31])
    draws = {k: np.empty(n) for k in names}
    for j in range(n):
        pick = rng.integers(0, n_streams, n_streams)
        for k in names:
            draws[k][j] = summarise([per_detector[k][i] for i in pick], by_magnitude=False)[metric]
    value = {k: summarise(per_detector[k], by_magnitude=False)[metric] for k in names}
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    out = {}
    for k in names:
        low, high = np.nanquantile(draws[k], q)
        out[k] = {"value": value[k], "low": float(low), "high": float(high)}
        if reference is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = draws[k] / draws[reference]
            ratio = ratio[np.isfinite(ratio)]
            lo, hi = np.quantile(ratio, q) if len(ratio) else (math.nan, math.nan)
            out[k].update(
                ratio=value[k] / value[reference] if value[reference] else float("nan"),
                ratio_low=float(lo),
                ratio_high=float(hi),
            )
    return out


def event_labels(stream: Stream, design: StreamDesign) -> np.ndarray:
    """Per scored event (index ≥ warm-up): 1 if it lies in ``[t, t + margin]`` of a change t, else 0."""
    labels = np.zeros(len(stream.events), dtype=np.int8)
    for t in stream.changes:
        labels[t : t + design.margin + 1] = 1
    return labels[design.warmup :]


def event_scores(scores: Mapping[str, np.ndarray], streams: Sequence[Stream], design: StreamDesign) -> dict:
    """Threshold-free quality of a continuous drift score: event-level ROC-AUC and average precision over every
    scored event of ``streams``. ``scores[stream_id]``: one value per event (NaN where the detector has no score
    yet, taken as its lowest)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, s = [], []
    for stream in streams:
        values = np.asarray(scores[stream.stream_id], dtype=float)
        if len(values) != len(stream.events):
            raise ValueError(f"stream {stream.stream_id}: {len(values)} scores for {len(stream.events)} events")
        y.append(event_labels(stream, design))
        s.append(values[design.warmup :])
    y, s = np.concatenate(y), np.concatenate(s)
    s = np.where(np.isnan(s), np.nanmin(s) - 1 if (~np.isnan(s)).any() else 0.0, s)
    if y.min() == y.max():
        return {"auc": float("nan"), "ap": float("nan"), "base_rate": float(y.mean()), "events": len(y)}
    return {
        "auc": float(roc_auc_score(y, s)),
        "ap": float(average_precision_score(y, s)),
        "base_rate": float(y.mean()),
        "events": len(y),
    }


def forward_fill(indices: Sequence[int], values: Sequence[float], n_events: int) -> np.ndarray:
    """A per-event score series from scores given at some event indices: each event gets the latest score at or
    before it (NaN before the first)."""
    out = np.full(n_events, np.nan)
    for i, v in zip(indices, values):
        out[int(i) :] = v
    return out


def threshold_alarms(
    series: Mapping[str, np.ndarray], threshold: float, refractory: int, warmup: int = 0
) -> dict[str, list[int]]:
    """Alarms of a continuous score (``{stream_id: one value per event}``): an event whose score reaches
    ``threshold``, then none for ``refractory`` events (one change, one alarm)."""
    out = {}
    for sid, values in series.items():
        above = np.flatnonzero(np.nan_to_num(np.asarray(values, dtype=float), nan=-np.inf) >= threshold)
        alarms, free = [], warmup
        for i in above[above >= warmup].tolist():
            if i >= free:
                alarms.append(i)
                free = i + refractory + 1
        out[sid] = alarms
    return out


def calibrate_threshold(
    series: Mapping[str, np.ndarray], controls: Sequence[Stream], design: StreamDesign, budget: float, refractory: int
) -> float:
    """The lowest threshold of a continuous score whose alarms on the ``controls`` stay within ``budget`` false
    alarms per 1,000 scored events (a binary search over the scores' values: fewer alarms as it rises)."""
    values = np.unique(
        np.concatenate([np.asarray(series[c.stream_id], dtype=float)[design.warmup :] for c in controls])
    )
    values = values[np.isfinite(values)]
    if not len(values):
        return float("inf")
    events = sum(scored_events(c, design) for c in controls)

    def rate(threshold: float) -> float:
        alarms = threshold_alarms(
            {c.stream_id: series[c.stream_id] for c in controls}, threshold, refractory, design.warmup
        )
        return 1000 * sum(map(len, alarms.values())) / max(events, 1)

    lo, hi = 0, len(values)  # values[hi:] (and above the maximum) fit the budget
    while lo < hi:
        mid = (lo + hi) // 2
        if rate(values[mid]) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return float(values[lo]) if lo < len(values) else float(np.nextafter(values[-1], np.inf))


def best_within_budget(
    candidates: Mapping[str, Mapping[str, Sequence[int]]],
    streams: Sequence[Stream],
    design: StreamDesign,
    budget: float,
) -> tuple[str | None, dict | None]:
    """Among alarm sets (``{setting: {stream_id: [alarms]}}``, e.g. a detector's parameter grid on the tuning
    streams), the highest-recall one whose false-alarm rate is within ``budget`` per 1,000 control events
    (ties: fewer false alarms). Returns its key and score, or (None, None) if none fits."""
    best = (None, None)
    for key, alarms in candidates.items():
        score = score_alarms(alarms, streams, design)
        if score["false_alarms_per_1000"] > budget:
            continue
        if best[1] is None or (score["recall"], -score["false_alarms_per_1000"]) > (
            best[1]["recall"],
            -best[1]["false_alarms_per_1000"],
        ):
            best = (key, score)
    return best


# ------------------------------------------------------------------------------------------ content-free rows


def periodic_alarms(streams: Sequence[Stream], period: int, phase: int, design: StreamDesign) -> dict[str, list[int]]:
    """A detector that looks at nothing but the position: an alarm at every ``period``-th event from ``phase``
    (after the warm-up)."""
    return {s.stream_id: list(range(design.warmup + phase, len(s.events), period)) for s in streams}


def random_alarms(streams: Sequence[Stream], per_1000: float, design: StreamDesign, seed: int = 0) -> dict:
    """Alarms at random scored events, at ``per_1000`` per 1,000 events."""
    rng = np.random.default_rng([seed, 41])
    return {
        s.stream_id: (design.warmup + np.flatnonzero(rng.random(scored_events(s, design)) < per_1000 / 1000)).tolist()
        for s in streams
    }


def fixed_alarms(streams: Sequence[Stream], position: int) -> dict[str, list[int]]:
    """A detector that looks at nothing: one alarm at event ``position`` of every stream long enough."""
    return {s.stream_id: [position] if position < len(s.events) else [] for s in streams}


def best_content_free(tune: Sequence[Stream], design: StreamDesign, budget: float) -> tuple[str, dict]:
    """The content-free detector with the best recall on the tuning streams within ``budget``: one alarm at a
    fixed event index, or alarms at a fixed period and phase. What a stream's construction alone gives away.
    Returns its setting (``fixed K`` or ``every P from Q``) and its tuning score."""
    longest = max(len(s.events) for s in tune)
    grid = {f"fixed {k}": fixed_alarms(tune, k) for k in range(design.warmup, longest)}
    shortest_period = max(2, int(1000 / (2 * budget)))  # a denser period cannot stay within the budget
    for period in range(shortest_period, longest):
        for phase in range(0, period, max(1, period // 8)):
            grid[f"every {period} from {design.warmup + phase}"] = periodic_alarms(tune, period, phase, design)
    key, score = best_within_budget(grid, tune, design, budget)
    if key is None:
        return "none", score_alarms({}, tune, design)
    return key, score


# ------------------------------------------------------------------------------------------------- downstream

DOWNSTREAM_OFFSETS = (2, 4, 6, 8, 10)


def downstream_queries(
    streams: Sequence[Stream],
    offsets: Sequence[int] = DOWNSTREAM_OFFSETS,
    pseudo_changes: Sequence[int] | None = None,
    seed: int = 0,
) -> list[tuple[int, int, int]]:
    """The downstream measure's queries: ``(stream index, change t, offset j)`` for each change ``t`` of each
    stream and each ``j`` in ``offsets`` while ``t + j`` is still in the new segment; the query recommends event
    ``t + j`` from the events before it. A stream without changes (a control) gets one pseudo-change drawn from
    ``pseudo_changes`` (the spliced streams' change positions), so the cost on controls is measured at the same
    offsets."""
    rng = np.random.default_rng([seed, 53])
    out = []
    for k, s in enumerate(streams):
        changes = list(s.changes) or ([int(rng.choice(pseudo_changes))] if pseudo_changes is not None else [])
        ends = [*changes[1:], len(s.events)] if s.changes else [len(s.events)]
        out += [(k, t, j) for t, end in zip(changes, ends) for j in offsets if t + j < end]
    return out


def next_item_ranks(
    interest: np.ndarray,
    item_vectors: np.ndarray,
    streams: Sequence[Stream],
    queries: Sequence[tuple[int, int, int]],
    row_of: Mapping[str, int],
) -> np.ndarray:
    """0-based rank of each query's target (the item of event ``t + j``) among all catalogue items scored by
    ``interest[q] · item_vectors`` (the evaluation protocol: the stream's earlier items excluded, the target kept,
    ties to the lower catalogue row). ``row_of`` maps an item text to its catalogue row."""
    scores = np.asarray(interest, np.float32) @ np.asarray(item_vectors, np.float32).T  # (n_queries, n_items)
    return query_ranks(scores, streams, queries, row_of)


def query_ranks(
    scores: np.ndarray, streams: Sequence[Stream], queries: Sequence[tuple[int, int, int]], row_of: Mapping[str, int]
) -> np.ndarray:
    """As `next_item_ranks`, from ``(n_queries, n_items)`` scores computed ahead (any scorer's; changed in
    place)."""
    ranks = np.zeros(len(queries), dtype=np.int64)
    for q, (k, t, j) in enumerate(queries):
        events, s = streams[k].events, scores[q]
        target = row_of[events[t + j].item_text]
        kept = s[target]
        s[[row_of[e.item_text] for e in events[: t + j]]] = -np.inf
        s[target] = kept
        ranks[q] = int((s > kept).sum() + (s[:target] == kept).sum())
    return ranks


def ndcg_at(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    """NDCG@k of one relevant item at each 0-based rank."""
    ranks = np.asarray(ranks)
    return np.where(ranks < k, 1 / np.log2(ranks + 2.0), 0.0)


def headroom_recovered(
    ndcg: Mapping[str, np.ndarray], policy: str, baseline: str = "long-only", oracle: str = "oracle reset"
) -> float:
    """``(NDCG_policy - NDCG_baseline) / (NDCG_oracle - NDCG_baseline)`` over all queries (NaN when the oracle does
    not beat the baseline): the share of the oracle's gain that ``policy`` recovers."""
    gain = float(np.mean(ndcg[oracle]) - np.mean(ndcg[baseline]))
    return float(np.mean(ndcg[policy]) - np.mean(ndcg[baseline])) / gain if gain > 0 else math.nan


def headroom_interval(
    ndcg: Mapping[str, np.ndarray],
    queries: Sequence[tuple[int, int, int]],
    policy: str,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """The interval of `headroom_recovered` over streams resampled with replacement (a stream's queries stay
    together, and every strategy sees the same resample: paired)."""
    stream_of = np.asarray([k for k, _, _ in queries])
    ids = np.unique(stream_of)
    members = [np.flatnonzero(stream_of == s) for s in ids]
    rng = np.random.default_rng([seed, 59])
    draws = np.array(
        [
            headroom_recovered({name: v[rows] for name, v in ndcg.items()}, policy)
            for rows in (np.concatenate([members[i] for i in rng.integers(0, len(ids), len(ids))]) for _ in range(n))
        ]
    )
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return math.nan, math.nan
    low, high = np.quantile(draws, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(low), float(high)
