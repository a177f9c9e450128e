"""The scoring layer: target ranks and ties, seen items masked with the target kept, top-k without seen items,
chunking, the four scorers and `scorer_for`, and the same ranks as interestbert 0.1.0 on fixed inputs."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from interestbert.encoder import scoring
from interestbert.encoder.head import StrategyHead
from interestbert.encoder.scoring import (
    PopularityScorer,
    SequenceHeadScorer,
    StrategyHeadScorer,
    TextCosineScorer,
    mask_seen,
    scorer_for,
    seen_rows,
    target_ranks,
)

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "evaluation-0.1.0.json"


def toy_verbaliser(histories: list[list[int]], n_items: int):
    """What a scorer reads of a `Verbaliser`: the catalogue and each user's event items, oldest first."""
    lengths = [len(h) for h in histories]
    return types.SimpleNamespace(
        item_ids=[f"i{k}" for k in range(n_items)],
        item_texts=[f"item {k}" for k in range(n_items)],
        users=[f"u{k}" for k in range(len(histories))],
        n_events=np.asarray(lengths, np.int64),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        event_items=np.asarray([i for h in histories for i in h], np.int64),
    )


def reference_rank(scores: np.ndarray, target: int, seen: set[int]) -> int:
    """The protocol spelt out: seen items (not the target) out; items above the target, plus tied ones before it."""
    kept = [j for j in range(len(scores)) if j == target or j not in seen]
    return sum(scores[j] > scores[target] or (scores[j] == scores[target] and j < target) for j in kept)


def test_target_ranks_break_ties_by_catalogue_order():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.2, 0.2, 0.2], [0.0, 0.4, float("-inf"), 0.1]])
    assert target_ranks(scores, torch.tensor([2, 3, 1])).tolist() == [1, 3, 0]
    assert target_ranks(scores, torch.tensor([0, 0, 2])).tolist() == [0, 0, 3]  # a masked target ranks last


def test_rank_masks_seen_items_but_keeps_a_repeated_target():
    verbaliser = toy_verbaliser([[0, 1, 1], [0, 2, 3], [3, 3, 0]], n_items=5)
    scorer = PopularityScorer([10, 9, 8, 7, 6], verbaliser)
    # user 0 buys item 1 again: 0 is seen (masked), 1 is the target (kept) -> rank 0
    # user 1: 0 and 2 seen -> 1 is above 3 -> rank 1;  user 2: 3 seen, target 0 -> rank 0
    assert scorer.rank([0, 1, 2], [2, 2, 2], [1, 3, 0]).tolist() == [0, 1, 0]
    assert seen_rows(verbaliser, [0], [2], keep=[1])[0].tolist() == [0]
    assert seen_rows(verbaliser, [0], [2])[0].tolist() == [0, 1]


def test_rank_matches_the_protocol_spelt_out_and_does_not_depend_on_chunking(monkeypatch):
    rng = np.random.default_rng(3)
    histories = [rng.integers(0, 12, size=rng.integers(2, 9)).tolist() for _ in range(40)]
    verbaliser = toy_verbaliser(histories, n_items=12)
    counts = rng.integers(0, 4, size=12)  # many ties
    scorer = PopularityScorer(counts, verbaliser)
    users = np.arange(40)
    ends = np.asarray([len(h) - 1 for h in histories])
    targets = np.asarray([h[-1] for h in histories])
    expected = [reference_rank(counts.astype(float), t, set(h[:-1])) for h, t in zip(histories, targets)]
    assert scorer.rank(users, ends, targets).tolist() == expected
    monkeypatch.setattr(scoring, "CHUNK", 7)
    assert scorer.rank(users, ends, targets).tolist() == expected
    with pytest.raises(ValueError, match="one entry per user"):
        scorer.rank(users, ends[:3], targets)


def test_topk_excludes_every_seen_item_and_is_best_first():
    verbaliser = toy_verbaliser([[4, 3], [0], [0, 1, 2, 3, 4]], n_items=6)
    scorer = PopularityScorer([1, 2, 3, 4, 5, 0], verbaliser)
    items, scores = scorer.topk([0, 1, 2], k=3)
    assert items[:2].tolist() == [[2, 1, 0], [4, 3, 2]] and scores[0].tolist() == [3.0, 2.0, 1.0]
    # user 2 has seen all but item 5: it comes first, and what fills the list is seen, scored -inf
    assert items[2, 0] == 5 and scores[2, 0] == 0.0 and np.isneginf(scores[2, 1:]).all()
    items, _ = scorer.topk([0], k=2, ends=[1])  # only the first event (item 4) is history
    assert items.tolist() == [[3, 2]]
    with pytest.raises(ValueError, match="positive integer"):
        scorer.topk([0], k=0)


def test_mask_seen_sets_minus_infinity_in_place():
    scores = torch.zeros(2, 3)
    assert mask_seen(scores, [[0, 2], []]) is scores
    assert torch.isneginf(scores).tolist() == [[True, False, True], [False, False, False]]


