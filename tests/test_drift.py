"""DriftMonitor: batch and streaming agree, planted switches are found and explained, calibration holds its rate,
the CLI writes its files and plots (drift-aware recommendation: tests/test_recommend.py)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from interestbert.encoder.drift import (ITEM_WEIGHT, DriftConfig, DriftMonitor, Event, History, count_false_alarms,
                                        explain, histories_from_verbaliser, sort_events)
from interestbert.encoder.errors import InterestBertError
from interestbert.inference.cli import main

OLD_MODEL = Path(__file__).parent / "data" / "model-0.1.0"
GARDEN = ["watering can", "pruning shears", "seed tray", "garden trowel", "hose reel", "plant labels",
          "compost bin", "hedge trimmer", "flower pots", "rake"]
JAZZ = ["jazz vinyl record", "saxophone album", "bebop box set", "jazz piano record", "swing album",
        "trumpet solo record", "blue note album", "jazz quartet record", "big band album", "cool jazz record"]


def bag_of_words(texts, **_):
    """A deterministic stand-in encoder: the normalised mean of a fixed random vector per word."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            out[row] += np.random.default_rng(zlib.crc32(word.encode())).standard_normal(64)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def planted(user: str, n_before: int, n_after: int, seed: int, first=GARDEN, then=JAZZ,
            category=("Gardening", "Jazz")) -> History:
    rng = np.random.default_rng(seed)
    events = []
    for k in range(n_before + n_after):
        group, cat = (first, category[0]) if k < n_before else (then, category[1])
        title = group[rng.integers(len(group))]
        item = f"{title} ({cat})"
        events.append(Event(f"viewed: {item}", item, 1000 + 10 * k))
    return History(user, events)


@pytest.mark.parametrize("config", [DriftConfig(window=6, stride=2, threshold=0.35),
                                    DriftConfig(window=4, stride=2, threshold=0.2, reference_windows=3),
                                    DriftConfig(window=4, stride=2, threshold=0.3, window_vector="mean",
                                                reference_windows=5, centre=False)],
                         ids=["window text, whole segment", "sliding reference", "mean of event vectors"])
def test_batch_and_streaming_give_the_same_detections(config):
    monitor = DriftMonitor(bag_of_words, config)
    histories = [planted(f"u{i}", 20 + i, 25, seed=i) for i in range(5)] + [planted("flat", 60, 0, seed=9)]
    for history in histories:
        batch = monitor.scan(history)
        streamed = [monitor.update(history.user_id, e) for e in history.events]
        streamed = [d for d in streamed if d is not None]
        assert [(d.index, d.score, d.moved_to) for d in streamed] == [(d.index, d.score, d.moved_to)
                                                                       for d in batch.events]
        last = batch.scores[~np.isnan(batch.scores)][-1]
        assert monitor.last_score(history.user_id) == pytest.approx(float(last), abs=1e-6)
    assert sum(len(monitor.scan(h).events) for h in histories[:5]) >= 5
    assert monitor.scan(histories[-1]).events == []  # one group throughout: no alarm
    assert monitor.stream_stats()["events"] == sum(len(h.events) for h in histories)


def test_mean_window_vectors_and_a_sliding_reference():
    calls = []

    def counting(texts, **_):
        calls.append(list(texts))
        return bag_of_words(texts)

    history = planted("u", 30, 0, seed=1)
    monitor = DriftMonitor(counting, DriftConfig(window=4, stride=2, threshold=9.0, window_vector="mean",
                                                 centre=False))
    monitor.scan_many([history, planted("v", 30, 0, seed=1)])
    texts = [e.text for e in history.events]
    assert len(calls) == 1 and sorted(calls[0]) == sorted(set(texts))  # each distinct event text encoded once
    vectors = bag_of_words(texts)
    first, i = monitor.first_evaluated, monitor.first_evaluated + 12

    def unit(x):
        return x / np.linalg.norm(x)

    got = []
    for k in (None, 3):  # the reference: the unit window vectors that no longer overlap, all or the newest K
        monitor.config.reference_windows = k
        result = monitor.scan(history)
        earlier = list(range(first, i - 3, 2))[-k if k else 0:]
        reference = sum(unit(vectors[j - 3:j + 1].sum(0)) for j in earlier)
        expected = 1 - unit(vectors[i - 3:i + 1].sum(0)) @ unit(reference)
        got.append(result.scores[list(result.indices).index(i)])
        assert got[-1] == pytest.approx(expected, abs=1e-5)
    assert len(earlier) == 3 and len(range(first, i - 3, 2)) > 3 and abs(got[0] - got[1]) > 1e-3
    with pytest.raises(ValueError, match="window_vector"):
        DriftConfig(window_vector="sum")
    with pytest.raises(ValueError, match="reference_windows"):
        DriftConfig(reference_windows=0)


