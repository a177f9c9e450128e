"""The learned same-user projection: it finds changes the raw vectors miss, reads actions and items, round-trips,
and refuses what it cannot fit."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import TASTES, recall_at_rate, taste_and_noise, taste_history

from interestbert.encoder.drift import ITEM_WEIGHT, DriftConfig, DriftMonitor, Event, History
from interestbert.encoder.errors import InterestBertError


def test_the_same_user_projection_finds_changes_the_raw_vectors_miss():
    config = DriftConfig(window=4, stride=2)
    fit_on = [taste_history(f"f{i}", [i % TASTES], [40], 1000 + i) for i in range(200)]
    raw = DriftMonitor(taste_and_noise, config)
    projected = DriftMonitor(taste_and_noise, config)
    record = projected.fit_projection(fit_on, dim=16, steps=150, batch_users=64, lr=1e-2)
    assert projected.projection.shape == (64, 16) and record["users"] == 200
    assert record["last_loss"] < record["first_loss"]
    assert raw.config.projection is None and projected.config.projection == record
    before, after = recall_at_rate(raw, seed=5), recall_at_rate(projected, seed=5)
    assert after >= before + 0.3, (before, after)


def noise_only(texts, **_):
    """A stand-in encoder that reads only an event's first word (``n1234``: a seeded random vector), not its
    rating: the text says nothing about who the user is."""
    out = np.stack([np.random.default_rng(int(t.split()[0].rstrip(":")[1:])).standard_normal(32) for t in texts])
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def rater_history(user: str, ratings: list[int], lengths: list[int], seed: int) -> History:
    """Events of random items, each rated the user's own way (their rating 4 times in 5, else any)."""
    rng = np.random.default_rng(seed)
    events = []
    for k, usual in enumerate(r for r, n in zip(ratings, lengths) for _ in range(n)):
        item, rating = f"n{rng.integers(10**6)}", usual if rng.random() < 0.8 else int(rng.integers(1, 6))
        events.append(Event(f"{item}: rated {rating}/5", item, k))
    return History(user, events)


def test_the_projection_reads_each_events_action_beside_its_text(tmp_path):
    assert Event("n1: rated 4/5", "n1", 0).action == "rated 4/5"
    assert Event("viewed: Yoga mat (Sport)", "Yoga mat (Sport)", 0).action == "viewed"
    assert Event("t3 n1", "item of taste 3", 0).action == ""  # the item's text is not in the event's
    fit_on = [rater_history(f"f{i}", [1 + i % 5], [40], 2000 + i) for i in range(200)]
    fit_on[0].events[:20] = [Event(f"n{k}: wrote 'my own words'", f"n{k}", k) for k in range(20)]  # one person's
    recalls, records = {}, {}
    for weight in (0.0, 3.0):
        monitor = DriftMonitor(noise_only, DriftConfig(window=4, stride=2, centre=False, reference_windows=None))
        records[weight] = monitor.fit_projection(
            fit_on, dim=8, steps=150, batch_users=64, lr=1e-2, action_weight=weight
        )
        rng = np.random.default_rng(7)
        monitor.calibrate([rater_history(f"c{i}", [1 + i % 5], [60], 300 + i) for i in range(60)], 20)
        hits = 0
        for i in range(40):
            a, b = rng.choice(5, 2, replace=False) + 1
            found = monitor.scan(rater_history(f"s{i}", [int(a), int(b)], [40, 30], 700 + i)).events
            hits += any(40 <= d.index <= 48 for d in found)
        recalls[weight] = hits / 40
        if weight:  # batch and streaming still agree, and the actions survive a save
            history = rater_history("u", [1, 5], [30, 30], 1)
            streamed = [d for d in (monitor.update("u", e) for e in history.events) if d is not None]
            assert [(d.index, d.score) for d in streamed] == [(d.index, d.score) for d in monitor.scan(history).events]
            monitor.save_pretrained(tmp_path)
            again = DriftMonitor.from_pretrained(tmp_path, noise_only)
            assert again.config.projection["actions"] == records[weight]["actions"]
            assert np.array_equal(again.scan(history).scores, monitor.scan(history).scores, equal_nan=True)
    assert records[0.0]["actions"] == [] and records[0.0]["action_weight"] == 0.0
    assert sorted(records[3.0]["actions"]) == [f"rated {r}/5" for r in range(1, 6)]  # not the one user's words
    assert records[3.0]["action_weight"] == 3.0
    assert recalls[3.0] >= recalls[0.0] + 0.3, recalls


