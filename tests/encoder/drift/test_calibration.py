"""Calibration: the threshold holds its false-alarm rate on held-out users and round-trips as JSON; the on-the-fly
recipe (`ensure_calibrated`) fits the projection on other users than it calibrates on."""

from __future__ import annotations

import json

import pytest
from helpers import bag_of_words, planted

from interestbert.encoder.drift import DriftConfig, DriftMonitor, count_false_alarms, histories_from_verbaliser
from interestbert.encoder.errors import InterestBertError


def test_calibration_holds_its_rate_on_held_out_synthetic_users(tiny_bert, synthetic_data):
    from interestbert.encoder import InterestEncoder, Verbaliser

    encoder = InterestEncoder.from_pretrained(str(tiny_bert), max_seq_length=128).merge_adapter()
    verbaliser = Verbaliser(synthetic_data, encoder.tokenizer, 128)
    histories = histories_from_verbaliser(verbaliser)
    truth: dict[str, list[int]] = {}
    for u, i in zip(synthetic_data.switches["user_id"], synthetic_data.switches["event_index"]):
        truth.setdefault(u, []).append(int(i))
    monitor = DriftMonitor(encoder.encode, DriftConfig(window=6, stride=2), separator=verbaliser.separator)
    target = 10.0
    record = monitor.calibrate(histories[:60], target, change_points=truth)
    assert record["achieved_false_alarms_per_1000_events"] <= target
    false = events = 0
    for result in monitor.scan_many(histories[60:]):
        false += count_false_alarms([d.index for d in result.events], truth.get(result.user_id, []), 10)
        events += result.n_events
    held_out = 1000 * false / events
    assert abs(held_out - target) <= 6, (record, held_out)


def test_calibration_refuses_a_set_too_small_for_the_rate():
    monitor = DriftMonitor(bag_of_words, DriftConfig(window=4, stride=2))
    with pytest.raises(InterestBertError, match=r"needs at least 10,000 events"):
        monitor.calibrate([planted("a", 50, 0, seed=1)], target_false_alarms_per_1000_events=1)


def test_calibration_round_trips_as_json(tmp_path):
    monitor = DriftMonitor(bag_of_words, DriftConfig(window=4, stride=2))
    monitor.calibrate([planted(f"c{i}", 50, 0, seed=i) for i in range(100)], 5)
    path = monitor.save_pretrained(tmp_path)
    assert (
        path.relative_to(tmp_path).as_posix() == "interestbert/drift/config.json"
        and json.loads(path.read_text())["threshold"] == monitor.config.threshold
    )
    again = DriftMonitor.from_pretrained(tmp_path, bag_of_words)
    assert again.config == monitor.config
    uncalibrated = DriftMonitor.from_pretrained(tmp_path / "nothing-here", bag_of_words)
    with pytest.raises(InterestBertError, match="not calibrated"):
        uncalibrated.scan(planted("x", 30, 0, seed=0))


def test_calibrating_on_the_fly_fits_the_projection_on_other_users_than_it_calibrates_on(tiny_bert, synthetic_data):
    from interestbert.encoder import InterestEncoder, Verbaliser
    from interestbert.encoder.drift import ensure_calibrated

    encoder = InterestEncoder.from_pretrained(str(tiny_bert), max_seq_length=64).merge_adapter()
    verbaliser = Verbaliser(synthetic_data, encoder.tokenizer, 64)
    monitor = DriftMonitor(encoder.encode, DriftConfig(window=4, stride=2), separator=verbaliser.separator)
    calibration = ensure_calibrated(
        monitor, verbaliser, 20, min_events=2000, projection_steps=20, show_progress_bar=False
    )
    fitted, calibrated = monitor.config.projection, calibration.record["histories"]
    assert monitor.projection.shape == (32 + 8, 32) and fitted["steps"] == 20, fitted  # the shop's 8 actions
    assert sorted(fitted["actions"])[:3] == ["added to cart", "bought", "rated 1/5"], fitted["actions"]
    assert calibrated >= 20 and fitted["users"] >= 50 and calibrated + fitted["users"] <= 120, (calibrated, fitted)
    assert monitor.calibrated and calibration.record["achieved_false_alarms_per_1000_events"] <= 20
    # a third of the other users was held out of the fit to tune the score's form: too few here (under 50)
    assert fitted["users"] <= 2 * (120 - calibrated) // 3 + 1 and monitor.config.score_tuning is None, fitted
    ensure_calibrated(
        monitor, verbaliser, 20, min_events=2000, projection=False, reason="again", show_progress_bar=False
    )
    assert monitor.projection is None and monitor.config.projection is None
    tuning = monitor.config.score_tuning  # without a projection, all the other users tune the form
    assert fitted["users"] < tuning["users"] <= 120 - calibrated and len(tuning["recall"]) == 6, tuning