def test_streaming_memo_of_event_texts_is_bounded(monkeypatch):
    from interestbert.encoder import drift

    monkeypatch.setattr(drift, "MEMO_TEXTS", 7)
    monitor = DriftMonitor(bag_of_words, DriftConfig(window=4, stride=2, threshold=0.3, window_vector="mean"))
    for k, event in enumerate(planted("u", 30, 30, seed=3).events):
        monitor.update("u", Event(f"{event.text} #{k}", event.item_text, event.timestamp))  # every text new
    assert 4 <= len(monitor._memo) <= 7


def test_streaming_counts_out_of_order_events_and_batch_sorts_them():
    events = [Event(f"viewed: {t}", t, ts) for t, ts in (("a", 5), ("b", 3), ("c", 3), ("d", 9))]
    ordered, (reordered, tied) = sort_events(events)
    assert [e.item_text for e in ordered] == ["b", "c", "a", "d"] and reordered == 2 and tied == 1
    monitor = DriftMonitor(bag_of_words, DriftConfig(window=2, stride=1, threshold=0.5))
    for e in events:
        monitor.update("u", e)
    assert monitor.stream_stats() == {"users": 1, "evicted": 0, "events": 4, "reordered": 2, "tied": 0}
    result = monitor.scan(History("u", events))
    assert result.reordered == 2 and result.tied == 1


def test_short_histories_have_no_scores_and_no_detections():
    monitor = DriftMonitor(bag_of_words, DriftConfig(window=8, stride=2, threshold=0.01))
    result = monitor.scan(planted("short", 8, 7, seed=0))  # 15 < 2 windows
    assert result.events == [] and len(result.indices) > 0  # evaluated, but never scored
    assert result.scores.shape == result.indices.shape and np.isnan(result.scores).all()


TEXT_WHOLE_SEGMENT = DriftConfig(window=6, stride=2, window_vector="text", reference_windows=None)


@pytest.mark.parametrize("model, config, bar", [("tiny", TEXT_WHOLE_SEGMENT, 4), ("packaged", TEXT_WHOLE_SEGMENT, 5),
                                                ("packaged", DriftConfig(), 4)],
                         ids=["tiny, window text", "packaged, window text", "packaged, defaults"])
def test_a_planted_switch_is_detected_within_the_margin_and_explained(model, config, bar, tiny_bert):
    from dataclasses import replace

    from interestbert.encoder import InterestEncoder

    name = str(tiny_bert) if model == "tiny" else "sentence-transformers/all-MiniLM-L6-v2"
    encoder = InterestEncoder.from_pretrained(name, max_seq_length=128).merge_adapter()
    monitor = DriftMonitor(encoder.encode, replace(config))
    calibration = [planted(f"c{i}", 60, 0, seed=100 + i, first=GARDEN if i % 2 else JAZZ) for i in range(40)]
    record = monitor.calibrate(calibration, target_false_alarms_per_1000_events=5)
    assert record["achieved_false_alarms_per_1000_events"] <= 5
    hits = 0
    for i in range(6):
        history = planted(f"p{i}", 30 + 2 * i, 30, seed=i)
        switch = 30 + 2 * i
        result = monitor.scan(history)
        found = [d for d in result.events if switch <= d.index <= switch + 10]
        hits += bool(found)
        if found:
            assert "jazz" in found[0].moved_to and "gardening" in found[0].moved_from, found[0].explanation
    # the tiny random BERT is another random model in every session (the tokenizers WordPiece trainer picks another
    # vocabulary in every process): it found 4 of 6 in some sessions, 5-6 in others; the real model must find 5.
    # The defaults (mean of event vectors, a sliding reference of 5 windows: twice the recall on the real-data
    # benchmark) raise an alarm 1-3 events before 2 of these 6 toy switches (10 titles a group; the reset after it
    # hides the switch), measured 2026-12-04: 4 of 6 is their bar here
    assert hits >= bar, f"{model}: detected {hits} of 6 planted switches"


