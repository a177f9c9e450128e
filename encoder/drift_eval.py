"""Measuring a drift detector honestly: streams whose changes no constant can find, and a scorer at a fixed cost.

This is the stream builder and scorer of the drift benchmark (``benchmarks/drift.py``, design in the project's
``DRIFT_BENCHMARK.md``), usable on any card's histories:

- **Renewal streams** (`renewal_streams`): a stream of length T ~ U[lo, hi] is cut into segments of length
  ``min_segment + Geometric(mean extra_mean)``, each from another user, starting at a uniformly random offset in
  that user's history, its timestamps shifted to continue the previous segment. The geometric part makes a change
  equally likely at every event once the minimum has passed, so the position of an event says (almost) nothing
  about whether a change is near. Each change records its magnitude: the Jensen-Shannon divergence of the category
  mix of the ``magnitude_window`` events before and after it.
- **Controls**: as many unspliced windows of one user, with T from the same distribution, preferably the first
  segment's user's own events from another offset, so false alarms are counted on the same users and lengths.
- **Users** are split into disjoint tune / calibrate / evaluate pools (`split_users`); no event before
  ``warmup`` is scored.

Scoring (`score_alarms`): a hit is the first alarm within ``[t, t + margin]`` of a true change ``t``, one per
change; every other scored alarm on a spliced stream is a false positive, and every scored alarm on a control is
a false alarm, counted per 1,000 scored control events (the budget a detector is tuned to). `event_scores` turns
a detector's continuous score into event-level ROC-AUC and average precision (positive: an event in
``[t, t + margin]``); `bootstrap` gives 95 % intervals over streams, paired across detectors.

Downstream (``benchmarks/drift_downstream.py``): `downstream_queries` asks, at ``j`` events after each change, for
the next event of the new segment; `next_item_ranks` ranks it over the whole catalogue by an interest vector (the
evaluation protocol); `headroom_recovered` is the share of an oracle reset's NDCG@10 gain over long-term interest
that a policy recovers, with `headroom_interval` over streams.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .drift_events import Event, History

SPLITS = ("tune", "calibrate", "evaluate")


@dataclass(frozen=True)
class StreamDesign:
    """How renewal streams are built and scored (`DRIFT_BENCHMARK.md`)."""

    length: tuple[int, int]  # T ~ U[lo, hi], both included
    min_segment: int  # every segment has at least this many events ...
    extra_mean: float  # ... plus a geometric number (0, 1, 2, ...) with this mean
    warmup: int  # events at a stream's start that no detector is scored on
    margin: int  # M: an alarm within [t, t + M] of a change t detects it
    min_user_events: int  # the user pool: users with at least this many events
    magnitude_window: int = 20  # events either side of a change whose category mixes give its magnitude

    def __post_init__(self):
        lo, hi = self.length
        if not 0 < lo <= hi or self.min_segment < 1 or self.extra_mean < 0 or self.margin < 0 or self.warmup < 0:
            raise ValueError(f"not a stream design: {self}")


DESIGNS = {  # P1 renewal splicing (MovieLens), P2 short renewal (Amazon)
    "movielens-1m": StreamDesign((100, 300), 20, 40, warmup=20, margin=8, min_user_events=100),
    "movielens-100k": StreamDesign((80, 200), 20, 40, warmup=20, margin=8, min_user_events=60),
    "amazon-beauty": StreamDesign((30, 60), 8, 12, warmup=8, margin=5, min_user_events=20, magnitude_window=8),
    "amazon-office": StreamDesign((24, 40), 8, 10, warmup=8, margin=5, min_user_events=20, magnitude_window=8),
}


@dataclass
class Stream:
    """One evaluation stream: its events, the indices where a new segment (another user) starts, and where each
    segment came from (user id, offset in their history, events taken)."""

    stream_id: str
    events: list[Event]
    changes: list[int] = field(default_factory=list)
    segments: list[tuple[str, int, int]] = field(default_factory=list)
    magnitudes: list[float] = field(default_factory=list)  # one per change (NaN without categories)

    @property
    def control(self) -> bool:
        return not self.changes

    def history(self) -> History:
        return History(self.stream_id, self.events)


def split_users(histories: Sequence[History], design: StreamDesign, seed: int = 0,
                fractions: Sequence[float] = (1 / 3, 1 / 3, 1 / 3)) -> dict[str, list[History]]:
    """The users with at least ``design.min_user_events`` events, shuffled by ``seed`` and cut into disjoint
    tune / calibrate / evaluate pools in the given proportions."""
    pool = [h for h in histories if len(h.events) >= design.min_user_events]
    order = np.random.default_rng([seed, 11]).permutation(len(pool))
    cuts = np.round(np.cumsum([0, *fractions]) / sum(fractions) * len(pool)).astype(int)
    return {name: [pool[i] for i in order[cuts[k]:cuts[k + 1]]] for k, name in enumerate(SPLITS)}


def shifted(events: Sequence[Event], after: int | None) -> list[Event]:
    """``events`` with their timestamps moved to start one second after ``after`` (spacing kept)."""
    if after is None or not events:
        return list(events)
    start = events[0].timestamp
    return [Event(e.text, e.item_text, after + 1 + e.timestamp - start) for e in events]


def segment_lengths(total: int, design: StreamDesign, rng: np.random.Generator) -> list[int]:
    """Lengths of a stream's segments: ``min_segment + Geometric(mean extra_mean)`` each, the last cut at
    ``total`` (as the design says: so the last change may fall near the end, where fewer than ``margin`` events
    follow it; every detector has the same handicap there)."""
    p = 1.0 / (1.0 + design.extra_mean)
    lengths, used = [], 0
    while used < total:
        n = design.min_segment + int(rng.geometric(p)) - 1
        lengths.append(min(n, total - used))
        used += lengths[-1]
    return lengths


def js_divergence(a: Counter, b: Counter) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two category count mixes; NaN if either is empty."""
    keys = sorted(set(a) | set(b))
    p = np.array([a.get(k, 0) for k in keys], dtype=float)
    q = np.array([b.get(k, 0) for k in keys], dtype=float)
    if p.sum() == 0 or q.sum() == 0:
        return float("nan")
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(x, y):
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / y[nz])))

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def change_magnitude(events: Sequence[Event], t: int, window: int,
                     categories: Callable[[Event], Iterable[str]] | None) -> float:
    """The JS divergence of the category mix of the ``window`` events before ``t`` and from ``t`` on."""
    if categories is None:
        return float("nan")
    before = Counter(c for e in events[max(0, t - window):t] for c in categories(e))
    after = Counter(c for e in events[t:t + window] for c in categories(e))
    return js_divergence(before, after)