def test_interest_scorers_score_given_vectors_without_an_encoder():
    verbaliser = toy_verbaliser([[0, 1], [2, 3]], n_items=4)
    vectors = np.eye(4, 8, dtype=np.float32)
    head = StrategyHead(verbaliser.item_ids, vectors, popularity=[1, 1, 1, 1], init_scale=3.0)
    interest = np.eye(2, 8, k=2, dtype=np.float32)  # user 0 -> item 2, user 1 -> item 3
    strategy = StrategyHeadScorer(head, verbaliser)
    cosine = TextCosineScorer(verbaliser, item_vectors=vectors)
    for scorer in (strategy, cosine):
        assert scorer.rank([0, 1], [2, 1], [2, 3], interest=interest).tolist() == [0, 0]
        assert scorer.topk([0, 1], k=1, ends=[2, 1], interest=interest)[0].tolist() == [[2], [3]]
        assert scorer.topk([0, 1], k=1, interest=interest)[0][1, 0] != 3  # the whole history holds item 3
    torch.testing.assert_close(strategy.scores([0], interest=interest[:1]), head(torch.as_tensor(interest[:1])))
    with pytest.raises(ValueError, match="no encoder"):
        strategy.rank([0], [1], [2])
    with pytest.raises(ValueError, match="needs an encoder"):
        TextCosineScorer(verbaliser)


def test_scorer_for_picks_the_models_best_head_and_refuses_missing_ones():
    verbaliser = toy_verbaliser([[0, 1]], n_items=2)
    head = StrategyHead(verbaliser.item_ids, np.eye(2, 4, dtype=np.float32))
    sequence = types.SimpleNamespace(name="a sequence head")
    encoder = types.SimpleNamespace(
        head=head,
        sequence_head=sequence,
        device="cpu",
        encode=lambda texts, **_: np.eye(len(texts), 4, dtype=np.float32),
    )
    assert type(scorer_for(encoder, verbaliser)) is SequenceHeadScorer
    assert type(scorer_for(encoder, verbaliser, "strategy")) is StrategyHeadScorer
    assert type(scorer_for(encoder, verbaliser, "text")) is TextCosineScorer
    encoder.sequence_head = None
    assert type(scorer_for(encoder, verbaliser)) is StrategyHeadScorer
    with pytest.raises(ValueError, match="no sequence head"):
        scorer_for(encoder, verbaliser, "sequence")
    encoder.head = None
    assert type(scorer_for(encoder, verbaliser)) is TextCosineScorer
    with pytest.raises(ValueError, match="no strategy head"):
        scorer_for(encoder, verbaliser, "strategy")
    with pytest.raises(ValueError, match="one of auto, sequence, strategy, text"):
        scorer_for(encoder, verbaliser, "best")


def golden_inputs(folder):
    """The fixed inputs `tests/data/evaluation-0.1.0.json` was computed on, with interestbert 0.1.0's
    ``ranks_for_interest``, ``sequence_ranks`` and ``popularity_ranks`` (the same code, run there)."""
    from transformers import AutoTokenizer

    from interestbert.encoder import load_card_data
    from interestbert.encoder.cards import synthetic
    from interestbert.encoder.packaged import resolve_model_path
    from interestbert.encoder.sequence import SequenceHead, SequenceOptions
    from interestbert.encoder.verbalise import Verbaliser
    from interestbert.finetune.data import leave_one_out

    synthetic.generate(folder, seed=0, n_users=120, n_items=600)
    data = load_card_data("synthetic-shop", folder)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"))
    verbaliser = Verbaliser(data, tokenizer, 64)
    split = leave_one_out(verbaliser)
    rng = np.random.default_rng(0)
    n = len(verbaliser.item_ids)
    unit = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    head = StrategyHead(
        verbaliser.item_ids, unit(rng.normal(size=(n, 16))), popularity=split.popularity["train"], init_scale=5.0
    )
    interest = unit(rng.normal(size=(len(split.test), 16)))
    item_vectors = unit(rng.normal(size=(n, 16)))
    torch.manual_seed(0)
    sequence = SequenceHead(
        verbaliser.item_ids,
        item_vectors,
        split.popularity["train"],
        SequenceOptions(dim=8, layers=1, heads=2, dropout=0.0, max_events=5),
    )
    with torch.no_grad():
        sequence.item.normal_(0, 0.5)
    return verbaliser, split, head, sequence.eval(), interest, item_vectors


def test_the_same_ranks_and_metrics_as_interestbert_0_1_0(tmp_path):
    from interestbert.finetune.evaluate import evaluate, popularity_scorer

    golden = json.loads(GOLDEN.read_text())
    verbaliser, split, head, sequence, interest, item_vectors = golden_inputs(tmp_path)
    test = split.test
    scorers = {
        "strategy": (StrategyHeadScorer(head, verbaliser), {"interest": interest}),
        "text": (TextCosineScorer(verbaliser, item_vectors=item_vectors), {"interest": interest}),
        "sequence": (SequenceHeadScorer(sequence, verbaliser), {}),
        "popularity": (popularity_scorer(verbaliser, split, "test"), {}),
    }
    assert set(scorers) == set(golden)
    for name, (scorer, inputs) in scorers.items():
        assert scorer.rank_examples(test, **inputs).tolist() == golden[name]["ranks"], name
        metrics = evaluate(scorer, test, ks=(10, 20), **inputs)
        assert metrics.keys() == golden[name]["metrics"].keys()
        for key, value in golden[name]["metrics"].items():
            assert metrics[key] == pytest.approx(value, abs=1e-6), (name, key)
    assert len({tuple(g["ranks"]) for g in golden.values()}) == 4  # four different rankings: the check has teeth
