"""The recipe that fits a calibrated monitor for a card's data: `ensure_calibrated` uses the model's saved
calibration or, when it has none, fits the projection, tunes the score's form and calibrates the threshold on the
training split of disjoint samples of the card's users, and says what it did. `interestbert drift`,
`interestbert recommend --drift-aware` and the quickstart run it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from ..errors import InterestBertError
from .events import histories_from_verbaliser
from .monitor import DriftMonitor
from .projection import MIN_PROJECTION_USERS
from .tuning import MIN_ALARMS_TO_CALIBRATE, split_for_tuning

logger = logging.getLogger(__name__)

MARGIN = 10  # a detection within this many events after a true switch is a hit
DEFAULT_TARGET = 2.0  # false alarms per 1,000 events when calibrating on the fly
CALIBRATION_USERS = 2000  # at most this many users' training histories calibrate a threshold on the fly
CALIBRATION_EVENTS = 10_000  # ... and only as many as give this many events (or twice what the rate needs)
PROJECTION_USERS = 5000  # at most this many other users' training histories fit the projection on the fly


@dataclass
class Calibration:
    source: str  # "model" or a sentence saying how it was made now
    record: dict


def ensure_calibrated(
    monitor: DriftMonitor,
    verbaliser,
    target: float | None,
    users: int = CALIBRATION_USERS,
    seed: int = 0,
    reason: str | None = None,
    show_progress_bar: bool = True,
    data=None,
    min_events: int = CALIBRATION_EVENTS,
    projection: bool = True,
    projection_steps: int = 2000,
    tune_score: bool = True,
) -> Calibration:
    """Uses the model's calibration, or (when it has none, or for ``reason``) calibrates on the card's training
    split (each history without its last two events, the validation and test targets) of sampled users, and says
    so. With ``data`` (the card's data) holding recorded switches, alarms at them are not false. With
    ``projection``, a calibration made now first fits the monitor's same-user projection
    (`DriftMonitor.fit_projection`) on the training split of other users than those it calibrates on (at most
    `PROJECTION_USERS`; none when fewer than 50 are left), so the false-alarm rate is measured on users the
    projection never saw; without it, the monitor scores the vectors as encoded. With ``tune_score``, it then picks
    the score's form (`DriftMonitor.tune_score`) on renewal streams spliced from other users again; with both, a third
    of those users (at most 1,000) tune the form and the projection is fitted on the rest (`split_for_tuning`)."""
    if monitor.calibrated and reason is None:
        return Calibration(
            "the model's saved calibration", dict(monitor.config.calibration, threshold=monitor.config.threshold)
        )
    target = DEFAULT_TARGET if target is None else target
    n_events = verbaliser.n_events
    eligible = np.flatnonzero(n_events - 2 >= 2 * monitor.config.window)
    if len(eligible) == 0:
        raise InterestBertError(
            f"no user has {2 * monitor.config.window + 2} events or more, so the drift "
            "threshold cannot be calibrated on this card; use a smaller --window."
        )
    # a seeded sample of users, just large enough: twice the events the rate needs, at least CALIBRATION_EVENTS
    order = np.random.default_rng(seed).permutation(eligible)[:users]
    wanted = max(min_events, 2 * math.ceil(MIN_ALARMS_TO_CALIBRATE * 1000 / target))
    enough = int(np.searchsorted(np.cumsum(n_events[order] - 2), wanted)) + 1
    pick = np.sort(order[:enough])
    histories = histories_from_verbaliser(verbaliser, pick, n_events[pick] - 2)
    why = reason or "the model has no drift calibration"
    with monitor.sharing_encodings():  # the three steps read many of the same event texts: each encoded once
        monitor.set_projection(None)
        rest = np.zeros(0, dtype=np.int64)  # other users' histories: only the projection and the tuning read them
        if projection or tune_score:
            rest = np.sort(
                np.random.default_rng(seed).permutation(
                    np.setdiff1d(np.flatnonzero(n_events - 2 >= monitor.config.window + 2), pick)
                )[:PROJECTION_USERS]
            )
        others = histories_from_verbaliser(verbaliser, rest, n_events[rest] - 2) if len(rest) else []
        fit_on, tune_on = split_for_tuning(others, seed) if projection and tune_score else (others, others)
        fitted = projection and len(fit_on) >= 2 * MIN_PROJECTION_USERS
        if fitted:
            logger.info(
                "fitting the drift projection (same user or not?) on the training split of %s other users",
                f"{len(fit_on):,}",
            )
        elif projection:
            logger.info(
                "no drift projection: %d users besides the %d calibrating, fewer than %d",
                len(fit_on),
                len(pick),
                2 * MIN_PROJECTION_USERS,
            )
        tuned = None
        try:
            if fitted and tune_score:
                tuned = monitor.fit_and_tune(
                    fit_on, tune_on, target, steps=projection_steps, seed=seed, show_progress_bar=show_progress_bar
                )[1]
            elif fitted:
                monitor.fit_projection(fit_on, steps=projection_steps, seed=seed, show_progress_bar=show_progress_bar)
            elif tune_score:
                tuned = monitor.tune_score(tune_on, target, seed=seed, show_progress_bar=show_progress_bar)
        except InterestBertError as err:
            logger.info(
                "the drift score keeps its form (centre=%s, reference_windows=%s): %s",
                monitor.config.centre,
                monitor.config.reference_windows,
                err,
            )
        fit = monitor.config.projection
        if fitted and fit is not None:
            logger.info(
                "  loss %.3f -> %.3f (chance %.3f); %s",
                fit["first_loss"],
                fit["last_loss"],
                fit["chance_loss"],
                f"{len(fit['actions'])} event actions read beside the text (most frequent: {fit['actions'][0]!r})"
                if fit["actions"]
                else "no event actions (fewer than 2)",
            )
        if tuned is not None:
            logger.info(
                "drift score picked on %d streams spliced from other users: centre=%s, reference_windows=%s "
                "(recall %s)",
                tuned["streams"],
                tuned["centre"],
                tuned["reference_windows"],
                ", ".join(f"{v:.2f}" for v in tuned["recall"].values()),
            )
        switches = switch_points(data) if data is not None else None
        known = "" if switches is None else "; alarms at the card's recorded switches do not count as false"
        logger.info(
            "calibrating the drift threshold (%s): %g false alarms per 1,000 events on the training split of "
            "%s users%s",
            why,
            target,
            f"{len(pick):,}",
            known,
        )
        change_points = None if switches is None else {h.user_id: switches.get(h.user_id, []) for h in histories}
        record = monitor.calibrate(
            histories, target, change_points=change_points, margin=MARGIN, show_progress_bar=show_progress_bar
        )
    logger.info(
        "  threshold %.4f (%.2f alarms per 1,000 events on %s events)",
        record["threshold"],
        record["achieved_false_alarms_per_1000_events"],
        f"{record['events']:,}",
    )
    return Calibration(f"calibrated now on the training split of {len(pick):,} users ({why})", record)


def switch_points(data) -> dict[str, list[int]] | None:
    """The card's recorded switches per user as event indices, when the data has them."""
    table = switch_table(data)
    return None if table is None else {u: [p for p, _ in v] for u, v in table.items()}


def switch_table(data) -> dict[str, list[tuple[int, str]]] | None:
    """The card's recorded switches per user as (event index, "from -> to"), when the data has them."""
    if data.switches is None:
        return None
    cols = data.switches.column_names
    out: dict[str, list[tuple[int, str]]] = {}
    for row in data.switches:
        label = (
            f"{row['from_category']} -> {row['to_category']}"
            if "from_category" in cols and "to_category" in cols
            else "switch"
        )
        out.setdefault(str(row["user_id"]), []).append((int(row["event_index"]), label))
    return out
