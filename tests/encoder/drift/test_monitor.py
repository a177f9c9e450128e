"""DriftMonitor: batch and streaming agree, planted switches are found and explained, short histories and late
events are handled (drift-aware recommendation: tests/inference/test_recommend.py)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import GARDEN, JAZZ, bag_of_words, planted

from interestbert.encoder.drift import DriftConfig, DriftMonitor, Event, History, explain, sort_events


@pytest.mark.parametrize(
    "config",
    [
        DriftConfig(window=6, stride=2, threshold=0.35),
        DriftConfig(window=4, stride=2, threshold=0.2, reference_windows=3),
        DriftConfig(window=4, stride=2, threshold=0.3, window_vector="mean", reference_windows=5, centre=False),
    ],
    ids=["window text, whole segment", "sliding reference", "mean of event vectors"],
)
def test_batch_and_streaming_give_the_same_detections(config):
    monitor = DriftMonitor(bag_of_words, config)
    histories = [planted(f"u{i}", 20 + i, 25, seed=i) for i in range(5)] + [planted("flat", 60, 0, seed=9)]
    for history in histories:
        batch = monitor.scan(history)
        streamed = [monitor.update(history.user_id, e) for e in history.events]
        streamed = [d for d in streamed if d is not None]
        assert [(d.index, d.score, d.moved_to) for d in streamed] == [
            (d.index, d.score, d.moved_to) for d in batch.events
        ]
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
    monitor = DriftMonitor(counting, DriftConfig(window=4, stride=2, threshold=9.0, window_vector="mean", centre=False))
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
        earlier = list(range(first, i - 3, 2))[-k if k else 0 :]
        reference = sum(unit(vectors[j - 3 : j + 1].sum(0)) for j in earlier)
        expected = 1 - unit(vectors[i - 3 : i + 1].sum(0)) @ unit(reference)
        got.append(result.scores[list(result.indices).index(i)])
        assert got[-1] == pytest.approx(expected, abs=1e-5)
    assert len(earlier) == 3 and len(range(first, i - 3, 2)) > 3 and abs(got[0] - got[1]) > 1e-3
    with pytest.raises(ValueError, match="window_vector"):
        DriftConfig(window_vector="sum")
    with pytest.raises(ValueError, match="reference_windows"):
        DriftConfig(reference_windows=0)


def test_streaming_memo_of_event_texts_is_bounded(monkeypatch):
    from interestbert.encoder import drift

    monkeypatch.setattr(drift.vectors, "MEMO_TEXTS", 7)
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


@pytest.mark.parametrize(
    "model, config, bar",
    [("tiny", TEXT_WHOLE_SEGMENT, 4), ("packaged", TEXT_WHOLE_SEGMENT, 5), ("packaged", DriftConfig(), 4)],
    ids=["tiny, window text", "packaged, window text", "packaged, defaults"],
)
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
