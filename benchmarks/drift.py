"""Drift detection benchmark, version 2 (design: the project's ``DRIFT_BENCHMARK.md``): renewal streams whose changes
no constant can find, every detector compared at the same cost (false alarms per 1,000 control events).

Streams (`interestbert.encoder.drift.streams`, `drift_eval.py`): P1 renewal splicing on movielens-1m (headline) and
movielens-100k, P2 short renewal on amazon-beauty and amazon-office, synthetic-shop with its recorded switches. Users
are split into disjoint tune / calibrate / evaluate pools; every reported number is on the evaluation streams.

Rows, at each budget (5 and 10 false alarms per 1,000 scored control events):
- none; random alarms at the budget; the best content-free detector (one alarm at a fixed index, or periodic
  alarms, fitted on the tuning streams): together, what the streams' construction gives away;
- a metadata oracle: the Jensen-Shannon divergence of the genre/category mix of the newest events against the ones
  before, its threshold calibrated on the calibration controls (no text model at all; amazon-office has no
  categories);
- river's ADWIN, PageHinkley and KSWIN, each fed the better of two scalar signals built from the packaged
  encoder's item embeddings, the signal and parameters the highest-recall setting within the budget on the tuning
  streams;
- ruptures' KernelCPD, offline (it sees the whole stream, so it may place a change up to M events early), its
  penalty tuned the same way;
- a candidate outside the library: the mean of the newest item vectors against the ones before, thresholded
  with a refractory period (window, lookback and centring picked on the tuning streams);
- ours: `DriftMonitor` in its 0.1 setting (window text against the whole segment), the setting picked on the
  tuning streams from `MONITOR_GRID`, and the default settings when they are neither, each calibrated by
  `DriftMonitor.calibrate` on the calibration controls to the budget; then what `interestbert drift` fits on the
  fly (`DriftMonitor.fit_and_tune`): the same-user projection on the users in no stream of any split, the score's
  form on splices of the tuning pool's histories (unlabelled).

Threshold-free: event-level ROC-AUC and average precision of each continuous score; the recall-vs-false-alarm
curve (PNG). Recall by magnitude tercile, median delay, paired bootstrap intervals of each recall and of its
ratio to the best river detector's. The script checks itself: it fails if its content-free or random row's recall
is above chance by more than its interval.

    python benchmarks/drift.py --data-dir ../shared/data --out benchmarks/results/drift
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import drift_eval as de
import numpy as np
import torch
from common import data_dir_of
from results_io import read_results, write_json

from interestbert.encoder.cards import load_card, load_card_data
from interestbert.encoder.drift import ITEM_WEIGHT, DriftConfig, DriftMonitor, histories_from_verbaliser, switch_points
from interestbert.encoder.errors import InterestBertError
from interestbert.encoder.files import atomic_write_text
from interestbert.encoder.model import DEFAULT_BASE_MODEL, InterestEncoder
from interestbert.encoder.verbalise import Verbaliser

BUDGETS = (5.0, 10.0)
CURVE_BUDGETS = (1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0)


def genres(sep: str):
    return lambda value: [g for g in str(value).split(sep) if g]


def amazon_categories(value) -> list[str]:
    """``'Beauty', 'Skin Care', 'Face', ...`` without the top level every item shares."""
    return [c.strip(" '\"") for c in str(value).split("',")][1:]


@dataclass(frozen=True)
class Dataset:
    generated: bool  # synthetic-shop: its data is generated here, its streams are whole users with recorded switches
    column: str | None  # the items' genre/category column (the magnitude and the metadata oracle)
    parse: object = None


DATASETS = {
    "movielens-1m": Dataset(False, "genres", genres("|")),
    "movielens-100k": Dataset(False, "genres", genres(" ")),
    "amazon-beauty": Dataset(False, "categories", amazon_categories),
    "amazon-office": Dataset(False, None),
    "synthetic-shop": Dataset(True, "category", lambda v: [str(v)]),
}
SYNTHETIC_DESIGN = de.StreamDesign((20, 120), 20, 0, warmup=8, margin=8, min_user_events=20, magnitude_window=8)
RIVER_GRID = {
    "ADWIN": [
        dict(delta=d, clock=1, min_window_length=3, grace_period=5) for d in (0.9, 0.5, 0.2, 0.05, 0.01, 0.002, 1e-4)
    ],
    "PageHinkley": [
        dict(min_instances=5, delta=d, threshold=t, mode="up")
        for d in (0.0, 0.02, 0.05)
        for t in (0.1, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0, 3.0)
    ],
    "KSWIN": [dict(alpha=a, window_size=w, stat_size=w // 3, seed=0) for a in (0.01, 0.001, 1e-4) for w in (15, 30)],
}
RUPTURES_PENALTIES = (1.0, 2.0, 3.0, 5.0, 8.0, 12.0)


# ------------------------------------------------------------------------------------------------------ streams


def load_streams(name: str, data_dir: Path, n: int, seed: int, tokenizer):
    """The design, ``{split: (spliced, controls)}``, the events' category function, the separator, the histories of
    the users in no stream of any split (a learned projection may train on them: fitted on the tuning pool's users
    too, it would flatter every setting picked on the labelled tuning streams), and the tuning pool's histories
    (unlabelled: where our score's form is tuned, as river's parameters are on the labelled tuning streams)."""
    spec = DATASETS[name]
    if spec.generated:
        folder = Path(tempfile.mkdtemp(prefix="drift-bench-shop-"))
        from interestbert.encoder.cards import synthetic

        synthetic.generate(folder, seed=1, n_users=max(9 * n, 900), n_items=1500)
        data = load_card_data(load_card("synthetic-shop"), folder)
    else:
        data = load_card_data(name, data_dir_of(name, data_dir))
    verbaliser = Verbaliser(data, tokenizer, 128)
    histories = histories_from_verbaliser(verbaliser)
    category_of = None
    if spec.column is not None:
        table = dict(zip(data.items["text"], data.items[spec.column]))
        parsed = {text: tuple(spec.parse(value)) for text, value in table.items()}
        category_of = lambda event: parsed.get(event.item_text, ())  # noqa: E731
    if spec.generated:
        design = SYNTHETIC_DESIGN
        splits = synthetic_splits(histories, switch_points(data), n, design, seed, category_of)
    else:
        design = de.DESIGNS[name]
        pools = de.split_users(histories, design, seed)
        splits = {k: de.renewal_streams(pools[k], n, design, seed + i, category_of) for i, k in enumerate(de.SPLITS)}
    seen = {user for group in splits.values() for streams in group for s in streams for user, _, _ in s.segments}
    # the synthetic streams are whole users; a renewal pool's users all stay out (most are in its streams)
    held = seen if spec.generated else {h.user_id for k in de.SPLITS for h in pools[k]}
    outside = [h for h in histories if h.user_id not in held]
    if seen & {h.user_id for h in outside}:
        raise SystemExit(f"benchmark broken on {name}: users of its streams are among those a projection may fit on")
    if spec.generated:  # whole users: the tuning split's
        tuning = {user for streams in splits["tune"] for s in streams for user, _, _ in s.segments}
        pools = {"tune": [h for h in histories if h.user_id in tuning]}
    return design, splits, category_of, verbaliser.separator, outside, pools["tune"]


def synthetic_splits(histories, switches, n, design, seed, category_of):
    """synthetic-shop: users with their recorded switches; controls are other users cut before their first."""
    order = np.random.default_rng([seed, 5]).permutation(len(histories))
    users = [histories[i] for i in order]
    out = {}
    for k, split in enumerate(de.SPLITS):
        block = users[k * 3 * n : (k + 1) * 3 * n]
        spliced = []
        for h in block[:n]:
            changes = [t for t in switches.get(h.user_id, []) if 0 < t < len(h.events)]
            spliced.append(
                de.Stream(
                    f"s:{h.user_id}",
                    list(h.events),
                    changes,
                    [(h.user_id, 0, len(h.events))],
                    [de.change_magnitude(h.events, t, design.magnitude_window, category_of) for t in changes],
                )
            )
        controls = []
        for h in block[n:]:
            cut = min([*switches.get(h.user_id, []), len(h.events)])
            if cut >= design.warmup + 10:
                controls.append(de.Stream(f"c:{h.user_id}", list(h.events[:cut]), segments=[(h.user_id, 0, cut)]))
            if len(controls) == n:
                break
        out[split] = (spliced, controls)
    return out


# ------------------------------------------------------------------------------------------- scalar signals


class ItemVectors:
    """Item text -> unit vector from the encoder, each distinct text encoded once."""

    def __init__(self, encode, streams):
        texts = sorted({e.item_text for s in streams for e in s.events})
        self.index = {t: i for i, t in enumerate(texts)}
        self.vectors = np.asarray(encode(texts), np.float32)

    def of(self, stream) -> np.ndarray:
        return self.vectors[[self.index[e.item_text] for e in stream.events]]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def item_signal(x: np.ndarray, lookback: int, window: int = 1) -> np.ndarray:
    """Per event i: 1 - cos(mean of the ``window`` newest item vectors, mean of the ``lookback`` before them); NaN
    until both exist. ``window`` 1 is the item's own distance, 4 the item-vector analogue of our window."""
    n = len(x)
    out = np.full(n, np.nan)
    csum = np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x.astype(np.float64), axis=0)])
    for i in range(window + 1, n):
        lo = max(0, i - window + 1 - lookback)
        new = csum[i + 1] - csum[i - window + 1]
        old = csum[i - window + 1] - csum[lo]
        out[i] = 1.0 - float(unit(new) @ unit(old))
    return out