def faint_noise(texts, **_):
    """`noise_only` in 4 dimensions: an item's text hardly tells one item from another."""
    out = noise_only(texts)[:, :4]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def shopper_history(user: str, tastes: list[int], lengths: list[int], seed: int) -> History:
    """Events of items from each taste's own 30 of a 150-item catalogue, all rendered alike ("viewed")."""
    rng = np.random.default_rng(seed)
    items = [f"n{30 * taste + int(rng.integers(30))}" for taste, n in zip(tastes, lengths) for _ in range(n)]
    return History(user, [Event(f"{item}: viewed", item, k) for k, item in enumerate(items)])


def test_the_projection_learns_a_vector_for_each_shared_item(tmp_path):
    """Where an item's text says nothing about who buys it, but who buys it does, the items' own vectors make
    changes of taste detectable; an item that only one user has gets no vector (none leaves in the model)."""
    fit_on = [shopper_history(f"f{i}", [i % 5], [40], 3000 + i) for i in range(200)]
    fit_on[0].events[:20] = [Event("n999: viewed", "n999", k) for k in range(20)]  # one person's own item
    recalls, records = {}, {}
    for weight in (0.0, 3.0):
        monitor = DriftMonitor(faint_noise, DriftConfig(window=4, stride=2, centre=False, reference_windows=None))
        records[weight] = monitor.fit_projection(fit_on, dim=4, steps=150, batch_users=64, lr=1e-2, item_weight=weight)
        monitor.calibrate([shopper_history(f"c{i}", [i % 5], [60], 400 + i) for i in range(60)], 20)
        rng = np.random.default_rng(8)
        hits = 0
        for i in range(40):
            a, b = rng.choice(5, 2, replace=False)
            found = monitor.scan(shopper_history(f"s{i}", [int(a), int(b)], [40, 30], 800 + i)).events
            hits += any(40 <= d.index <= 48 for d in found)
        recalls[weight] = hits / 40
    assert records[0.0]["items"] == 0 and monitor.item_vectors is not None
    assert records[3.0]["items"] == len(monitor.item_vectors) == 150 and "n999" not in monitor.item_vectors
    assert recalls[3.0] >= recalls[0.0] + 0.3, recalls
    history = shopper_history("u", [1, 4], [30, 30], 1)  # batch and streaming agree with items
    streamed = [d for d in (monitor.update("u", e) for e in history.events) if d is not None]
    assert streamed and [(d.index, d.score) for d in streamed] == [
        (d.index, d.score) for d in monitor.scan(history).events
    ]
    monitor.save_pretrained(tmp_path)
    again = DriftMonitor.from_pretrained(tmp_path, faint_noise)
    assert again.item_vectors.keys() == monitor.item_vectors.keys() and again.config == monitor.config
    assert np.array_equal(again.scan(history).scores, monitor.scan(history).scores, equal_nan=True)
    tuned = again.tune_score(fit_on[100:], 20, streams=30)  # its trial monitors read the items too
    assert max(tuned["recall"].values()) >= 0.5, tuned


