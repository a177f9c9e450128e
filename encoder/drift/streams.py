"""Renewal streams: histories spliced from segments of different people, whose changes no constant can find, and
their scoring at a fixed false-alarm cost. `DriftMonitor.tune_score` builds them from a domain's own users; the drift
benchmark (``benchmarks/drift.py``) builds them per dataset with its own designs.

- **Renewal streams** (`renewal_streams`): a stream of length T ~ U[lo, hi] is cut into segments of length
  ``min_segment + Geometric(mean extra_mean)``, each from another user, starting at a uniformly random offset in
  that user's history, its timestamps shifted to continue the previous segment. The geometric part makes a change
  equally likely at every event once the minimum has passed, so the position of an event says (almost) nothing
  about whether a change is near. Each change records its magnitude: the Jensen-Shannon divergence of the category
  mix of the ``magnitude_window`` events before and after it.
- **Controls**: as many unspliced windows of one user, with T from the same distribution, preferably the first
  segment's user's own events from another offset, so false alarms are counted on the same users and lengths.

Scoring (`score_alarms`): a hit is the first alarm within ``[t, t + margin]`` of a true change ``t``, one per
change; every other scored alarm on a spliced stream is a false positive, and every scored alarm on a control is
a false alarm, counted per 1,000 scored control events. No event before ``warmup`` is scored.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .events import Event, History


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


def change_magnitude(
    events: Sequence[Event], t: int, window: int, categories: Callable[[Event], Iterable[str]] | None
) -> float:
    """The JS divergence of the category mix of the ``window`` events before ``t`` and from ``t`` on."""
    if categories is None:
        return float("nan")
    before = Counter(c for e in events[max(0, t - window) : t] for c in categories(e))
    after = Counter(c for e in events[t : t + window] for c in categories(e))
    return js_divergence(before, after)


def renewal_streams(
    users: Sequence[History],
    n: int,
    design: StreamDesign,
    seed: int = 0,
    categories: Callable[[Event], Iterable[str]] | None = None,
) -> tuple[list[Stream], list[Stream]]:
    """``n`` spliced streams and ``n`` controls from one pool of users (see the module's docstring).

    Every segment of a stream comes from a different user, at a uniform offset among those that fit; a segment
    longer than any remaining user's history is cut to the longest that fits. A control takes T events of the
    first segment's user when they have that many, else of a random user of the pool who has."""
    if len(users) < 2:
        raise ValueError(
            f"renewal streams need at least 2 users with {design.min_user_events}+ events, got {len(users)}"
        )
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
            events += shifted(users[u].events[offset : offset + length], events[-1].timestamp if events else None)
            segments.append((users[u].user_id, offset, length))
        magnitudes = [change_magnitude(events, t, design.magnitude_window, categories) for t in changes]
        spliced.append(Stream(f"s{s}:" + "+".join(seg[0] for seg in segments), events, changes, segments, magnitudes))
        total = int(rng.integers(lo, hi + 1))
        first = next(i for i, h in enumerate(users) if h.user_id == segments[0][0])
        if lengths_of[first] < total:
            fits = np.flatnonzero(lengths_of >= total)
            first = int(fits[rng.integers(len(fits))]) if len(fits) else int(np.argmax(lengths_of))
            total = min(total, int(lengths_of[first]))
        offset = int(rng.integers(0, lengths_of[first] - total + 1))
        controls.append(
            Stream(
                f"c{s}:{users[first].user_id}",
                list(users[first].events[offset : offset + total]),
                segments=[(users[first].user_id, offset, total)],
            )
        )
    return spliced, controls


# ------------------------------------------------------------------------------------------------------ scoring


def scored_events(stream: Stream, design: StreamDesign) -> int:
    """Events of a stream a detector is scored on (those after the warm-up)."""
    return max(0, len(stream.events) - design.warmup)


def match_alarms(
    alarms: Sequence[int], changes: Sequence[int], margin: int, warmup: int, early: int = 0
) -> tuple[list, int]:
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


def outcomes(
    alarms: Mapping[str, Sequence[int]], streams: Sequence[Stream], design: StreamDesign, early: int = 0
) -> list[StreamOutcome]:
    """Per stream (spliced and controls alike) what ``alarms`` (``{stream_id: [event index, ...]}``) achieve;
    ``early`` as in `match_alarms`."""
    out = []
    for s in streams:
        delays, other = match_alarms(alarms.get(s.stream_id, ()), s.changes, design.margin, design.warmup, early)
        out.append(
            StreamOutcome(
                delays,
                list(s.magnitudes),
                0 if s.control else other,
                other if s.control else 0,
                scored_events(s, design) if s.control else 0,
            )
        )
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
    out = {
        "changes": len(delays),
        "hits": hits,
        "recall": recall,
        "precision": precision,
        "f1": f1,
        "false_alarms_per_1000": 1000 * sum(r.false_alarms for r in results) / max(control_events, 1),
        "control_events": control_events,
        "median_delay": float(np.median([d for d in delays if d is not None])) if hits else float("nan"),
    }
    mags = np.array([m for r in results for m in r.magnitudes], dtype=float)
    if by_magnitude and len(mags) and not np.isnan(mags).all():
        found = np.array([d is not None for d in delays])
        band = np.digitize(mags, magnitude_terciles(mags))  # 0 low, 1 middle, 2 high (NaN: 3, left out)
        out["recall_by_magnitude"] = {
            name: float(found[band == k].mean()) if (band == k).any() else float("nan")
            for k, name in enumerate(("low", "middle", "high"))
        }
    return out


def magnitude_terciles(magnitudes: Iterable[float]) -> list[float]:
    """The two cut points between low, middle and high magnitude changes."""
    mags = np.asarray(list(magnitudes), dtype=float)
    mags = mags[~np.isnan(mags)]
    return np.quantile(mags, [1 / 3, 2 / 3]).tolist() if len(mags) else [math.nan, math.nan]


def score_alarms(
    alarms: Mapping[str, Sequence[int]], streams: Sequence[Stream], design: StreamDesign, early: int = 0
) -> dict:
    """`summarise` of `outcomes`: how ``alarms`` do on ``streams`` (spliced and controls)."""
    return summarise(outcomes(alarms, streams, design, early))
