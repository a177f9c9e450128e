"""Recommendations: drift-aware blending, the end-of-history drift score, `recommend_users` and the
``recommend`` command (top-k without seen items, long-term and drift-aware)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
from helpers import bag_of_words

from interestbert.encoder.drift import DriftConfig, DriftMonitor, History, histories_from_verbaliser
from interestbert.inference.cli import main


def test_blending_reduces_to_long_term_interest_when_the_score_is_zero():
    from interestbert.inference.recommend import UserVectors, blend

    rng = np.random.default_rng(0)
    long, short = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in rng.standard_normal((2, 4, 16)))
    vectors = UserVectors(long, short, np.array([0.0, np.nan, 0.1, 0.9], np.float32), np.zeros(4, bool))
    mixed = blend(vectors, threshold=0.2, alpha_max=0.8)
    # no drift (or none measurable): the long-term vector itself, bit for bit (a renormalised copy differs in its
    # last bits, which reordered near-tied items against the long-only list in the command test below)
    assert np.array_equal(mixed[:2], long[:2])
    half = 0.4 * short[2] + 0.6 * long[2]
    np.testing.assert_allclose(mixed[2], half / np.linalg.norm(half), atol=1e-6)
    full = 0.8 * short[3] + 0.2 * long[3]  # at and above the threshold: alpha_max
    np.testing.assert_allclose(mixed[3], full / np.linalg.norm(full), atol=1e-6)


def test_recommend_command_writes_top_k_without_seen_items(tiny_bert, synthetic_dir, synthetic_data, tmp_path, capsys):
    out = tmp_path / "recs.parquet"
    base = [
        "recommend",
        "--card",
        "synthetic-shop",
        "--data-dir",
        str(synthetic_dir),
        "--model",
        str(tiny_bert),
        "--k",
        "5",
        "--limit-users",
        "12",
        "--window",
        "6",
        "--target-false-alarms",
        "20",
    ]
    assert main(base + ["--output", str(out), "--drift-aware"]) == 0
    recs = pq.read_table(out).to_pandas()
    assert len(recs) == 60 and recs.groupby("user_id").size().eq(5).all()
    events = synthetic_data.events.to_pandas()
    for user, group in recs.groupby("user_id"):
        assert not set(group.item_id) & set(events[events.user_id == user].item_id)
    assert recs.short_term_weight.between(0, 1).all()
    plain = tmp_path / "plain.parquet"
    assert main(base + ["--output", str(plain)]) == 0  # the default: long-term interest only
    plain_recs = pq.read_table(plain).to_pandas()
    assert (plain_recs.short_term_weight == 0).all() and len(plain_recs) == 60
    still = recs[recs.short_term_weight == 0].user_id.unique()  # no drift: the same list as long-only
    for user in still:
        assert list(recs[recs.user_id == user].item_id) == list(plain_recs[plain_recs.user_id == user].item_id)
    full = tmp_path / "full.parquet"  # --alpha-max: the same calibration, every weight 1 / 0.25 times larger
    assert main(base + ["--output", str(full), "--drift-aware", "--alpha-max", "1"]) == 0
    weights = recs.groupby("user_id").short_term_weight.first()
    full_weights = pq.read_table(full).to_pandas().groupby("user_id").short_term_weight.first()
    assert (weights > 0).any() and weights.max() <= 0.25 + 1e-6
    np.testing.assert_allclose(full_weights.loc[weights.index], weights / 0.25, rtol=1e-5)
    for bad, says in (
        (["--drift-aware", "--alpha-max", "1.5"], "--alpha-max is 1.5"),
        (["--alpha-max", "0.5"], "--drift-aware"),
    ):
        assert main(base + ["--output", str(tmp_path / "bad.parquet")] + bad) != 0
        assert says in capsys.readouterr().err
        assert not (tmp_path / "bad.parquet").exists()


def test_end_of_history_score_is_the_monitor_score_at_the_newest_event(tiny_bert, synthetic_data):
    from transformers import AutoTokenizer

    from interestbert.encoder import Verbaliser
    from interestbert.inference.recommend import TAIL, user_vectors

    class Encoder:
        encode = staticmethod(bag_of_words)

        def encode_histories(self, verbaliser, users, ends, **_):
            return bag_of_words(verbaliser.texts_for_indices(users, ends))

    verbaliser = Verbaliser(synthetic_data, AutoTokenizer.from_pretrained(str(tiny_bert)), 128)
    monitor = DriftMonitor(
        bag_of_words, DriftConfig(window=4, stride=2, threshold=10.0), separator=verbaliser.separator
    )
    users = np.flatnonzero(verbaliser.n_events >= 2 * 4 + TAIL + 1)[:6]
    ends = np.asarray([9, 10, 17, 18, 2 * 4 + TAIL, 2 * 4 + TAIL + 1])  # odd and even lengths, inside the tail
    vectors = user_vectors(Encoder(), verbaliser, monitor, users, ends)
    for k, history in enumerate(histories_from_verbaliser(verbaliser, users, ends)):
        # the newest event is evaluated in a scan that starts where the tail does
        first = monitor.first_evaluated
        shift = (len(history.events) - 1 - first) % 2
        scan = monitor.scan(History(history.user_id, history.events[shift:]))
        assert scan.indices[-1] == len(history.events) - shift - 1
        np.testing.assert_allclose(vectors.score[k], scan.scores[-1], equal_nan=True)
    assert np.isnan(vectors.score[0])  # 9 events: too few for a centred score
    assert not np.isnan(vectors.score[-1])
    np.testing.assert_allclose(np.linalg.norm(vectors.long, axis=1), 1, atol=1e-5)


def test_recommend_users_excludes_seen_items_and_writes_one_row_per_item(tiny_encoder, synthetic_data, tmp_path):
    from interestbert.encoder import StrategyHead, Verbaliser
    from interestbert.encoder.scoring import StrategyHeadScorer
    from interestbert.inference.recommend import recommend_users, write_recommendations

    verbaliser = Verbaliser(synthetic_data, tiny_encoder.tokenizer, 64)
    vectors = tiny_encoder.encode(verbaliser.item_texts)
    tiny_encoder.head = StrategyHead(verbaliser.item_ids, vectors, popularity=np.ones(len(vectors)))
    users = np.array([0, 5, 7])
    recs = recommend_users(tiny_encoder, verbaliser, users, k=4)
    assert recs.scorer == "strategy head" and recs.items.shape == recs.scores.shape == (3, 4)
    assert (
        (np.diff(recs.scores, axis=1) <= 0).all() and np.isnan(recs.drift).all() and (recs.short_term_weight == 0).all()
    )
    for row, u in zip(recs.items, users):
        lo, hi = verbaliser.offsets[u], verbaliser.offsets[u + 1]
        assert not set(row.tolist()) & set(verbaliser.event_items[lo:hi].tolist())
    # the same as the scorer's own top-k on the encoder's interest vectors
    expected, _ = StrategyHeadScorer(tiny_encoder.head, verbaliser, tiny_encoder).topk(users, k=4)
    assert recs.items.tolist() == expected.tolist()

    path = tmp_path / "recs.parquet"
    write_recommendations(path, verbaliser, recs)
    table = pq.read_table(path).to_pydict()
    assert table["rank"] == [1, 2, 3, 4] * 3 and table["user_id"][:4] == [verbaliser.users[0]] * 4
    assert table["item_id"][4] == verbaliser.item_ids[recs.items[1, 0]]
    assert [p.name for p in tmp_path.iterdir()] == ["recs.parquet"]  # no temporary file left


def test_the_sequence_head_blends_its_scores_of_the_newest_window_as_the_drift_score_rises(
    tiny_encoder, synthetic_data
):
    import pytest
    import torch

    from interestbert.encoder import Verbaliser
    from interestbert.encoder.scoring import SequenceHeadScorer
    from interestbert.encoder.sequence import SequenceHead, SequenceOptions
    from interestbert.inference.recommend import drift_scores, recommend_users, short_term_weight

    verbaliser = Verbaliser(synthetic_data, tiny_encoder.tokenizer, 64)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    head = SequenceHead(
        verbaliser.item_ids,
        rng.normal(size=(len(verbaliser.item_ids), 16)).astype(np.float32),
        options=SequenceOptions(dim=8, layers=1, heads=2, dropout=0.0, max_events=12),
    ).eval()
    with torch.no_grad():
        head.item.normal_(0, 0.5)
    users, ends = np.arange(3), np.full(3, 10)
    long = head.scores(head.histories(verbaliser, users, ends))
    newest = head.histories(verbaliser, users, ends)
    newest[:, :-4] = -1  # the newest 4 events alone
    short = head.scores(newest)
    scorer = SequenceHeadScorer(head, verbaliser, short_window=4)
    alpha = np.array([0.0, 0.25, 1.0], np.float32)
    mixed = scorer.scores(users, ends, alpha=alpha)
    assert torch.equal(mixed[0], long[0])  # no drift: the plain scores, bit for bit
    torch.testing.assert_close(mixed[1], 0.75 * long[1] + 0.25 * short[1])
    torch.testing.assert_close(mixed[2], short[2])
    assert not torch.allclose(long[1], short[1])  # the two views differ: the check has teeth
    with pytest.raises(ValueError, match="short_window"):
        SequenceHeadScorer(head, verbaliser).scores(users, ends, alpha=alpha)

    # recommend_users: the drift score at each user's newest event sets the weight, as for the strategy head
    tiny_encoder.sequence_head = head
    try:
        monitor = DriftMonitor(
            bag_of_words,
            DriftConfig(window=4, stride=2, threshold=0.1, alpha_max=0.5, centre=False),
            separator=verbaliser.separator,
        )
        chosen = np.arange(8)
        recs = recommend_users(tiny_encoder, verbaliser, chosen, k=5, monitor=monitor)
        drift, _ = drift_scores(monitor, histories_from_verbaliser(verbaliser, chosen))
        weight = short_term_weight(drift, 0.1, 0.5)
        assert recs.scorer == "sequence head" and (weight > 0).any()
        np.testing.assert_array_equal(recs.short_term_weight, weight)
        np.testing.assert_array_equal(recs.drift, drift)
        expected, _ = SequenceHeadScorer(head, verbaliser, short_window=4).topk(chosen, 5, alpha=weight)
        np.testing.assert_array_equal(recs.items, expected)
        plain = recommend_users(tiny_encoder, verbaliser, chosen, k=5)
        assert not np.array_equal(plain.items[weight > 0], recs.items[weight > 0])  # the blend moved someone
    finally:
        tiny_encoder.sequence_head = None