def test_fit_and_tune_keeps_the_items_own_vectors_only_where_they_find_more_changes():
    """Shoppers whose taste is in which items they choose keep them; where the items are chosen blindly (the text
    carries the taste), the item vectors only learn the fit's users and are dropped."""

    def blind_items(user: str, tastes: list[int], lengths: list[int], seed: int) -> History:
        rng = np.random.default_rng(seed)
        return History(
            user,
            [
                Event(f"t{taste} n{rng.integers(10**6)}", f"i{rng.integers(100)}", k)
                for k, taste in enumerate(t for t, n in zip(tastes, lengths) for _ in range(n))
            ],
        )

    for make, encode, kinds, keep in (
        (shopper_history, faint_noise, 5, True),
        (blind_items, taste_and_noise, TASTES, False),
    ):
        monitor = DriftMonitor(encode, DriftConfig(window=4, stride=2))
        fit_on = [make(f"f{i}", [i % kinds], [60], 5000 + i) for i in range(160)]
        tune_on = [make(f"g{i}", [i % kinds], [60], 6000 + i) for i in range(80)]
        assert "item_vectors" not in monitor.fit_and_tune(fit_on, tune_on, 20, steps=20, streams=20)[1]  # off
        fit, tuned = monitor.fit_and_tune(fit_on, tune_on, 20, steps=100, streams=60, item_weight=ITEM_WEIGHT)
        verdict = tuned["item_vectors"]
        assert verdict["kept"] is keep and (monitor.item_vectors is not None) is keep, verdict
        assert abs(verdict["recall_with_items"] - verdict["recall_without"]) > 2 * verdict["standard_error"], verdict
        assert monitor.config.score_tuning == tuned and monitor.config.projection == fit
        assert fit["items"] == (len(monitor.item_vectors) if keep else 0)


def test_a_projection_fitted_for_another_encoder_is_refused_in_one_sentence():
    monitor = DriftMonitor(noise_only, DriftConfig(window=4, stride=2))
    monitor.fit_projection([rater_history(f"f{i}", [1 + i % 5], [20], i) for i in range(60)], dim=4, steps=5)
    monitor.encode_fn, monitor.config.threshold = taste_and_noise, 0.5  # 64 numbers per text, fitted on 32
    with pytest.raises(InterestBertError, match=r"reads 37 numbers per event but gets 69 \(64 from the encoder, 5"):
        monitor.scan(taste_history("u", [0, 1], [20, 20], 0))


def test_a_projected_monitor_streams_as_it_scans_and_round_trips(tmp_path):
    monitor = DriftMonitor(taste_and_noise, DriftConfig(window=4, stride=2))
    monitor.fit_projection(
        [taste_history(f"f{i}", [i % TASTES], [30], i) for i in range(80)], dim=8, steps=20, batch_users=32
    )
    assert not monitor.calibrated  # a calibration before the fit would not hold
    monitor.calibrate([taste_history(f"c{i}", [i % TASTES], [60], 500 + i) for i in range(60)], 20)
    histories = [taste_history(f"u{i}", [i % TASTES, (i + 3) % TASTES], [30, 30], 900 + i) for i in range(6)]
    for history in histories:
        batch = monitor.scan(history)
        streamed = [d for d in (monitor.update(history.user_id, e) for e in history.events) if d is not None]
        assert [(d.index, d.score) for d in streamed] == [(d.index, d.score) for d in batch.events]
    assert sum(len(monitor.scan(h).events) for h in histories) >= 3
    monitor.save_pretrained(tmp_path)
    assert (tmp_path / "interestbert" / "drift" / "model.safetensors").is_file()
    again = DriftMonitor.from_pretrained(tmp_path, taste_and_noise)
    assert np.array_equal(again.projection, monitor.projection) and again.config == monitor.config
    assert np.array_equal(again.scan(histories[0]).scores, monitor.scan(histories[0]).scores, equal_nan=True)
    (tmp_path / "interestbert" / "drift" / "model.safetensors").unlink()
    with pytest.raises(InterestBertError, match="records a projection"):
        DriftMonitor.from_pretrained(tmp_path, taste_and_noise)


def test_fitting_a_projection_refuses_too_few_histories():
    monitor = DriftMonitor(taste_and_noise, DriftConfig(window=4, stride=2))
    with pytest.raises(InterestBertError, match="at least 50 histories"):
        monitor.fit_projection([taste_history(f"f{i}", [0], [30], i) for i in range(20)])