SIGNALS = {"item vs last L": dict(window=1), "mean of 4 items vs last L": dict(window=4)}
CANDIDATE_GRID = [
    dict(window=w, lookback=lb, centre=c) for w in (2, 4, 6, 8) for lb in (8, 20, 40) for c in (False, True)
]


def centred(values: np.ndarray, lag: int) -> np.ndarray:
    """``values`` minus the mean of the stream's own values up to ``lag`` events before (its usual level)."""
    finite = np.where(np.isnan(values), 0.0, values)
    count = np.cumsum(~np.isnan(values))
    total = np.cumsum(finite)
    out = np.full(len(values), np.nan)
    for i in range(lag + 3, len(values)):
        k = count[i - lag]
        if k >= 3:
            out[i] = values[i] - total[i - lag] / k
    return out


def candidate_series(x: np.ndarray, window: int, lookback: int, centre: bool) -> np.ndarray:
    """A per-event score from item vectors alone: the newest ``window`` items' mean against the ``lookback``
    before, optionally centred on the stream's own level."""
    values = item_signal(x, lookback, window)
    return centred(values, window) if centre else values


def river_alarms(detector: str, params: dict, series: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """A river detector fed a scalar series event by event (NaN skipped), restarted after each detection."""
    import river.drift

    cls = getattr(river.drift, detector)
    out = {}
    for sid, values in series.items():
        det, found = cls(**params), []
        for i, v in enumerate(values):
            if v != v:
                continue
            det.update(float(v))
            if det.drift_detected:
                found.append(i)
                det = cls(**params)
        out[sid] = found
    return out


def ruptures_alarms(penalty: float, vectors: dict[str, np.ndarray]) -> dict[str, list[int]]:
    import ruptures

    out = {}
    for sid, x in vectors.items():
        if len(x) < 8:
            out[sid] = []
            continue
        bkps = ruptures.KernelCPD(kernel="cosine", min_size=4).fit(x).predict(pen=penalty)
        out[sid] = [b for b in bkps if b < len(x)]
    return out


def oracle_series(stream, category_of, recent: int, before: int) -> np.ndarray:
    """Per event: JS divergence of the category mix of the ``recent`` newest events against the ``before`` ones
    preceding them (the metadata oracle; it reads the genres, not the text)."""
    cats = [category_of(e) for e in stream.events]
    out = np.full(len(cats), np.nan)
    for i in range(recent + 2, len(cats)):
        new = Counter(c for cs in cats[i - recent + 1 : i + 1] for c in cs)
        old = Counter(c for cs in cats[max(0, i - recent + 1 - before) : i - recent + 1] for c in cs)
        out[i] = de.js_divergence(old, new)
    return out


# -------------------------------------------------------------------------------------------- our detector


class MemoEncode:
    """The encoder's ``encode`` with a memo: every distinct window text is encoded once across all scans."""

    def __init__(self, encoder, precision: str):
        self.encoder, self.precision, self.memo = encoder, precision, {}

    def __call__(self, texts, batch_size=128, show_progress_bar=False):
        new = list(dict.fromkeys(t for t in texts if t not in self.memo))
        if new:
            vectors = self.encoder.encode(
                new, batch_size=batch_size, show_progress_bar=show_progress_bar, precision=self.precision
            )
            self.memo.update(zip(new, np.asarray(vectors, np.float32)))
        return np.stack([self.memo[t] for t in texts]) if texts else np.zeros((0, 0), np.float32)


def monitor_alarms(monitor: DriftMonitor, streams) -> dict[str, list[int]]:
    return {r.user_id: [e.index for e in r.events] for r in monitor.scan_many([s.history() for s in streams])}


def monitor_series(monitor: DriftMonitor, streams) -> dict[str, np.ndarray]:
    """The monitor's score per event without resets (threshold at infinity), forward-filled between strides."""
    saved = monitor.config.threshold
    monitor.config.threshold = math.inf
    try:
        results = monitor.scan_many([s.history() for s in streams])
    finally:
        monitor.config.threshold = saved
    return {r.user_id: de.forward_fill(r.indices, r.scores, r.n_events) for r in results}


PREVIOUS = DriftConfig(window=4, stride=2, centre=True, reference_windows=None, window_vector="text")
PREVIOUS_LABEL = "interestbert DriftMonitor: window text vs whole segment (0.1 default)"
MONITOR_GRID = [
    DriftConfig(window=w, stride=2, centre=c, reference_windows=k, window_vector="mean")
    for w in (4, 6)
    for k in (5, 10)
    for c in (True, False)
]
TUNED_LABEL = "interestbert DriftMonitor: mean of event vectors vs sliding reference (picked on tune)"
PROJECTED_GRID = [
    DriftConfig(window=4, stride=2, centre=c, reference_windows=k) for k in (5, 10, None) for c in (True, False)
]  # the score's form under the projection (the default's window and stride)
PROJECTED_TUNED_LABEL = "interestbert DriftMonitor + same-user projection, score's form picked on tune"
DEFAULT_LABEL = "interestbert DriftMonitor (default settings)"
SCORE_TUNED_LABEL = (
    "interestbert DriftMonitor (default settings), score's form picked on splices of the tuning pool's histories"
)
ITEMS_LABEL = (
    "interestbert DriftMonitor + same-user projection with the items' own vectors where held-out splices "
    "favour them, then the score's form (fit_and_tune(item_weight=3))"
)
PROJECTED_LABEL = (
    "interestbert DriftMonitor (default settings) + same-user projection (fitted on users in no "
    "stream), then the score's form (on the tuning pool's histories)"
)
SETTINGS = ("window", "stride", "centre", "reference_windows", "window_vector")


def describe(config: DriftConfig, as_dict: bool = False):
    values = {k: getattr(config, k) for k in SETTINGS}
    return values if as_dict else ", ".join(f"{k}={v}" for k, v in values.items())


def same_settings(a: DriftConfig, b: DriftConfig) -> bool:
    return describe(a) == describe(b)


# ------------------------------------------------------------------------------------------------- one dataset


def chance_recall(budget: float, margin: int) -> float:
    """Recall of alarms at random positions at ``budget`` per 1,000 events: P(one in the M + 1 events after)."""
    return 1 - (1 - budget / 1000) ** (margin + 1)


def content_free_alarms(key: str, streams, design) -> dict[str, list[int]]:
    if key == "none":
        return {}
    words = key.split()
    if words[0] == "fixed":
        return de.fixed_alarms(streams, int(words[1]))
    return de.periodic_alarms(streams, int(words[1]), int(words[3]) - design.warmup, design)


def tuned_rows(grid: dict[str, dict], run_on_eval, tune_streams, design, budgets) -> dict:
    """For each budget, the grid's highest-recall setting within it on the tuning streams, run on evaluation."""
    chosen, cache = {}, {}
    for b in budgets:
        key, score = de.best_within_budget(grid, tune_streams, design, b)
        if key is not None and key not in cache:
            cache[key] = run_on_eval(key)
        chosen[b] = (key, score, cache.get(key, {}))
    return chosen


def run_dataset(name: str, data_dir: Path, n: int, seed: int, encoder, precision: str, curve: bool) -> dict:
    timings = {}
    clock = time.perf_counter()
    design, splits, category_of, separator, outside, tuning_pool = load_streams(
        name, data_dir, n, seed, encoder.tokenizer
    )
    (tune_s, tune_c), (cal_s, cal_c), (ev_s, ev_c) = (splits[k] for k in de.SPLITS)
    tune, evaluate = tune_s + tune_c, ev_s + ev_c
    timings["streams"] = time.perf_counter() - clock
    encode = MemoEncode(encoder, precision)
    items = ItemVectors(encode, tune + cal_c + evaluate)
    lookback = design.magnitude_window
    signals = {
        sig: {s.stream_id: item_signal(items.of(s), lookback, **kw) for s in tune + evaluate}
        for sig, kw in SIGNALS.items()
    }
    rows: dict[str, dict] = {}  # row -> {budget: {"alarms", "params", ...}}
    scores: dict[str, dict[str, np.ndarray]] = {}  # continuous scores for AUC/AP

    def put(row, budget, alarms, params, early=0):
        rows.setdefault(row, {})[budget] = {"alarms": alarms, "params": params, "early": early}

    budgets = sorted(set(BUDGETS) | (set(CURVE_BUDGETS) if curve else set()))
    for b in budgets:
        put("none", b, {}, {})
        put("random at the budget", b, de.random_alarms(evaluate, b, design, seed), {"per_1000": b})
        key, _ = de.best_content_free(tune, design, b)
        put("best content-free (fitted on tune)", b, content_free_alarms(key, evaluate, design), {"setting": key})
    scores["position only (event index)"] = {s.stream_id: np.arange(len(s.events), dtype=float) for s in evaluate}

    clock = time.perf_counter()
    if category_of is not None:
        series = {
            s.stream_id: oracle_series(s, category_of, 4, 16 if design.margin == 8 else 8) for s in cal_c + evaluate
        }
        scores["metadata oracle (category JS)"] = {s.stream_id: series[s.stream_id] for s in evaluate}
        for b in budgets:
            threshold = de.calibrate_threshold(series, cal_c, design, b, design.margin)
            put(
                "metadata oracle (category JS, calibrated)",
                b,
                de.threshold_alarms(
                    {s.stream_id: series[s.stream_id] for s in evaluate}, threshold, design.margin, design.warmup
                ),
                {"threshold": round(threshold, 4)},
            )
    timings["oracle"] = time.perf_counter() - clock

    clock = time.perf_counter()
    for sig in SIGNALS:
        scores[f"river signal: {sig}"] = {s.stream_id: signals[sig][s.stream_id] for s in evaluate}
    for detector, grid in RIVER_GRID.items():
        settings = {
            (sig, i): river_alarms(detector, p, {s.stream_id: signals[sig][s.stream_id] for s in tune})
            for sig in SIGNALS
            for i, p in enumerate(grid)
        }
        run = lambda key, d=detector, g=grid: river_alarms(  # noqa: E731
            d, g[key[1]], {s.stream_id: signals[key[0]][s.stream_id] for s in evaluate}
        )
        for b, (key, _, alarms) in tuned_rows(settings, run, tune, design, budgets).items():
            params = {"signal": None, "params": None} if key is None else {"signal": key[0], **grid[key[1]]}
            put(f"river {detector}", b, alarms if key else {}, params)
    timings["river"] = time.perf_counter() - clock

    clock = time.perf_counter()
    vectors = {s.stream_id: items.of(s) for s in tune + cal_c + evaluate}
    settings = {p: ruptures_alarms(p, {s.stream_id: vectors[s.stream_id] for s in tune}) for p in RUPTURES_PENALTIES}
    tuned = tuned_rows(
        {p: a for p, a in settings.items()},
        lambda p: ruptures_alarms(p, {s.stream_id: vectors[s.stream_id] for s in evaluate}),
        tune,
        design,
        budgets,
    )
    for b, (key, _, alarms) in tuned.items():
        put(
            "ruptures KernelCPD (offline, may be M early)",
            b,
            alarms if key else {},
            {"kernel": "cosine", "min_size": 4, "pen": key},
            early=design.margin,
        )
    timings["ruptures"] = time.perf_counter() - clock

    clock = time.perf_counter()
    tune_ids, cal_ids, ev_ids = ([s.stream_id for s in g] for g in (tune, cal_c, evaluate))
    tuning = {}
    for k, spec in enumerate(CANDIDATE_GRID):
        series = {sid: candidate_series(vectors[sid], **spec) for sid in tune_ids}
        threshold = de.calibrate_threshold(series, tune_c, design, BUDGETS[0], design.margin)
        alarms = de.threshold_alarms(series, threshold, design.margin, design.warmup)
        tuning[k] = de.score_alarms(alarms, tune, design)["recall"]
    spec = CANDIDATE_GRID[max(tuning, key=tuning.get)]
    label = "candidate: item-vector window vs lookback (tuned, calibrated)"
    series = {sid: candidate_series(vectors[sid], **spec) for sid in cal_ids + ev_ids}
    scores[label] = {sid: series[sid] for sid in ev_ids}
    for b in budgets:
        threshold = de.calibrate_threshold(series, cal_c, design, b, design.margin)
        put(
            label,
            b,
            de.threshold_alarms({sid: series[sid] for sid in ev_ids}, threshold, design.margin, design.warmup),
            {**spec, "threshold": round(threshold, 4)},
        )
    timings["candidate"] = time.perf_counter() - clock

    clock = time.perf_counter()
    cal_h = [s.history() for s in cal_c]
    monitors = {PREVIOUS_LABEL: DriftMonitor(encode, PREVIOUS, separator=separator, batch_size=128)}

    def pick_on_tune(grid, projected=None) -> tuple[DriftMonitor, dict]:
        """The grid's monitor (with ``projected``'s projection) with the highest recall on the tuning streams, each
        calibrated on the calibration controls at the headline budget (``{settings: tuning recall}`` beside it)."""
        tuning = {}
        for config in grid:
            monitor = DriftMonitor(encode, replace(config), separator=separator, batch_size=128)
            if projected is not None:
                monitor.set_projection(projected.projection, projected.item_vectors)
                monitor.config.projection = projected.config.projection
            try:
                monitor.calibrate(cal_h, BUDGETS[0])
            except InterestBertError as err:
                raise SystemExit(f"{name}: {err}") from None
            tuning[describe(config)] = (de.score_alarms(monitor_alarms(monitor, tune), tune, design)["recall"], monitor)
        picked = max(tuning, key=lambda k: tuning[k][0])
        return tuning[picked][1], {k: round(v[0], 4) for k, v in tuning.items()}

    tuning = {}
    monitors[TUNED_LABEL], tuning[TUNED_LABEL] = pick_on_tune(MONITOR_GRID)
    if not any(same_settings(m.config, DriftConfig()) for m in monitors.values()):
        monitors[DEFAULT_LABEL] = DriftMonitor(encode, DriftConfig(), separator=separator, batch_size=128)
    timings["ours tuning"] = time.perf_counter() - clock
    clock = time.perf_counter()
    score_tuned = DriftMonitor(encode, DriftConfig(), separator=separator, batch_size=128)
    score_tuning = {"no projection": score_tuned.tune_score(tuning_pool, BUDGETS[0], seed=seed)}
    monitors[SCORE_TUNED_LABEL] = score_tuned
    timings["score tuning"] = time.perf_counter() - clock
    clock = time.perf_counter()
    # `fit_and_tune` as `interestbert drift` runs it, on the users the benchmark leaves it: the projection on those in
    # no stream, the score's form on splices of the tuning pool's histories (unlabelled; river's parameters are picked
    # on that pool's labelled streams), a population like the evaluated one (the users in no stream are shorter)
    fit_on, tune_on = outside, tuning_pool
    projected = DriftMonitor(encode, DriftConfig(), separator=separator, batch_size=128)
    projection_fit, score_tuning["projected"] = projected.fit_and_tune(fit_on, tune_on, BUDGETS[0], seed=seed)
    monitors[PROJECTED_LABEL] = projected
    timings["projection fit and score tuning"] = time.perf_counter() - clock
    clock = time.perf_counter()
    with_items = DriftMonitor(encode, DriftConfig(), separator=separator, batch_size=128)
    fits = {
        "with item vectors": with_items.fit_and_tune(fit_on, tune_on, BUDGETS[0], item_weight=ITEM_WEIGHT, seed=seed)
    }
    monitors[ITEMS_LABEL] = with_items
    timings["projection fit and score tuning, with and without item vectors"] = time.perf_counter() - clock
    clock = time.perf_counter()
    best, tuning[PROJECTED_TUNED_LABEL] = pick_on_tune(PROJECTED_GRID, projected)
    if not same_settings(best.config, projected.config):  # else it is the row above
        monitors[PROJECTED_TUNED_LABEL] = best
    timings["ours tuning, projected"] = time.perf_counter() - clock
    for label, monitor in monitors.items():
        clock = time.perf_counter()
        scores[label] = monitor_series(monitor, evaluate)
        for b in budgets:
            try:
                record = monitor.calibrate(cal_h, b)
            except InterestBertError as err:  # too few calibration events for so low a rate: a curve point left out
                timings.setdefault("skipped", []).append(f"{label} at {b:g}/1000: {err}")
                continue
            put(
                label,
                b,
                monitor_alarms(monitor, evaluate),
                {
                    **describe(monitor.config, as_dict=True),
                    "default": same_settings(monitor.config, DriftConfig()),
                    "threshold": round(monitor.config.threshold, 4),
                    "calibration_rate": record["achieved_false_alarms_per_1000_events"],
                    **({"tuning_recall": tuning[label]} if label in tuning else {}),
                },
            )
        timings[label] = time.perf_counter() - clock

    return {
        **report(name, design, splits, rows, scores, budgets, timings, n_texts=len(encode.memo)),
        "projection_fit": projection_fit,
        "score_tuning": score_tuning,
        "item_vectors_fit": fits,
    }


def report(name, design, splits, rows, scores, budgets, timings, n_texts) -> dict:
    ev_s, ev_c = splits["evaluate"]
    evaluate = ev_s + ev_c
    results = {
        "dataset": name,
        "design": design.__dict__,
        "streams": {
            k: {
                "spliced": len(s),
                "controls": len(c),
                "changes": sum(len(x.changes) for x in s),
                "mean_length": round(float(np.mean([len(x.events) for x in s])), 1),
            }
            for k, (s, c) in splits.items()
        },
        "texts_encoded": n_texts,
        "skipped": timings.pop("skipped", []),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "event_scores": {k: de.event_scores(v, evaluate, design) for k, v in scores.items()},
        "budgets": {},
        "curve": {},
    }
    river_rows = [r for r in rows if r.startswith("river ")]
    for b in budgets:
        per = {r: de.outcomes(v[b]["alarms"], evaluate, design, v[b]["early"]) for r, v in rows.items() if b in v}
        summary = {r: de.summarise(o) for r, o in per.items()}
        results["curve"][str(b)] = {
            r: {"recall": s["recall"], "false_alarms_per_1000": s["false_alarms_per_1000"]} for r, s in summary.items()
        }
        if b not in BUDGETS:
            continue
        best_river = max(river_rows, key=lambda r: (summary[r]["recall"], -summary[r]["false_alarms_per_1000"]))
        intervals = de.bootstrap(per, "recall", reference=best_river, n=500, seed=0)
        table = {}
        for r, s in summary.items():
            table[r] = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in s.items()}
            table[r]["recall_interval"] = [intervals[r]["low"], intervals[r]["high"]]
            table[r]["ratio_to_best_river"] = intervals[r]["ratio"]
            table[r]["ratio_interval"] = [intervals[r]["ratio_low"], intervals[r]["ratio_high"]]
            table[r]["params"] = rows[r][b]["params"]
        chance = chance_recall(b, design.margin)
        results["budgets"][str(b)] = {"best_river": best_river, "chance_recall": chance, "rows": table}
        for r in ("random at the budget", "best content-free (fitted on tune)"):
            low = intervals[r]["low"]
            if low > chance:
                raise SystemExit(
                    f"benchmark broken on {name}: the {r!r} row's recall at {b:g}/1000 has its 95 % "
                    f"interval [{low:.3f}, {intervals[r]['high']:.3f}] above chance {chance:.3f}: the "
                    f"streams give the change positions away"
                )
    return results