def renewal_streams(users: Sequence[History], n: int, design: StreamDesign, seed: int = 0,
                    categories: Callable[[Event], Iterable[str]] | None = None) -> tuple[list[Stream], list[Stream]]:
    """``n`` spliced streams and ``n`` controls from one pool of users (see the module's docstring).

    Every segment of a stream comes from a different user, at a uniform offset among those that fit; a segment
    longer than any remaining user's history is cut to the longest that fits. A control takes T events of the
    first segment's user when they have that many, else of a random user of the pool who has."""
    if len(users) < 2:
        raise ValueError(f"renewal streams need at least 2 users with {design.min_user_events}+ events, "
                         f"got {len(users)}")
    rng = np.random.default_rng([seed, 23])
    lengths_of = np.array([len(h.events) for h in users])
    lo, hi = design.length
    spliced, controls = [], []
    for s in range(n):
        total = int(rng.integers(lo, hi + 1))
        events, changes, segments, taken = [], [], [], set()
        for length in segment_lengths(total, design, rng):
            fits = [i for i in np.flatnonzero(lengths_of >= length) if i not in taken]
            if not fits:  # a long geometric draw: the longest remaining history
                rest = [i for i in range(len(users)) if i not in taken]
                fits = [max(rest, key=lambda i: lengths_of[i])]
                length = int(lengths_of[fits[0]])
            u = int(fits[int(rng.integers(len(fits)))])
            taken.add(u)
            offset = int(rng.integers(0, lengths_of[u] - length + 1))
            if events:
                changes.append(len(events))
            events += shifted(users[u].events[offset:offset + length], events[-1].timestamp if events else None)
            segments.append((users[u].user_id, offset, length))
        magnitudes = [change_magnitude(events, t, design.magnitude_window, categories) for t in changes]
        spliced.append(Stream(f"s{s}:" + "+".join(seg[0] for seg in segments), events, changes, segments,
                              magnitudes))
        total = int(rng.integers(lo, hi + 1))
        first = next(i for i, h in enumerate(users) if h.user_id == segments[0][0])
        if lengths_of[first] < total:
            fits = np.flatnonzero(lengths_of >= total)
            first = int(fits[rng.integers(len(fits))]) if len(fits) else int(np.argmax(lengths_of))
            total = min(total, int(lengths_of[first]))
        offset = int(rng.integers(0, lengths_of[first] - total + 1))
        controls.append(Stream(f"c{s}:{users[first].user_id}", list(users[first].events[offset:offset + total]),
                               segments=[(users[first].user_id, offset, total)]))
    return spliced, controls


