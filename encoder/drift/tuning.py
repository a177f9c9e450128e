"""Fitting a drift monitor to a domain: which users fit what, which form of the score finds most shifts.

Which form of the score finds most shifts (centred or the plain distance; the newest 5 or 10 windows or the whole
segment as reference) depends on the domain. `tune_score` picks it on renewal streams it splices from other users'
histories (segments of different people, as the drift benchmark builds them), each form calibrated to the same
false-alarm rate on those users' unspliced stretches. `fit_and_tune` fits the projection then tunes the score on
disjoint users (`split_for_tuning`). The `DriftMonitor` methods of the same names call these.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np

from ..errors import InterestBertError
from . import projection
from . import streams as de
from .events import History, ScanResult, sort_events
from .projection import (
    ACTION_WEIGHT,
    MIN_PROJECTION_USERS,
    PROJECTION_DIM,
    PROJECTION_LOOKBACK,
    shared_actions,
    shared_items,
    with_actions,
)

# the forms of the score `tune_score` tries, (centre, reference_windows), the default first (it wins ties)
SCORE_FORMS = ((True, 5), (True, 10), (True, None), (False, 5), (False, 10), (False, None))
TUNE_STREAMS = 150  # spliced streams (and as many unspliced ones) `tune_score` builds
MIN_ALARMS_TO_CALIBRATE = 10  # a rate is estimated from at least this many alarms' worth of events
TUNING_SHARE, TUNING_CAP = 3, 1000  # `split_for_tuning`: one user in 3, at most 1,000, tunes the score's form


def split_for_tuning(histories: Sequence[History], seed: int = 0) -> tuple[list[History], list[History]]:
    """Disjoint ``(projection users, tuning users)``: one history in `TUNING_SHARE` (at most `TUNING_CAP`) is kept for
    `tune_score`, the rest for the projection's fit. On the users a projection was fitted on, windows of one person
    sit closer than on anyone else's, and the plain distance looks better than it is: the form must be picked on
    users the projection never saw."""
    order = np.random.default_rng([seed, 29]).permutation(len(histories))
    n = min(len(histories) // TUNING_SHARE, TUNING_CAP)
    return [histories[i] for i in np.sort(order[n:])], [histories[i] for i in np.sort(order[:n])]


def splice_design(lengths: Sequence[int], window: int) -> de.StreamDesign:
    """The renewal streams `tune_score` builds, scaled to a domain's history lengths: segments of at least a quarter
    of the median history, kept between 2 and 5 windows (as the drift benchmark's P1 and P2 designs), plus a
    geometric part with twice that mean; streams of 5 to 15 segment minimums; hits within ``2 * window`` events."""
    segment = int(np.clip(np.median(lengths) // 4 if len(lengths) else 0, 2 * window, 5 * window))
    return de.StreamDesign(
        (5 * segment, 15 * segment), segment, 2.0 * segment, warmup=segment, margin=2 * window, min_user_events=segment
    )


def count_false_alarms(alarms: Sequence[int], truth: Sequence[int], margin: int) -> int:
    """Alarms that are not the first alarm within ``margin`` events at or after a true change point."""
    used: set[int] = set()
    false = 0
    for a in alarms:
        hit = next((t for t in truth if t <= a <= t + margin and t not in used), None)
        if hit is None:
            false += 1
        else:
            used.add(hit)
    return false


def calibrate(
    monitor,
    histories: Sequence[History],
    target_false_alarms_per_1000_events: float,
    change_points: dict[str, Iterable[int]] | None = None,
    margin: int = 10,
    show_progress_bar: bool = False,
) -> dict:
    """Sets the threshold so that alarms on ``histories`` stay at or under the target rate per 1,000 events.

    Without ``change_points`` every alarm counts as a false one (use histories you believe have no injected
    change, e.g. real users' histories; genuine shifts in them only make the threshold stricter). With them
    (``{user_id: [event_index, ...]}``), the first alarm within ``margin`` events after a true point is not
    counted. Returns the calibration record, which is also kept in ``config.calibration`` and saved with
    `save_pretrained`.
    """
    target = float(target_false_alarms_per_1000_events)
    if not target > 0:
        raise ValueError(f"the target false-alarm rate should be > 0 per 1,000 events, got {target}.")
    plans = [monitor._plan(h) for h in histories]
    n_events = sum(len(events) for events, _, _ in plans)
    needed = math.ceil(MIN_ALARMS_TO_CALIBRATE * 1000 / target)
    if n_events < needed:
        raise InterestBertError(
            f"calibration set too small: {n_events:,} events in {len(plans):,} histories, "
            f"but a rate of {target:g} false alarms per 1,000 events needs at least "
            f"{needed:,} events; pass more histories or a higher target."
        )
    blocks = monitor._window_vectors(plans, show_progress_bar)
    truth = {u: sorted(int(p) for p in points) for u, points in (change_points or {}).items()}

    def replay_all(threshold: float) -> list[ScanResult]:
        return [
            monitor._replay(h.user_id, events, block, threshold, stats, explain_events=False)
            for h, (events, stats, _), block in zip(histories, plans, blocks)
        ]

    def false_rate(threshold: float) -> float:
        false = sum(
            count_false_alarms([e.index for e in r.events], truth.get(r.user_id, []), margin)
            for r in replay_all(threshold)
        )
        return 1000 * false / n_events

    # the rate falls as the threshold rises (a reset after each alarm makes it only roughly monotone, so
    # bisect and keep the lowest threshold seen to meet the target)
    scored = [r.scores[np.isfinite(r.scores)] for r in replay_all(math.inf)]
    highest = max((float(x.max()) for x in scored if len(x)), default=1.0)
    lo, hi = -1.0, highest + 1e-6  # at `hi` nothing crosses (centred scores can be below 0)
    best = hi
    for _ in range(30):
        mid = (lo + hi) / 2
        if false_rate(mid) <= target:
            best, hi = min(best, mid), mid
        else:
            lo = mid
    achieved = false_rate(best)
    monitor.config.threshold = float(best)
    monitor.config.calibration = {
        "target_false_alarms_per_1000_events": target,
        "achieved_false_alarms_per_1000_events": round(achieved, 4),
        "histories": len(plans),
        "events": n_events,
        "with_change_points": change_points is not None,
        "margin": margin,
    }
    return dict(monitor.config.calibration, threshold=monitor.config.threshold)


def fit_projection(
    monitor,
    histories: Sequence[History],
    dim: int | None = None,
    steps: int = 2000,
    batch_users: int = 256,
    lookback: int = PROJECTION_LOOKBACK,
    temperature: float = 0.1,
    lr: float = 1e-3,
    action_weight: float = ACTION_WEIGHT,
    item_weight: float = 0.0,
    seed: int = 0,
    show_progress_bar: bool = False,
) -> dict:
    """Learns the projection that the monitor applies to event vectors, ``(encoder dim, dim)`` (``dim`` by
    default `PROJECTION_DIM`, or the encoder's if smaller), with a contrastive "same user?" objective
    (`interestbert.encoder.drift.projection.fit_projection`).

    "Same user" is what a splice breaks, but a user's own change of interest is what the monitor is for: the
    longer the ``lookback``, the more of its pairs straddle one, and the projection learns to see past it.

    Beside each event's text vector the projection reads its action (`Event.action`: "rated 4/5"), a one-hot of
    the `ACTION_VOCAB` most frequent ones, of length ``action_weight``, among those shared by at least
    `MIN_ACTION_USERS` users (0: the text alone; with ``window_vector="text"`` or fewer than two such actions
    there are none): how a person rates is part of who they are.

    With ``item_weight`` > 0 (`ITEM_WEIGHT`), each item that at least `MIN_ITEM_USERS` of the users share
    (`Event.item_text`; listed in the saved config) also gets its own vector, learned with the projection and
    added to its events' projected text vector: who chooses an item can say more about taste than its title.
    Off by default: where items have few users, or a user's items change with their recorded switches, the
    vectors learn the fit's users more than taste (`fit_and_tune` can decide).

    Use histories of users the monitor will not be calibrated on (the rate would be optimistic on the users
    it was fitted to); a calibration made before is cleared. Returns the fit's record (also kept in
    ``config.projection``).
    """
    w = monitor.config.window
    usable = [sort_events(h.events)[0] for h in histories if len(h.events) >= w + 2]
    if len(usable) < 2 * MIN_PROJECTION_USERS:
        raise InterestBertError(
            f"fitting the drift projection needs at least {2 * MIN_PROJECTION_USERS} "
            f"histories of {w + 2} events or more, got {len(usable)}; pass more users."
        )
    texts = list(dict.fromkeys(e.text for events in usable for e in events))
    index = {t: k for k, t in enumerate(texts)}
    vectors = monitor._encode(texts, show_progress_bar)
    dim = min(PROJECTION_DIM, vectors.shape[1]) if dim is None else dim
    if vectors.shape[1] < dim:
        raise ValueError(f"the projection's dim ({dim}) should be at most the encoder's ({vectors.shape[1]}).")
    if action_weight < 0 or item_weight < 0:
        raise ValueError(f"action_weight and item_weight should be >= 0, got {action_weight}, {item_weight}.")
    vocab = []
    if action_weight > 0 and monitor.config.window_vector == "mean":
        actions = [[e.action for e in events] for events in usable]
        vocab = shared_actions(actions)
        if len(vocab) > 1:
            action_of = {e.text: a for events, row in zip(usable, actions) for e, a in zip(events, row)}
            vectors = with_actions(vectors, [action_of[t] for t in texts], vocab, action_weight)
        else:
            vocab = []
    items = []
    if item_weight > 0 and monitor.config.window_vector == "mean":
        items = shared_items([[e.item_text for e in events] for events in usable])
    item_of = {e.text: e.item_text for events in usable for e in events}
    item_index = {i: k + 1 for k, i in enumerate(items)}  # 0: no vector of its own
    text_items = np.fromiter((item_index.get(item_of[t], 0) for t in texts), np.int64, len(texts))
    rows = [np.fromiter((index[e.text] for e in events), np.int64, len(events)) for events in usable]
    weight, item_vectors, fit = projection.fit_projection(
        vectors,
        rows,
        w,
        dim,
        text_items=text_items,
        n_items=len(items),
        steps=steps,
        batch_users=batch_users,
        lookback=lookback,
        temperature=temperature,
        lr=lr,
        item_weight=item_weight,
        seed=seed,
        show_progress_bar=show_progress_bar,
    )
    monitor.set_projection(weight, dict(zip(items, item_vectors)))
    record = {
        "dim": dim,
        "steps": steps,
        "users": len(usable),
        "event_texts": len(texts),
        "batch_users": fit["batch_users"],
        "lookback": lookback,
        "temperature": temperature,
        "actions": vocab,
        "action_weight": float(action_weight) if vocab else 0.0,
        "items": len(items),
        "item_weight": float(item_weight) if items else 0.0,
        "first_loss": fit["first_loss"],
        "last_loss": fit["last_loss"],
        "chance_loss": fit["chance_loss"],
    }
    monitor.config = replace(monitor.config, projection=record, threshold=None, calibration={})
    return record


def tune_score(
    monitor,
    histories: Sequence[History],
    target_false_alarms_per_1000_events: float,
    streams: int = TUNE_STREAMS,
    seed: int = 0,
    show_progress_bar: bool = False,
) -> dict:
    """Picks the form of the score for this domain: ``centre`` and ``reference_windows`` among `SCORE_FORMS`.

    Splices ``histories`` into renewal streams (segments of different users, each from a random point of their
    history, as the drift benchmark builds them; lengths scaled to the histories by `splice_design`), calibrates
    each form to the target rate on unspliced stretches of the same users, and keeps the form that finds the
    most splices (an alarm within ``2 * window`` events). Pass users the monitor will not be calibrated on, nor
    the ones its projection was fitted on (`split_for_tuning` says why). A calibration made before is cleared.
    Returns the record (also kept in ``config.score_tuning``)."""
    if monitor.config.window_vector != "mean":
        raise ValueError("tune_score needs window_vector='mean' (each event text encoded once for every form).")
    target = float(target_false_alarms_per_1000_events)
    sorted_histories = [History(h.user_id, sort_events(h.events)[0]) for h in histories]
    design = splice_design([len(h.events) for h in sorted_histories], monitor.config.window)
    pool = [h for h in sorted_histories if len(h.events) >= design.min_user_events]
    if len(pool) < 2 * MIN_PROJECTION_USERS:
        raise InterestBertError(
            f"tuning the drift score needs at least {2 * MIN_PROJECTION_USERS} histories of "
            f"{design.min_user_events} events or more, got {len(pool)}; pass more users."
        )
    spliced, controls = de.renewal_streams(pool, streams, design, seed)
    texts = list(dict.fromkeys(e.text for s in spliced + controls for e in s.events))
    table = dict(zip(texts, monitor._encode(texts, show_progress_bar)))  # raw vectors: each trial projects them

    def lookup(batch: list[str]) -> np.ndarray:
        return np.stack([table[t] for t in batch])

    recall = {}
    for centre, k in SCORE_FORMS:
        config = replace(monitor.config, centre=centre, reference_windows=k, threshold=None, calibration={})
        trial = type(monitor)(
            lookup, config, monitor.separator, projection=monitor.projection, item_vectors=monitor.item_vectors
        )
        trial.calibrate([c.history() for c in controls], target)
        alarms = {r.user_id: [e.index for e in r.events] for r in trial.scan_many([s.history() for s in spliced])}
        recall[(centre, k)] = de.score_alarms(alarms, spliced, design)["recall"]
    centre, k = max(recall, key=recall.get)  # the first of equals: the default form when it ties
    record = {
        "centre": centre,
        "reference_windows": k,
        "target_false_alarms_per_1000_events": target,
        "streams": len(spliced),
        "users": len(pool),
        "events": sum(len(s.events) for s in spliced),
        "changes": sum(len(s.changes) for s in spliced),
        "design": {
            "length": list(design.length),
            "min_segment": design.min_segment,
            "extra_mean": design.extra_mean,
            "margin": design.margin,
        },
        "recall": {f"centre={c}, reference_windows={r}": round(v, 4) for (c, r), v in recall.items()},
    }
    monitor.config = replace(
        monitor.config, centre=centre, reference_windows=k, threshold=None, calibration={}, score_tuning=record
    )
    monitor.reset()
    return record


def fit_and_tune(
    monitor,
    fit_on: Sequence[History],
    tune_on: Sequence[History],
    target_false_alarms_per_1000_events: float,
    steps: int = 2000,
    streams: int = TUNE_STREAMS,
    item_weight: float = 0.0,
    seed: int = 0,
    show_progress_bar: bool = False,
) -> tuple[dict, dict]:
    """`fit_projection` on ``fit_on`` then `tune_score` on ``tune_on`` (disjoint users: `split_for_tuning`).
    With ``item_weight`` > 0, twice: with the items' own vectors and without, keeping the items only when the
    best form finds more of the splices with them by more than one standard error of that recall.
    Returns both records (the tuning's with the comparison under ``"item_vectors"``); if the tuning fails, the
    projection fitted first stays and the error propagates."""
    fit = monitor.fit_projection(
        fit_on, steps=steps, item_weight=item_weight, seed=seed, show_progress_bar=show_progress_bar
    )
    tuned = tune_score(monitor, tune_on, target_false_alarms_per_1000_events, streams, seed, show_progress_bar)
    if not fit["items"]:
        return fit, tuned
    with_items = (fit, tuned, monitor.projection, monitor.item_vectors, monitor.config)
    fit = monitor.fit_projection(fit_on, steps=steps, item_weight=0.0, seed=seed, show_progress_bar=show_progress_bar)
    tuned = tune_score(monitor, tune_on, target_false_alarms_per_1000_events, streams, seed, show_progress_bar)
    recall, plain = max(with_items[1]["recall"].values()), max(tuned["recall"].values())
    error = math.sqrt(plain * (1 - plain) / max(tuned["changes"], 1))
    if recall - plain > error:
        fit, tuned, projection, items, monitor.config = with_items
        monitor.set_projection(projection, items)
    verdict = {
        "recall_with_items": recall,
        "recall_without": plain,
        "standard_error": round(error, 4),
        "kept": recall - plain > error,
    }
    monitor.config = replace(monitor.config, score_tuning={**tuned, "item_vectors": verdict})
    return fit, monitor.config.score_tuning