def streaming_cost(encoder, precision: str, n_events: int = 1200, n_users: int = 40) -> list[dict]:
    """Events/s, p50/p99 latency of `update` and the per-user state in bytes (tracemalloc, the event strings
    excluded: they are the caller's; the event-text memo warm, counted apart), for the previous and the current
    default configuration, on synthetic-shop events interleaved across users as a live stream would be."""
    import tracemalloc

    from interestbert.encoder.cards import synthetic

    folder = Path(tempfile.mkdtemp(prefix="drift-bench-stream-"))
    synthetic.generate(folder, seed=2, n_users=n_users, n_items=600)
    data = load_card_data(load_card("synthetic-shop"), folder)
    verbaliser = Verbaliser(data, encoder.tokenizer, 128)
    histories = histories_from_verbaliser(verbaliser)
    stream = [
        (h.user_id, h.events[k])
        for k in range(max(len(h.events) for h in histories))
        for h in histories
        if k < len(h.events)
    ][:n_events]
    out = []
    for label, config in (("window text vs whole segment (0.1 default)", PREVIOUS), ("default", DriftConfig())):
        config = replace(config, threshold=0.3)
        encode = lambda texts, **kw: encoder.encode(texts, precision=precision, **kw)  # noqa: E731
        monitor = DriftMonitor(encode, config, separator=verbaliser.separator)
        latencies = []
        start = time.perf_counter()
        for user, event in stream:
            t0 = time.perf_counter()
            monitor.update(user, event)
            latencies.append(time.perf_counter() - t0)
        total = time.perf_counter() - start
        lat = np.asarray(latencies) * 1000
        monitor.reset()  # per-user state: a fresh monitor on the same stream, under tracemalloc, encoder memo warm
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for user, event in stream:
            monitor.update(user, event)
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        out.append(
            {
                "config": label,
                "settings": describe(monitor.config, as_dict=True),
                "events": len(stream),
                "users": len(histories),
                "events_per_second": round(len(stream) / total, 1),
                "p50_ms": round(float(np.percentile(lat, 50)), 3),
                "p99_ms": round(float(np.percentile(lat, 99)), 2),
                "bytes_per_user": round(grown / len(histories)),
                "memo_texts": len(monitor._memo),
            }
        )
    return out