# ------------------------------------------------------------------------------------------------------ scoring


def scored_events(stream: Stream, design: StreamDesign) -> int:
    """Events of a stream a detector is scored on (those after the warm-up)."""
    return max(0, len(stream.events) - design.warmup)


def match_alarms(alarms: Sequence[int], changes: Sequence[int], margin: int, warmup: int,
                 early: int = 0) -> tuple[list, int]:
    """For each change, the delay of the first alarm within ``[t - early, t + margin]`` (None when missed; an
    alarm detects one change at most; ``early`` > 0 only for offline detectors, which may place a change before
    it), and the number of other scored alarms (false positives)."""
    alarms = sorted(a for a in alarms if a >= warmup)
    delays, used = [], set()
    for t in changes:
        hit = next((a for a in alarms if t - early <= a <= t + margin and a not in used), None)
        delays.append(None if hit is None else hit - t)
        if hit is not None:
            used.add(hit)
    return delays, len(alarms) - len(used)


@dataclass
class StreamOutcome:
    """One stream's part of a score, kept per stream so that `bootstrap` can resample streams."""

    delays: list  # per change: events from the change to its detecting alarm, None when missed
    magnitudes: list[float]
    false_positives: int  # scored alarms on a spliced stream that detect nothing
    false_alarms: int  # scored alarms on a control stream
    control_events: int  # scored events of a control stream


def outcomes(alarms: Mapping[str, Sequence[int]], streams: Sequence[Stream], design: StreamDesign,
             early: int = 0) -> list[StreamOutcome]:
    """Per stream (spliced and controls alike) what ``alarms`` (``{stream_id: [event index, ...]}``) achieve;
    ``early`` as in `match_alarms`."""
    out = []
    for s in streams:
        delays, other = match_alarms(alarms.get(s.stream_id, ()), s.changes, design.margin, design.warmup, early)
        out.append(StreamOutcome(delays, list(s.magnitudes), 0 if s.control else other, other if s.control else 0,
                                 scored_events(s, design) if s.control else 0))
    return out


def summarise(results: Sequence[StreamOutcome], by_magnitude: bool = True) -> dict:
    """Recall, precision, F1, false alarms per 1,000 scored control events, median delay, and (``by_magnitude``)
    recall by magnitude tercile, the terciles cut at the changes' own magnitudes."""
    delays = [d for r in results for d in r.delays]
    hits = sum(d is not None for d in delays)
    false_pos = sum(r.false_positives for r in results)
    control_events = sum(r.control_events for r in results)
    recall = hits / len(delays) if delays else float("nan")
    precision = hits / (hits + false_pos) if hits + false_pos else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    out = {"changes": len(delays), "hits": hits, "recall": recall, "precision": precision, "f1": f1,
           "false_alarms_per_1000": 1000 * sum(r.false_alarms for r in results) / max(control_events, 1),
           "control_events": control_events,
           "median_delay": float(np.median([d for d in delays if d is not None])) if hits else float("nan")}
    mags = np.array([m for r in results for m in r.magnitudes], dtype=float)
    if by_magnitude and len(mags) and not np.isnan(mags).all():
        found = np.array([d is not None for d in delays])
        band = np.digitize(mags, magnitude_terciles(mags))  # 0 low, 1 middle, 2 high (NaN: 3, left out)
        out["recall_by_magnitude"] = {name: float(found[band == k].mean()) if (band == k).any() else float("nan")
                                      for k, name in enumerate(("low", "middle", "high"))}
    return out