def test_explanations_rank_the_terms_whose_share_changed_most():
    before = ["trowel (Gardening)", "seed tray (Gardening)", "jazz record (Jazz)"]
    after = ["jazz album (Jazz)", "jazz record (Jazz)", "swing album (Jazz)"]
    moved_from, moved_to = explain(before, after, 2)
    assert moved_from[0] == "gardening" and moved_to[0] == "jazz"
    assert "the" not in moved_to and "(jazz)" not in moved_to


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
    assert path.relative_to(tmp_path).as_posix() == "interestbert/drift/config.json" and json.loads(path.read_text())["threshold"] == monitor.config.threshold
    again = DriftMonitor.from_pretrained(tmp_path, bag_of_words)
    assert again.config == monitor.config
    old = DriftMonitor.from_pretrained(OLD_MODEL, bag_of_words)  # saved before window_vector: calibrated on text
    assert old.config.threshold == 0.25 and (old.config.window_vector, old.config.reference_windows) == ("text", None)
    uncalibrated = DriftMonitor.from_pretrained(tmp_path / "nothing-here", bag_of_words)
    with pytest.raises(InterestBertError, match="not calibrated"):
        uncalibrated.scan(planted("x", 30, 0, seed=0))


def test_drift_command_writes_scores_events_summary_and_plots(tiny_bert, synthetic_dir, tmp_path, capsys):
    import matplotlib.image

    out = tmp_path / "drift"
    code = main(["drift", "--card", "synthetic-shop", "--data-dir", str(synthetic_dir), "--model", str(tiny_bert),
                 "--output", str(out), "--limit-users", "30", "--plot", "2", "--window", "6",
                 "--target-false-alarms", "20"])
    captured = capsys.readouterr()
    printed, logged = captured.out, captured.err
    assert code == 0, printed + logged
    # status messages are logged to stderr, the command's result to stdout
    assert "the model has no drift calibration" in logged and "training split" in logged, logged
    assert "no drift projection: 0 users besides the 120 calibrating" in logged, logged  # all 120 calibrate
    assert "detections" in printed and "calibrating" not in printed, printed
    scores = pq.read_table(out / "scores.parquet").to_pandas()
    events = pq.read_table(out / "events.parquet").to_pandas()
    summary = json.loads((out / "summary.json").read_text())
    assert scores.user_id.nunique() == 30 and summary["users"] == 30
    assert summary["detections"] == len(events) > 0, summary
    assert set(events.columns) >= {"user_id", "event_index", "score", "moved_from", "moved_to", "explanation"}
    assert (events.score >= summary["threshold"] - 1e-6).all(), (events.score.min(), summary["threshold"])
    assert "against_recorded_switches" in summary and "precision" in (out / "summary.md").read_text()
    assert summary["projection"] is None and summary["score"] == {"centre": True, "reference_windows": 5,
                                                                  "tuning": None}
    assert "the drift score keeps its form (centre=True, reference_windows=5)" in logged, logged
    pngs = sorted((out / "plots").glob("*.png"))
    assert len(pngs) == 2
    for png in pngs:
        image = matplotlib.image.imread(png)
        assert image.shape[0] > 300 and image[..., :3].std() > 0.05, (png, image.shape)  # drawn on, not blank
    assert not [p.name for p in out.rglob(".*")], "no temporary files left"


def test_drift_command_rejects_unknown_users(tiny_bert, synthetic_dir, tmp_path, capsys):
    code = main(["drift", "--card", "synthetic-shop", "--data-dir", str(synthetic_dir), "--model", str(tiny_bert),
                 "--output", str(tmp_path / "d"), "--users", "U0000", "nobody"])
    err = capsys.readouterr().err
    assert code == 2 and "--users" in err and "'nobody'" in err and "Traceback" not in err




# --------------------------------------------------------------------------------------- the learned projection

TASTES = 8  # the first 8 dims say which taste a user has; the other 56 are per-event noise that swamps them


