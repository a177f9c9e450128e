"""Tuning the score's form on spliced streams, and the user split that keeps it off the projection's users."""

from __future__ import annotations

import pytest
from helpers import TASTES, recall_at_rate, taste_and_noise, taste_history

from interestbert.encoder.drift import DriftConfig, DriftMonitor
from interestbert.encoder.errors import InterestBertError


def test_tuning_the_score_picks_the_form_that_finds_more_held_out_changes():
    """On users whose taste is faint under per-event noise, the plain distance finds more splices than the default
    centred one; `tune_score` picks it from splices of its own, and it finds more changes on held-out users too."""
    fit_on = [taste_history(f"f{i}", [i % TASTES], [60], 1000 + i) for i in range(120)]
    default = DriftMonitor(taste_and_noise, DriftConfig(window=4, stride=2))
    tuned = DriftMonitor(taste_and_noise, DriftConfig(window=4, stride=2))
    tuned.calibrate(fit_on[:60], 20)
    record = tuned.tune_score(fit_on, 20, streams=60)
    assert len(record["recall"]) == 6 and record["streams"] == 60 and record["users"] == 120
    best = max(record["recall"], key=record["recall"].get)
    assert best == f"centre={record['centre']}, reference_windows={record['reference_windows']}"
    assert (tuned.config.centre, tuned.config.reference_windows) == (record["centre"], record["reference_windows"])
    assert record["centre"] is False and tuned.config.score_tuning == record
    assert not tuned.calibrated  # the threshold was for the old form
    assert tuned.tune_score(fit_on, 20, streams=60) == record  # seeded
    before, after = recall_at_rate(default, seed=5), recall_at_rate(tuned, seed=5)
    assert after >= before + 0.08, (before, after)


def test_sharing_encodings_encodes_each_text_once_inside_the_block_only():
    seen = []

    def counting(texts, **_):
        seen.extend(texts)
        return taste_and_noise(texts)

    monitor = DriftMonitor(counting, DriftConfig(window=4, stride=2))
    histories = [taste_history(f"c{i}", [i % TASTES], [60], 500 + i) for i in range(60)]
    with monitor.sharing_encodings():
        monitor.calibrate(histories, 20)
        threshold = monitor.config.threshold
        monitor.calibrate(histories, 20)
    distinct = len({e.text for h in histories for e in h.events})
    assert len(seen) == distinct and monitor.config.threshold == threshold
    monitor.calibrate(histories, 20)  # outside the block: encoded again, nothing kept
    assert len(seen) == 2 * distinct and monitor._shared is None


def test_split_for_tuning_holds_out_a_third_of_the_users_from_the_projection():
    from interestbert.encoder.drift import split_for_tuning

    histories = [taste_history(f"u{i}", [0], [12], i) for i in range(90)]
    fit_on, tune_on = split_for_tuning(histories, seed=3)
    assert len(tune_on) == 30 and len(fit_on) == 60
    assert not {h.user_id for h in fit_on} & {h.user_id for h in tune_on}
    assert [h.user_id for h in split_for_tuning(histories, seed=3)[1]] == [h.user_id for h in tune_on]


def test_tuning_the_score_refuses_too_few_histories():
    monitor = DriftMonitor(taste_and_noise, DriftConfig(window=4, stride=2))
    with pytest.raises(InterestBertError, match="tuning the drift score needs at least 50 histories"):
        monitor.tune_score([taste_history(f"f{i}", [0], [30], i) for i in range(20)], 20)
