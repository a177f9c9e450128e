"""The sequence head: right-aligned histories, causality and padding, learning an order the pooled head cannot
see, save/load and cold start, the text prior and its fit on validation, and the `finetune --sequence_head` ->
evaluate -> recommend path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from interestbert.encoder.sequence import SequenceHead, SequenceOptions, TextPrior, right_aligned
from interestbert.finetune.sequence import SequenceTraining, train_sequence_head, training_sequences

SMALL = SequenceOptions(dim=16, layers=1, heads=2, dropout=0.0, max_events=6)


def small_head(n_items: int = 5, seed: int = 0, **options) -> SequenceHead:
    torch.manual_seed(seed)
    vectors = np.random.default_rng(seed).normal(size=(n_items, 8)).astype(np.float32)
    head = SequenceHead(
        [f"i{k}" for k in range(n_items)],
        vectors,
        popularity=np.arange(n_items),
        options=SequenceOptions(**{**SMALL.__dict__, **options}),
    )
    with torch.no_grad():  # a trained-looking head: non-zero learned item vectors
        head.item.normal_(0, 0.5)
    return head.eval()


def test_right_aligned_histories_cut_and_pad_on_the_left():
    rows = np.array([10, 11, 12, 13, 20, 21])  # user 0: events 0..3, user 1: events 4..5
    offsets = np.array([0, 4, 6])
    got = right_aligned(rows, offsets, users=[0, 1, 0], ends=[4, 1, 2], length=3)
    assert got.tolist() == [[11, 12, 13], [-1, -1, 20], [-1, 10, 11]]


def test_padding_gives_finite_scores_and_attention_is_causal():
    head = small_head()
    with torch.no_grad():
        short = head.scores(torch.tensor([[-1, -1, -1, -1, -1, 3]]))
        assert torch.isfinite(short).all()
        a = head.hidden(torch.tensor([[-1, -1, 0, 1, 2, 3]]))
        b = head.hidden(torch.tensor([[-1, -1, 0, 1, 4, 4]]))
    torch.testing.assert_close(a[:, :4], b[:, :4])  # earlier positions never see later events
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_columns_of_padding_are_skipped_without_changing_a_real_position():
    """Scoring skips the columns that are padding in every history (a short history costs its own length); the
    real positions come out as the whole width computes them (training mode, which never skips, with no dropout)."""
    head = small_head(n_items=7)
    histories = torch.tensor([[-1, -1, -1, 0, 1, 2], [-1, -1, -1, -1, 5, 3], [-1, -1, -1, -1, -1, -1]])
    calls = []
    head.blocks[0].register_forward_hook(lambda module, args, out: calls.append(args[0].shape[1]))
    with torch.no_grad():
        skipped = head.hidden(histories)
        head.train()
        whole = head.hidden(histories)
        head.eval()
    assert calls == [3, 6]  # three columns of padding skipped, then the whole width
    real = histories >= 0
    torch.testing.assert_close(skipped[real], whole[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(skipped[:, -1], whole[:, -1], atol=1e-5, rtol=1e-5)  # even the all-padding row
    with torch.no_grad():  # the newest position alone, its last layer computing no other
        torch.testing.assert_close(head(histories), whole[:, -1], atol=1e-5, rtol=1e-5)
        assert head.hidden(histories, newest_only=True).shape == (3, 1, head.dim)


def test_save_load_round_trip_and_cold_start_rows(tmp_path):
    head = small_head()
    histories = torch.tensor([[-1, -1, 0, 1, 2, 3], [-1, -1, -1, -1, 4, 0]])
    before = head.scores(histories)
    head.save_pretrained(tmp_path)
    loaded = SequenceHead.from_pretrained(tmp_path)
    assert not loaded.training  # loaded to score: no dropout
    torch.testing.assert_close(loaded.scores(histories), before)
    with pytest.raises(ValueError, match="longer than the head's max_events"):
        loaded.scores(torch.zeros(1, 7, dtype=torch.long))
    assert (
        loaded.item_ids == head.item_ids and json.loads((tmp_path / "config.json").read_text())["options"]["dim"] == 16
    )

    text = np.random.default_rng(1).normal(size=(2, 8)).astype(np.float32)
    loaded.add_items(["new1", "new2"], text)
    assert loaded.n_items == 7 and loaded.index["new2"] == 6
    with torch.no_grad():  # a new item is its text alone: no learned part, the catalogue's median bias
        torch.testing.assert_close(loaded.rows()[5:], loaded.project(torch.as_tensor(text)))
        assert torch.all(loaded.bias[5:] == head.bias.median())
        torch.testing.assert_close(loaded.scores(histories)[:, :5], before)  # old items score as before
    with pytest.raises(ValueError, match="already in the sequence head"):
        loaded.add_items(["i0"], text[:1])
    values, index = loaded.topk(histories, k=3, exclude=[[0, 1, 2, 3], [4, 0]])
    assert not set(index[0].tolist()) & {0, 1, 2, 3} and not set(index[1].tolist()) & {4, 0}


def test_the_text_prior_is_the_recency_weighted_text_similarity_scaled_down_by_training_count(tmp_path):
    texts = np.array([[2, 0], [0, 1], [1, 1], [-1, 0]], dtype=np.float32)  # cosines: 0-2 and 1-2 0.707, 0-3 -1
    head = SequenceHead(
        ["a", "b", "c", "d"],
        texts,
        popularity=[0, 10, 30, 0],
        options=SequenceOptions(dim=4, layers=1, heads=1, max_events=4),
    ).eval()
    off = head.scores(torch.tensor([[-1, 3, 0, 1]]))
    head.text_prior = TextPrior(weight=2.0, half_count=10.0, last=2, decay=0.5, power=1.0)  # reads items 0, 1 only
    similarity = head.text_similarity(torch.tensor([[-1, 3, 0, 1], [-1, -1, -1, -1]]))
    # newest (item 1) weight 1, item 0 weight 0.5; the negative cosine to item 3 is clipped to 0
    expected = np.array([0.5 * 1, 1, 1.5 * 0.5**0.5, 0]) / 1.5
    np.testing.assert_allclose(similarity[0].numpy(), expected, rtol=1e-5)
    assert torch.all(similarity[1] == 0)  # an empty history: no prior
    on = head.scores(torch.tensor([[-1, 3, 0, 1]]))
    scaled = expected / (1 + np.array([0, 10, 30, 0]) / 10)
    np.testing.assert_allclose((on - off)[0].detach().numpy(), 2.0 * scaled, rtol=1e-5)

    head.save_pretrained(tmp_path)  # the prior and the counts travel with the head
    loaded = SequenceHead.from_pretrained(tmp_path)
    assert loaded.text_prior == head.text_prior
    torch.testing.assert_close(loaded.scores(torch.tensor([[-1, 3, 0, 1]])), on)
    loaded.add_items(["e"], np.array([[0, 3]], dtype=np.float32))  # a new item: no count, the prior's full weight
    assert loaded.counts[-1] == 0
    assert loaded.prior_term(torch.tensor([[-1, 3, 0, 1]]))[0, -1] == pytest.approx(1 / 1.5)
    with pytest.raises(ValueError, match="0 < decay <= 1"):
        TextPrior(decay=0.0)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="multiple of `heads`"):
        SequenceOptions(dim=10, heads=3)
    with pytest.raises(ValueError, match="dropout"):
        SequenceOptions(dropout=1.0)


@pytest.fixture(scope="module")
def cyclic_card(tmp_path_factory):
    """Users walk a fixed cycle of 40 items from a random start: the next item follows from the order of the
    history alone (popularity is flat: each history is a random run of the cycle)."""
    from helpers import write_card

    folder = tmp_path_factory.mktemp("cyclic")
    n = 40
    items = ["id\tname\tcategory"] + [f"c{k}\titem number {k}\tshop" for k in range(n)]
    rng = np.random.default_rng(0)
    events = ["user\titem\tts\trating"]
    for u in range(120):
        start = int(rng.integers(n))
        for t in range(int(rng.integers(6, 11))):
            events.append(f"u{u}\tc{(start + t) % n}\t{1000 + t}\t5")
    card = write_card(folder, events="\n".join(events) + "\n", items="\n".join(items) + "\n")
    return card, folder / "data"


def test_training_pairs_hold_each_next_event(cyclic_card, tiny_bert):
    from transformers import AutoTokenizer

    from interestbert.encoder import load_card_data
    from interestbert.encoder.verbalise import Verbaliser
    from interestbert.finetune.data import leave_one_out

    card, data_dir = cyclic_card
    verbaliser = Verbaliser(load_card_data(str(card), data_dir), AutoTokenizer.from_pretrained(str(tiny_bert)), 64)
    split = leave_one_out(verbaliser)
    inputs, targets = training_sequences(verbaliser, split, max_events=8)
    u, n = int(split.validation.users[0]), int(split.validation.ends[0])
    events = verbaliser.event_items[verbaliser.offsets[u] : verbaliser.offsets[u] + n]  # the training events
    kept_in, kept_tg = inputs[0][inputs[0] >= 0].tolist(), targets[0][targets[0] >= 0].tolist()
    assert kept_in == events[:-1][-8:].tolist() and kept_tg == events[1:][-8:].tolist()
    assert len(inputs) == len(split.validation)


def test_sequence_head_learns_the_order_of_a_history(cyclic_card, tiny_bert):
    from transformers import AutoTokenizer

    from interestbert.encoder import load_card_data
    from interestbert.encoder.scoring import SequenceHeadScorer
    from interestbert.encoder.verbalise import Verbaliser
    from interestbert.finetune.data import leave_one_out
    from interestbert.finetune.evaluate import evaluate, popularity_scorer

    card, data_dir = cyclic_card
    verbaliser = Verbaliser(load_card_data(str(card), data_dir), AutoTokenizer.from_pretrained(str(tiny_bert)), 64)
    split = leave_one_out(verbaliser)
    vectors = np.random.default_rng(0).normal(size=(len(verbaliser.item_ids), 8)).astype(np.float32)
    options = SequenceOptions(dim=32, layers=1, heads=2, dropout=0.0, max_events=10)
    head, summary = train_sequence_head(
        verbaliser,
        split,
        vectors,
        options,
        SequenceTraining(epochs=60, learning_rate=1e-2, batch_size=32, patience=60),
        show_progress_bar=False,
        print_fn=lambda *_: None,
    )
    test = evaluate(SequenceHeadScorer(head, verbaliser), split.test)
    popularity = evaluate(popularity_scorer(verbaliser, split, "test"), split.test)
    assert summary["log"][-1]["loss"] < summary["log"][0]["loss"] - 0.5
    assert test["ndcg@10"] > 0.8 > popularity["ndcg@10"] + 0.3, (test, popularity)
    # the same seed gives the same head
    again, _ = train_sequence_head(
        verbaliser,
        split,
        vectors,
        options,
        SequenceTraining(epochs=3, learning_rate=1e-2, batch_size=32, patience=60),
        show_progress_bar=False,
        print_fn=lambda *_: None,
    )
    twice, _ = train_sequence_head(
        verbaliser,
        split,
        vectors,
        options,
        SequenceTraining(epochs=3, learning_rate=1e-2, batch_size=32, patience=60),
        show_progress_bar=False,
        print_fn=lambda *_: None,
    )
    for (name, x), (_, y) in zip(again.state_dict().items(), twice.state_dict().items()):
        torch.testing.assert_close(x, y, msg=name)


def test_the_text_prior_is_fitted_on_validation_when_item_texts_predict_the_next_item(cyclic_card, tiny_bert):
    """Item k's text lies at angle k on a circle, so the newest item's text points at the next item: an (almost)
    untrained head gains a lot from the prior and the fit turns it on; the fitted score is what evaluate sees."""
    from transformers import AutoTokenizer

    from interestbert.encoder import load_card_data
    from interestbert.encoder.scoring import SequenceHeadScorer
    from interestbert.encoder.verbalise import Verbaliser
    from interestbert.finetune.data import leave_one_out
    from interestbert.finetune.evaluate import evaluate

    card, data_dir = cyclic_card
    verbaliser = Verbaliser(load_card_data(str(card), data_dir), AutoTokenizer.from_pretrained(str(tiny_bert)), 64)
    split = leave_one_out(verbaliser)
    angle = np.array([2 * np.pi * int(i[1:]) / 40 for i in verbaliser.item_ids])
    circle = np.stack([np.cos(angle), np.sin(angle)], 1).astype(np.float32)
    options = SequenceOptions(dim=16, layers=1, heads=2, dropout=0.0, max_events=10)
    barely = SequenceTraining(epochs=1, learning_rate=1e-6, batch_size=32)
    head, summary = train_sequence_head(
        verbaliser, split, circle, options, barely, show_progress_bar=False, print_fn=lambda *_: None
    )
    prior = summary["text_prior"]
    assert prior["weight"] > 0 and head.text_prior.weight == prior["weight"]
    assert prior["validation_ndcg@10"] > max(0.95, prior["validation_ndcg@10_off"]), prior
    assert evaluate(SequenceHeadScorer(head, verbaliser), split.validation)["ndcg@10"] == pytest.approx(
        prior["validation_ndcg@10"], abs=1e-5
    )
    off, summary = train_sequence_head(
        verbaliser,
        split,
        circle,
        options,
        SequenceTraining(epochs=1, learning_rate=1e-6, batch_size=32, text_prior=False),
        show_progress_bar=False,
        print_fn=lambda *_: None,
    )
    assert off.text_prior == TextPrior() and "text_prior" not in summary


def test_finetune_with_a_sequence_head_then_evaluate_and_recommend(tmp_path, tiny_bert, synthetic_dir, capsys):
    import pyarrow.parquet as pq
    from helpers import tiny_args
    from sentence_transformers import SentenceTransformer

    from interestbert.encoder import InterestEncoder
    from interestbert.finetune import train as train_module
    from interestbert.inference.cli import main

    args = tiny_args(
        tmp_path,
        tiny_bert,
        synthetic_dir,
        max_steps=4,
        eval_steps=4,
        sequence_head=True,
        sequence_dim=16,
        sequence_layers=1,
        sequence_epochs=3,
        sequence_max_events=8,
    )
    results = train_module.finetune(args)
    folder = tmp_path / "out"
    saved = json.loads((folder / "all_results.json").read_text())
    assert saved["sequence_test"]["n"] == 120 and saved["sequence_head"]["epochs"] == 3
    assert results["sequence_test"] == saved["sequence_test"]
    config = json.loads((folder / "interestbert" / "config.json").read_text())
    assert config["sequence_head"]["dim"] == 16 and config["sequence_head"]["n_items"] == 600
    model = InterestEncoder.from_pretrained(folder)
    assert model.sequence_head is not None and model.head is not None
    text = ["viewed: Bamboo watering can by SoilCraft (Gardening)"]
    np.testing.assert_allclose(SentenceTransformer(str(folder)).encode(text), model.encode(text), atol=1e-5)
    capsys.readouterr()

    assert (
        main(
            [
                "evaluate",
                "--model",
                str(folder),
                "--card",
                "synthetic-shop",
                "--data-dir",
                str(synthetic_dir),
                "--output",
                str(tmp_path / "m.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| interestbert (sequence head) |" in out and "| interestbert (strategy head) |" in out
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["interestbert (sequence head)"] == pytest.approx(saved["sequence_test"])

    recs = tmp_path / "recs.parquet"
    assert (
        main(
            [
                "recommend",
                "--model",
                str(folder),
                "--card",
                "synthetic-shop",
                "--data-dir",
                str(synthetic_dir),
                "--output",
                str(recs),
                "--k",
                "5",
                "--limit-users",
                "7",
            ]
        )
        == 0
    )
    assert "(long-term interest only, sequence head;" in capsys.readouterr().out
    table = pq.read_table(recs).to_pydict()
    assert len(table["item_id"]) == 35 and len(set(table["user_id"])) == 7
    assert (
        main(
            [
                "recommend",
                "--model",
                str(folder),
                "--card",
                "synthetic-shop",
                "--data-dir",
                str(synthetic_dir),
                "--output",
                str(recs),
                "--k",
                "5",
                "--limit-users",
                "7",
                "--drift-aware",
                "--no-projection",
                "--no-tune-score",
            ]
        )
        == 0
    )
    assert "(drift-aware, sequence head;" in capsys.readouterr().out
    assert len(pq.read_table(recs).column("short_term_weight")) == 35

    # training again without a sequence head replaces the model and leaves no stale sequence head behind
    train_module.finetune(
        tiny_args(
            tmp_path, tiny_bert, synthetic_dir, max_steps=2, eval_steps=2, do_test=False, overwrite_output_dir=True
        )
    )
    assert not (folder / "interestbert" / "sequence_head").exists()
    assert json.loads((folder / "interestbert" / "config.json").read_text())["sequence_head"] is None
    assert InterestEncoder.from_pretrained(folder).sequence_head is None