def magnitude_terciles(magnitudes: Iterable[float]) -> list[float]:
    """The two cut points between low, middle and high magnitude changes."""
    mags = np.asarray(list(magnitudes), dtype=float)
    mags = mags[~np.isnan(mags)]
    return np.quantile(mags, [1 / 3, 2 / 3]).tolist() if len(mags) else [math.nan, math.nan]


def score_alarms(alarms: Mapping[str, Sequence[int]], streams: Sequence[Stream], design: StreamDesign,
                 early: int = 0) -> dict:
    """`summarise` of `outcomes`: how ``alarms`` do on ``streams`` (spliced and controls)."""
    return summarise(outcomes(alarms, streams, design, early))


def bootstrap(per_detector: Mapping[str, Sequence[StreamOutcome]], metric: str = "recall", reference: str | None = None,
              n: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
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
            out[k].update(ratio=value[k] / value[reference] if value[reference] else float("nan"),
                          ratio_low=float(lo), ratio_high=float(hi))
    return out


def event_labels(stream: Stream, design: StreamDesign) -> np.ndarray:
    """Per scored event (index ≥ warm-up): 1 if it lies in ``[t, t + margin]`` of a change t, else 0."""
    labels = np.zeros(len(stream.events), dtype=np.int8)
    for t in stream.changes:
        labels[t:t + design.margin + 1] = 1
    return labels[design.warmup:]


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
        s.append(values[design.warmup:])
    y, s = np.concatenate(y), np.concatenate(s)
    s = np.where(np.isnan(s), np.nanmin(s) - 1 if (~np.isnan(s)).any() else 0.0, s)
    if y.min() == y.max():
        return {"auc": float("nan"), "ap": float("nan"), "base_rate": float(y.mean()), "events": len(y)}
    return {"auc": float(roc_auc_score(y, s)), "ap": float(average_precision_score(y, s)),
            "base_rate": float(y.mean()), "events": len(y)}


def forward_fill(indices: Sequence[int], values: Sequence[float], n_events: int) -> np.ndarray:
    """A per-event score series from scores given at some event indices: each event gets the latest score at or
    before it (NaN before the first)."""
    out = np.full(n_events, np.nan)
    for i, v in zip(indices, values):
        out[int(i):] = v
    return out


def threshold_alarms(series: Mapping[str, np.ndarray], threshold: float, refractory: int,
                     warmup: int = 0) -> dict[str, list[int]]:
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


def calibrate_threshold(series: Mapping[str, np.ndarray], controls: Sequence[Stream], design: StreamDesign,
                        budget: float, refractory: int) -> float:
    """The lowest threshold of a continuous score whose alarms on the ``controls`` stay within ``budget`` false
    alarms per 1,000 scored events (a binary search over the scores' values: fewer alarms as it rises)."""
    values = np.unique(np.concatenate([np.asarray(series[c.stream_id], dtype=float)[design.warmup:]
                                       for c in controls]))
    values = values[np.isfinite(values)]
    if not len(values):
        return float("inf")
    events = sum(scored_events(c, design) for c in controls)

    def rate(threshold: float) -> float:
        alarms = threshold_alarms({c.stream_id: series[c.stream_id] for c in controls}, threshold, refractory,
                                  design.warmup)
        return 1000 * sum(map(len, alarms.values())) / max(events, 1)

    lo, hi = 0, len(values)  # values[hi:] (and above the maximum) fit the budget
    while lo < hi:
        mid = (lo + hi) // 2
        if rate(values[mid]) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return float(values[lo]) if lo < len(values) else float(np.nextafter(values[-1], np.inf))


def best_within_budget(candidates: Mapping[str, Mapping[str, Sequence[int]]], streams: Sequence[Stream],
                       design: StreamDesign, budget: float) -> tuple[str | None, dict | None]:
    """Among alarm sets (``{setting: {stream_id: [alarms]}}``, e.g. a detector's parameter grid on the tuning
    streams), the highest-recall one whose false-alarm rate is within ``budget`` per 1,000 control events
    (ties: fewer false alarms). Returns its key and score, or (None, None) if none fits."""
    best = (None, None)
    for key, alarms in candidates.items():
        score = score_alarms(alarms, streams, design)
        if score["false_alarms_per_1000"] > budget:
            continue
        if best[1] is None or (score["recall"], -score["false_alarms_per_1000"]) > \
                (best[1]["recall"], -best[1]["false_alarms_per_1000"]):
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
    return {s.stream_id: (design.warmup + np.flatnonzero(rng.random(scored_events(s, design)) < per_1000 / 1000))
            .tolist() for s in streams}


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


def downstream_queries(streams: Sequence[Stream], offsets: Sequence[int] = DOWNSTREAM_OFFSETS,
                       pseudo_changes: Sequence[int] | None = None, seed: int = 0) -> list[tuple[int, int, int]]:
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


def next_item_ranks(interest: np.ndarray, item_vectors: np.ndarray, streams: Sequence[Stream],
                    queries: Sequence[tuple[int, int, int]], row_of: Mapping[str, int]) -> np.ndarray:
    """0-based rank of each query's target (the item of event ``t + j``) among all catalogue items scored by
    ``interest[q] · item_vectors`` (the evaluation protocol: the stream's earlier items excluded, the target kept,
    ties to the lower catalogue row). ``row_of`` maps an item text to its catalogue row."""
    scores = np.asarray(interest, np.float32) @ np.asarray(item_vectors, np.float32).T  # (n_queries, n_items)
    return query_ranks(scores, streams, queries, row_of)


def query_ranks(scores: np.ndarray, streams: Sequence[Stream], queries: Sequence[tuple[int, int, int]],
                row_of: Mapping[str, int]) -> np.ndarray:
    """As `next_item_ranks`, from ``(n_queries, n_items)`` scores computed ahead (any scorer's; changed in
    place)."""
    ranks = np.zeros(len(queries), dtype=np.int64)
    for q, (k, t, j) in enumerate(queries):
        events, s = streams[k].events, scores[q]
        target = row_of[events[t + j].item_text]
        kept = s[target]
        s[[row_of[e.item_text] for e in events[:t + j]]] = -np.inf
        s[target] = kept
        ranks[q] = int((s > kept).sum() + (s[:target] == kept).sum())
    return ranks


def ndcg_at(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    """NDCG@k of one relevant item at each 0-based rank."""
    ranks = np.asarray(ranks)
    return np.where(ranks < k, 1 / np.log2(ranks + 2.0), 0.0)


def headroom_recovered(ndcg: Mapping[str, np.ndarray], policy: str, baseline: str = "long-only",
                       oracle: str = "oracle reset") -> float:
    """``(NDCG_policy - NDCG_baseline) / (NDCG_oracle - NDCG_baseline)`` over all queries (NaN when the oracle does
    not beat the baseline): the share of the oracle's gain that ``policy`` recovers."""
    gain = float(np.mean(ndcg[oracle]) - np.mean(ndcg[baseline]))
    return float(np.mean(ndcg[policy]) - np.mean(ndcg[baseline])) / gain if gain > 0 else math.nan


def headroom_interval(ndcg: Mapping[str, np.ndarray], queries: Sequence[tuple[int, int, int]], policy: str,
                      n: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """The interval of `headroom_recovered` over streams resampled with replacement (a stream's queries stay
    together, and every strategy sees the same resample: paired)."""
    stream_of = np.asarray([k for k, _, _ in queries])
    ids = np.unique(stream_of)
    members = [np.flatnonzero(stream_of == s) for s in ids]
    rng = np.random.default_rng([seed, 59])
    draws = np.array([headroom_recovered({name: v[rows] for name, v in ndcg.items()}, policy)
                      for rows in (np.concatenate([members[i] for i in rng.integers(0, len(ids), len(ids))])
                                   for _ in range(n))])
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return math.nan, math.nan
    low, high = np.quantile(draws, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(low), float(high)