def taste_and_noise(texts, **_):
    """A stand-in encoder whose vectors carry a user's taste (``t3`` in the text: dim 3) weakly and an event's
    own noise (``n1234``: a seeded random vector in the other dims) strongly."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for row, text in enumerate(texts):
        taste, noise = text.split()
        out[row, int(taste[1:])] = 1.0
        out[row, TASTES:] = 8.0 * np.random.default_rng(int(noise[1:])).standard_normal(64 - TASTES) / np.sqrt(56)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def taste_history(user: str, tastes: list[int], lengths: list[int], seed: int) -> History:
    rng = np.random.default_rng(seed)
    events = [Event(f"t{taste} n{rng.integers(10**6)}", f"item of taste {taste}", k)
              for k, taste in enumerate(t for t, n in zip(tastes, lengths) for _ in range(n))]
    return History(user, events)


def recall_at_rate(monitor: DriftMonitor, seed: int) -> float:
    """Calibrated on users of one taste at 20 alarms per 1,000 events, the share of taste changes (at event 40 of
    a held-out user) alarmed within 8 events."""
    rng = np.random.default_rng(seed)
    monitor.calibrate([taste_history(f"c{i}", [int(rng.integers(TASTES))], [60], seed + i) for i in range(60)], 20)
    hits = 0
    for i in range(40):
        a, b = rng.choice(TASTES, 2, replace=False)
        found = monitor.scan(taste_history(f"s{i}", [int(a), int(b)], [40, 30], seed + 100 + i)).events
        hits += any(40 <= d.index <= 48 for d in found)
    return hits / 40


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
        records[weight] = monitor.fit_projection(fit_on, dim=8, steps=150, batch_users=64, lr=1e-2,
                                                 action_weight=weight)
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
        records[weight] = monitor.fit_projection(fit_on, dim=4, steps=150, batch_users=64, lr=1e-2,
                                                 item_weight=weight)
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
    assert streamed and [(d.index, d.score) for d in streamed] == [(d.index, d.score) for d in
                                                                  monitor.scan(history).events]
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
        return History(user, [Event(f"t{taste} n{rng.integers(10**6)}", f"i{rng.integers(100)}", k) for k, taste
                              in enumerate(t for t, n in zip(tastes, lengths) for _ in range(n))])

    for make, encode, kinds, keep in ((shopper_history, faint_noise, 5, True), (blind_items, taste_and_noise, TASTES,
                                                                                  False)):
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
    monitor.fit_projection([taste_history(f"f{i}", [i % TASTES], [30], i) for i in range(80)], dim=8, steps=20,
                           batch_users=32)
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


def test_calibrating_on_the_fly_fits_the_projection_on_other_users_than_it_calibrates_on(tiny_bert, synthetic_data):
    from interestbert.encoder import InterestEncoder, Verbaliser
    from interestbert.inference.drift import ensure_calibrated

    encoder = InterestEncoder.from_pretrained(str(tiny_bert), max_seq_length=64).merge_adapter()
    verbaliser = Verbaliser(synthetic_data, encoder.tokenizer, 64)
    monitor = DriftMonitor(encoder.encode, DriftConfig(window=4, stride=2), separator=verbaliser.separator)
    calibration = ensure_calibrated(monitor, verbaliser, 20, min_events=2000, projection_steps=20,
                                    show_progress_bar=False)
    fitted, calibrated = monitor.config.projection, calibration.record["histories"]
    assert monitor.projection.shape == (32 + 8, 32) and fitted["steps"] == 20, fitted  # the shop's 8 actions
    assert sorted(fitted["actions"])[:3] == ["added to cart", "bought", "rated 1/5"], fitted["actions"]
    assert calibrated >= 20 and fitted["users"] >= 50 and calibrated + fitted["users"] <= 120, (calibrated, fitted)
    assert monitor.calibrated and calibration.record["achieved_false_alarms_per_1000_events"] <= 20
    # a third of the other users was held out of the fit to tune the score's form: too few here (under 50)
    assert fitted["users"] <= 2 * (120 - calibrated) // 3 + 1 and monitor.config.score_tuning is None, fitted
    ensure_calibrated(monitor, verbaliser, 20, min_events=2000, projection=False, reason="again",
                      show_progress_bar=False)
    assert monitor.projection is None and monitor.config.projection is None
    tuning = monitor.config.score_tuning  # without a projection, all the other users tune the form
    assert fitted["users"] < tuning["users"] <= 120 - calibrated and len(tuning["recall"]) == 6, tuning