# ---------------------------------------------------------------------------------------------------- output


def fmt(x, digits=3):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown(results: list[dict], cost: dict | None = None) -> str:
    lines = []
    for r in results:
        s = r["streams"]["evaluate"]
        lines += [
            f"### {r['dataset']}",
            "",
            f"Evaluation: {s['spliced']} spliced streams ({s['changes']} changes, mean length "
            f"{s['mean_length']}) and {s['controls']} controls; margin M = {r['design']['margin']}, warm-up "
            f"{r['design']['warmup']}.",
            "",
        ]
        for b, block in r["budgets"].items():
            lines += [
                f"At {float(b):g} false alarms per 1,000 control events (chance recall "
                f"{block['chance_recall']:.3f}; ratio to {block['best_river']}):",
                "",
                "| detector | recall [95 %] | FA / 1,000 (realised) | precision | F1 | median delay | recall "
                "low / mid / high magnitude | ratio to best river [95 %] |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            for name, m in block["rows"].items():
                mags = m.get("recall_by_magnitude") or {}
                lo, hi = m["recall_interval"]
                rlo, rhi = m["ratio_interval"]
                if m["params"].get("default") and "default" not in name:
                    name += " = the default"
                lines.append(
                    f"| {name} | {fmt(m['recall'])} [{fmt(lo)}, {fmt(hi)}] | "
                    f"{fmt(m['false_alarms_per_1000'], 2)} | {fmt(m['precision'])} | {fmt(m['f1'])} | "
                    f"{fmt(m['median_delay'], 1)} | "
                    f"{' / '.join(fmt(mags.get(k)) for k in ('low', 'middle', 'high')) if mags else '-'} | "
                    f"{fmt(m['ratio_to_best_river'], 2)} [{fmt(rlo, 2)}, {fmt(rhi, 2)}] |"
                )
            lines.append("")
        lines += [
            "Threshold-free (every scored event; positive: within M events after a change):",
            "",
            "| continuous score | event AUC | AP | base rate |",
            "| --- | ---: | ---: | ---: |",
        ]
        for name, m in r["event_scores"].items():
            lines.append(f"| {name} | {fmt(m['auc'])} | {fmt(m['ap'])} | {fmt(m['base_rate'])} |")
        lines += [
            "",
            f"Seconds: {json.dumps(r['seconds'])}; distinct texts encoded: {r['texts_encoded']:,}; "
            f"command `{r.get('command', '')}`, {r.get('date', '')}, {r.get('hardware', '')}.",
            "",
        ]
    if cost:
        lines += [
            "### Streaming cost (`DriftMonitor.update`, one event at a time)",
            "",
            "| configuration | events | users | events/s | p50 ms | p99 ms | bytes per user | memo texts |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in cost["rows"]:
            lines.append(
                f"| {row['config']} (`{describe(DriftConfig(**row['settings']))}`) | {row['events']} | "
                f"{row['users']} | {row['events_per_second']:.1f} | {row['p50_ms']:.3f} | "
                f"{row['p99_ms']:.1f} | {row['bytes_per_user']:,} | {row['memo_texts']:,} |"
            )
        lines += ["", f"Command `{cost['command']}`, {cost['date']}, {cost['hardware']}.", ""]
    return "\n".join(lines)


def plot_curves(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, r in zip(axes[0], results):
        budgets = sorted(r["curve"], key=float)
        names = [k for k in r["curve"][budgets[0]] if k != "none"]
        for name in names:
            pts = [
                (r["curve"][b][name]["false_alarms_per_1000"], r["curve"][b][name]["recall"])
                for b in budgets
                if name in r["curve"][b]
            ]
            ax.plot(*zip(*pts), marker="o", ms=3, label=name, lw=2 if name.startswith("interestbert") else 1)
        xs = np.linspace(0, 20, 50)
        ax.plot(xs, [chance_recall(x, r["design"]["margin"]) for x in xs], "k:", label="chance")
        ax.set(
            title=r["dataset"],
            xlabel="false alarms per 1,000 control events (realised)",
            ylabel="recall",
            xlim=(0, 22),
            ylim=(0, 1),
        )
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "drift"))
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--no-cost", action="store_true", help="Skip the streaming-cost measurement.")
    parser.add_argument("--streams", type=int, default=150, help="Spliced (and control) streams per split.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--no-curve", action="store_true", help="Only the two headline budgets (faster).")
    parser.add_argument("--report-only", action="store_true", help="Rebuild drift.md and the PNG from the JSON.")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not args.report_only:
        torch.manual_seed(args.seed)
        encoder = InterestEncoder.from_pretrained(DEFAULT_BASE_MODEL, max_seq_length=128).merge_adapter()
        from interestbert.encoder.backends import resolve_precision

        precision, why = resolve_precision(args.precision)
        command = "python benchmarks/drift.py " + " ".join(argv if argv is not None else sys.argv[1:])
        hardware = (
            f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
            f"encoder {precision} ({why})"
        )
        for name in args.datasets:
            started = time.perf_counter()
            result = run_dataset(
                name, Path(args.data_dir), args.streams, args.seed, encoder, precision, not args.no_curve
            )
            result.update(
                total_seconds=round(time.perf_counter() - started),
                command=command,
                date=dt.date.today().isoformat(),
                hardware=hardware,
            )
            write_json(out / f"{name}.json", result)
            print(markdown([result]), flush=True)
        if not args.no_cost:
            write_json(
                out / "streaming_cost.json",
                {
                    "rows": streaming_cost(encoder, precision),
                    "command": command,
                    "date": dt.date.today().isoformat(),
                    "hardware": hardware,
                },
            )
    done = read_results(out, DATASETS)
    cost = out / "streaming_cost.json"
    atomic_write_text(out / "drift.md", markdown(done, json.loads(cost.read_text()) if cost.is_file() else None))
    if done:  # a cost-only run into a new folder has no curves to draw
        plot_curves(done, out / "recall_vs_false_alarms.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
