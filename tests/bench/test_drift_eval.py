"""The drift benchmark's streams and scorer (`interestbert.encoder.drift.streams` and `benchmarks/drift_eval.py`):
streams built as the design says, a scorer that counts what it should, and content-free detectors at chance."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import REPO
from scipy import stats

sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmarks import each other by file name

from drift_eval import (  # noqa: E402
    DESIGNS,
    Stream,
    StreamDesign,
    best_content_free,
    bootstrap,
    calibrate_threshold,
    downstream_queries,
    event_scores,
    fixed_alarms,
    forward_fill,
    headroom_interval,
    headroom_recovered,
    js_divergence,
    ndcg_at,
    next_item_ranks,
    outcomes,
    periodic_alarms,
    random_alarms,
    renewal_streams,
    score_alarms,
    segment_lengths,
    split_users,
    threshold_alarms,
)

from interestbert.encoder.drift.events import Event, History

P1 = DESIGNS["movielens-1m"]


def users(n: int = 240, seed: int = 0, lo: int = 100, hi: int = 500) -> list[History]:
    """Users whose events carry their user and position, so a stream's events can be traced back; each user
    favours one of six categories (the item text's first word)."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(n):
        length = int(rng.integers(lo, hi))
        favourite = u % 6
        cats = np.where(rng.random(length) < 0.8, favourite, rng.integers(0, 6, length))
        stamps = np.cumsum(rng.integers(1, 1000, length)) + 10**9
        out.append(
            History(f"u{u}", [Event(f"u{u}:{i}", f"c{c} item", int(t)) for i, (c, t) in enumerate(zip(cats, stamps))])
        )
    return out


def category(event: Event) -> list[str]:
    return [event.item_text.split()[0]]


def test_segments_follow_the_design():
    rng = np.random.default_rng(0)
    lengths = [segment_lengths(10**6, P1, rng) for _ in range(2)]
    whole = np.concatenate([x[:-1] for x in lengths])  # the last one of a stream is cut
    assert whole.min() == P1.min_segment
    assert np.mean(whole) == pytest.approx(P1.min_segment + P1.extra_mean, rel=0.03)
    # the geometric part: memoryless, so a change is as likely at every event once the minimum has passed
    extra = whole - P1.min_segment
    assert np.mean(extra[extra >= 40] - 40) == pytest.approx(np.mean(extra), rel=0.08)
    short = segment_lengths(30, StreamDesign((30, 30), 20, 40, 20, 8, 100), np.random.default_rng(1))
    assert sum(short) == 30 and short[0] >= 20


def test_a_spliced_stream_is_other_users_events_at_random_offsets():
    pool = users()
    spliced, controls = renewal_streams(pool, 150, P1, seed=3, categories=category)
    by_id = {h.user_id: h for h in pool}
    offsets, starts = [], []
    for s in spliced:
        assert P1.length[0] <= len(s.events) <= P1.length[1]
        ids = [u for u, _, _ in s.segments]
        assert len(set(ids)) == len(ids)  # every segment another user
        assert s.changes == np.cumsum([n for _, _, n in s.segments])[:-1].tolist()
        assert all(n >= P1.min_segment for _, _, n in s.segments[:-1])
        stamps = [e.timestamp for e in s.events]
        assert all(b > a for a, b in zip(stamps, stamps[1:]))  # each segment continues the one before
        at = 0
        for u, offset, n in s.segments:
            source = by_id[u].events[offset : offset + n]
            assert [e.text for e in s.events[at : at + n]] == [e.text for e in source]
            gaps = np.diff([e.timestamp for e in source])
            assert np.diff(stamps[at : at + n]).tolist() == gaps.tolist()  # spacing kept
            offsets.append(offset / max(1, len(by_id[u].events) - n))
            at += n
        starts += s.changes
        assert len(s.magnitudes) == len(s.changes) and all(0 <= m <= 1 for m in s.magnitudes)
    assert 0.4 < np.mean(offsets) < 0.6  # uniform offsets, not users' first events
    assert np.mean([len(s.changes) for s in spliced]) == pytest.approx(3, abs=0.8)
    # controls: one user each, the same length distribution as the spliced streams (fixed seed)
    assert all(s.control and len(s.segments) == 1 for s in controls)
    test = stats.ks_2samp([len(s.events) for s in spliced], [len(s.events) for s in controls])
    assert test.pvalue > 0.01, test
    same_user = np.mean([c.segments[0][0] == s.segments[0][0] for s, c in zip(spliced, controls)])
    assert same_user > 0.6  # mostly the first segment's own user


def test_magnitude_is_high_across_favourites_and_low_within():
    assert js_divergence({"a": 5}, {"a": 3}) == 0.0
    assert js_divergence({"a": 5}, {"b": 3}) == pytest.approx(1.0)
    spliced, _ = renewal_streams(users(), 80, P1, seed=1, categories=category)
    differ, same = [], []
    for s in spliced:
        for k in range(len(s.changes)):
            a, b = s.segments[k][0], s.segments[k + 1][0]
            (same if int(a[1:]) % 6 == int(b[1:]) % 6 else differ).append(s.magnitudes[k])
    assert np.mean(differ) > 3 * np.mean(same)


def test_users_split_into_disjoint_pools():
    pool = users(120, lo=40, hi=160)
    splits = split_users(pool, P1, seed=0)
    ids = [{h.user_id for h in part} for part in splits.values()]
    assert sum(map(len, ids)) == len(set().union(*ids)) == sum(len(h.events) >= 100 for h in pool)
    assert all(abs(len(i) - len(ids[0])) <= 1 for i in ids)
    assert split_users(pool, P1, seed=0)["tune"][0].user_id == splits["tune"][0].user_id  # seeded


def stream(changes, n=100, sid="s") -> Stream:
    return Stream(sid, [Event(str(i), "x", i) for i in range(n)], list(changes), [], [0.5] * len(changes))


def test_the_scorer_counts_hits_margins_and_false_alarms():
    design = StreamDesign((100, 100), 20, 40, warmup=20, margin=8, min_user_events=1)
    s, c = stream([30, 60]), stream([], sid="c")
    cases = {  # alarms on s -> (hits, false positives)
        (30,): (1, 0),
        (38,): (1, 0),
        (39,): (0, 1),
        (29,): (0, 1),  # the margin's edges: [t, t + M]
        (31, 33): (1, 1),  # one hit per change
        (10, 30, 62): (2, 0),  # before the warm-up: not scored
        (): (0, 0),
    }
    for alarms, (hits, false_pos) in cases.items():
        got = score_alarms({"s": list(alarms)}, [s, c], design)
        assert (got["hits"], got["changes"]) == (hits, 2), alarms
        assert outcomes({"s": list(alarms)}, [s], design)[0].false_positives == false_pos, alarms
    got = score_alarms({"s": [30, 64], "c": [5, 50, 90]}, [s, c], design)
    assert got["false_alarms_per_1000"] == pytest.approx(1000 * 2 / 80)  # 80 scored control events
    assert got["median_delay"] == 2.0 and got["precision"] == 1.0 and got["recall"] == 1.0
    assert score_alarms({"s": [25]}, [s], design)["hits"] == 0
    assert score_alarms({"s": [25, 55]}, [s], design, early=5)["hits"] == 2  # offline: [t - early, t + M]


def test_a_continuous_score_is_thresholded_with_a_refractory_period_and_calibrated_to_the_budget():
    design = StreamDesign((100, 100), 20, 40, warmup=20, margin=8, min_user_events=1)
    series = {"a": np.array([np.nan] * 20 + [0.1, 0.9, 0.95, 0.2, 0.9] + [0.0] * 75)}
    assert threshold_alarms(series, 0.9, refractory=2, warmup=20) == {"a": [21, 24]}
    assert threshold_alarms(series, 0.9, refractory=3, warmup=20) == {"a": [21]}
    rng = np.random.default_rng(0)
    controls = [stream([], n=220, sid=f"c{k}") for k in range(50)]
    noise = {c.stream_id: rng.random(220) for c in controls}
    for budget in (5.0, 20.0):
        thr = calibrate_threshold(noise, controls, design, budget, refractory=4)
        got = score_alarms(threshold_alarms(noise, thr, 4, 20), controls, design)["false_alarms_per_1000"]
        below = max(v for c in controls for v in noise[c.stream_id][20:] if v < thr)  # the next score down
        lower = score_alarms(threshold_alarms(noise, below, 4, 20), controls, design)
        assert got <= budget < lower["false_alarms_per_1000"]  # the lowest threshold within the budget


def test_event_scores_and_bootstrap():
    design = StreamDesign((100, 100), 20, 40, warmup=20, margin=8, min_user_events=1)
    streams = [stream([30 + k, 70], sid=f"s{k}") for k in range(20)] + [stream([], sid=f"c{k}") for k in range(20)]
    perfect = {
        s.stream_id: np.isin(np.arange(100), [i for t in s.changes for i in range(t, t + 9)]).astype(float)
        for s in streams
    }
    assert event_scores(perfect, streams, design)["auc"] == 1.0
    position = {s.stream_id: np.arange(100, dtype=float) for s in streams}
    assert event_scores(position, streams, design)["auc"] == pytest.approx(0.5, abs=0.1)
    filled = forward_fill([21, 23], [0.1, 0.7], 26)
    assert np.isnan(filled[:21]).all() and filled[22] == 0.1 and filled[25] == 0.7
    good = outcomes({s.stream_id: s.changes for s in streams}, streams, design)
    half = outcomes({s.stream_id: s.changes[:1] for s in streams}, streams, design)
    res = bootstrap({"good": good, "half": half}, reference="half", n=200)
    assert res["good"]["value"] == 1.0 and res["half"]["value"] == 0.5
    assert res["half"]["low"] < 0.5 < res["half"]["high"] or res["half"]["low"] == res["half"]["high"] == 0.5
    assert res["good"]["ratio"] == 2.0 and res["good"]["ratio_low"] > 1.0


def test_content_free_detectors_score_at_chance():
    """On renewal streams, what knows only positions (the best fixed index or period fitted on tuning streams,
    or random alarms) finds no more changes than chance at the budget: the benchmark's own guard."""
    splits = split_users(users(300, seed=4), P1, seed=0)
    tune, _ = renewal_streams(splits["tune"], 150, P1, seed=1)
    evaluate, controls = renewal_streams(splits["evaluate"], 150, P1, seed=2)
    budget = 5.0
    setting, _ = best_content_free(tune + renewal_streams(splits["tune"], 150, P1, seed=5)[1], P1, budget)
    if setting.startswith("fixed"):
        alarms = fixed_alarms(evaluate + controls, int(setting.split()[1]))
    else:
        period, phase = int(setting.split()[1]), int(setting.split()[3]) - P1.warmup
        alarms = periodic_alarms(evaluate + controls, period, phase, P1)
    content_free = score_alarms(alarms, evaluate + controls, P1)
    chance = 1 - (1 - budget / 1000) ** (P1.margin + 1)  # a random alarm rate's recall
    rand = score_alarms(random_alarms(evaluate + controls, budget, P1), evaluate + controls, P1)
    assert rand["false_alarms_per_1000"] == pytest.approx(budget, rel=0.35)
    assert rand["recall"] < 3 * chance and content_free["recall"] < 3 * chance, (setting, content_free, chance)
    assert content_free["false_alarms_per_1000"] < 3 * budget


def item_stream(items: list[str], changes: list[int], sid: str = "s") -> Stream:
    return Stream(sid, [Event(f"viewed {x}", x, 10**9 + i) for i, x in enumerate(items)], changes)


def test_downstream_queries_stay_inside_the_new_segment():
    spliced = item_stream(["a"] * 60, [30, 50])
    assert downstream_queries([spliced]) == [(0, 30, j) for j in (2, 4, 6, 8, 10)] + [(0, 50, j) for j in (2, 4, 6, 8)]
    control = item_stream(["a"] * 39, [], "c")
    # a control gets one pseudo-change drawn from the spliced streams' positions, queried at the same offsets
    assert downstream_queries([control], pseudo_changes=[33]) == [(0, 33, j) for j in (2, 4)]
    assert downstream_queries([control]) == []


def test_next_item_ranks_exclude_earlier_items_keep_the_target_and_break_ties_by_row():
    row_of = {"a": 0, "b": 1, "c": 2, "d": 3}
    items = np.eye(4, dtype=np.float32)
    stream = item_stream(["a", "c", "b", "a", "d"], [1])
    interest = np.array(
        [
            [0.9, 0.5, 0.8, 0.1],  # query (t=1, j=1): event 2 ("b") after "a", "c" (excluded)
            [0.9, 0.5, 0.8, 0.1],  # query (t=1, j=2): event 3 ("a"), seen before: kept, rank 0
            [0.3, 0.3, 0.3, 0.3],
        ]
    )  # query (t=1, j=3): event 4 ("d"), a tie with nothing left
    ranks = next_item_ranks(interest, items, [stream], [(0, 1, 1), (0, 1, 2), (0, 1, 3)], row_of)
    assert ranks.tolist() == [0, 0, 0]
    tie = next_item_ranks(np.full((1, 4), 0.5, np.float32), items, [item_stream(["a", "d"], [1])], [(0, 1, 0)], row_of)
    assert tie.tolist() == [2]  # "d" ties "b" and "c" (rows 1, 2 before it); "a" was seen
    np.testing.assert_allclose(ndcg_at(np.array([0, 1, 9, 10])), [1, 1 / np.log2(3), 1 / np.log2(11), 0])


def test_headroom_is_the_share_of_the_oracle_gain_and_its_interval_covers_it():
    queries = [(k, 20, j) for k in range(30) for j in (2, 4)]
    rng = np.random.default_rng(0)
    long = rng.random(len(queries)) * 0.2
    ndcg = {"long-only": long, "oracle reset": long + 0.2, "half": long + 0.1, "none": long}
    assert headroom_recovered(ndcg, "half") == pytest.approx(0.5)
    assert headroom_recovered(ndcg, "none") == 0 and headroom_recovered(ndcg, "oracle reset") == pytest.approx(1)
    assert np.isnan(headroom_recovered({"long-only": long, "oracle reset": long, "x": long}, "x"))
    noisy = dict(ndcg, half=long + 0.1 + rng.normal(0, 0.05, len(queries)))
    low, high = headroom_interval(noisy, queries, "half", n=300)
    assert low < headroom_recovered(noisy, "half") < high and 0.2 < low and high < 0.8
