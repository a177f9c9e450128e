"""The verbaliser: budget never exceeded, newest event kept, order kept, as many events as fit, deterministic."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interestbert.encoder import CardData, Verbaliser, load_card
from interestbert.encoder.cards import DataCard

WORDS = [
    "pruning",
    "shears",
    "espresso",
    "beans",
    "tent",
    "lantern",
    "thriller",
    "novel",
    "yoga",
    "mat",
    "Cheese",
    "x",
    "Toy",
    "Story",
    "(1995)",
    "Animation,",
    "Children's",
    "GreenThumb",
    "ultralight",
    "cast-iron",
]
ACTIONS = ["viewed", "bought", "rated 4/5", "added to cart"]


def make_data(card: DataCard, histories: list[list[tuple[int, int]]], titles: list[str]) -> CardData:
    events = {"user_id": [], "item_id": [], "timestamp": [], "action": []}
    for u, history in enumerate(histories):
        for t, (item, action) in enumerate(history):
            events["user_id"].append(f"u{u}")
            events["item_id"].append(f"i{item}")
            events["timestamp"].append(1000 + t)
            events["action"].append(ACTIONS[action])
    items = {
        "item_id": [f"i{i}" for i in range(len(titles))],
        "text": titles,
        "title": titles,
        "category": ["c"] * len(titles),
        "brand": ["b"] * len(titles),
        "price": ["1.00"] * len(titles),
    }
    return CardData(
        card=card,
        events=datasets.Dataset.from_dict(events),
        items=datasets.Dataset.from_dict(items),
        switches=None,
        stats={},
    )


def count(tokenizer, text: str) -> int:
    return len(tokenizer(text)["input_ids"])


titles_st = st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=5).map(" ".join), min_size=1, max_size=8)


@st.composite
def shop(draw):
    titles = draw(titles_st)
    histories = draw(
        st.lists(
            st.lists(
                st.tuples(st.integers(0, len(titles) - 1), st.integers(0, len(ACTIONS) - 1)), min_size=1, max_size=30
            ),
            min_size=1,
            max_size=4,
        )
    )
    return titles, histories


def check_texts(verbaliser: Verbaliser, tokenizer, budget: int, ends=None):
    users = verbaliser.users
    texts = verbaliser.texts(users, ends)
    for k, (user, text) in enumerate(zip(users, texts)):
        n = int(verbaliser.n_events[k]) if ends is None else int(ends[k])
        if n == 0:
            assert text == ""
            continue
        pieces = [verbaliser.event_text(user, p) for p in range(n)]
        # the text is a chronological suffix of the history, never a cut event
        kept = next(s for s in range(n) if verbaliser.separator.join(pieces[s:]) == text)
        assert text.endswith(pieces[-1]), "the newest event is always kept"
        if kept < n - 1:
            assert count(tokenizer, text) <= budget
        if count(tokenizer, pieces[-1]) <= budget:
            assert count(tokenizer, text) <= budget, "budget exceeded"
        if kept > 0:  # dropping was necessary: one more event would not fit
            assert count(tokenizer, verbaliser.separator.join(pieces[kept - 1 :])) > budget
    return texts


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_bert))


@pytest.mark.parametrize("separator", ["\n", " | ", "then"])  # "then" glues words: counts do not add up
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=shop(), budget=st.integers(8, 96))
def test_budget_newest_order_and_maximality(tokenizer, separator, data, budget):
    card = load_card("synthetic-shop")
    card = DataCard(**{**card.__dict__, "separator": separator})
    titles, histories = data
    cd = make_data(card, histories, titles)
    verbaliser = Verbaliser(cd, tokenizer, budget)
    assert verbaliser.additive == (separator != "then")
    texts = check_texts(verbaliser, tokenizer, budget)
    assert Verbaliser(cd, tokenizer, budget).texts() == texts, "deterministic"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=shop(), budget=st.integers(8, 64), seed=st.integers(0, 1000))
def test_history_prefixes_equal_the_truncated_history(tokenizer, data, budget, seed):
    titles, histories = data
    cd = make_data(load_card("synthetic-shop"), histories, titles)
    verbaliser = Verbaliser(cd, tokenizer, budget)
    ends = np.random.default_rng(seed).integers(0, verbaliser.n_events + 1)
    texts = check_texts(verbaliser, tokenizer, budget, ends)
    for k, end in enumerate(ends):
        if end:
            cut = make_data(cd.card, [histories[k][:end]], titles)
            assert Verbaliser(cut, tokenizer, budget).texts() == [texts[k]]


def test_real_tokenizer_on_synthetic_shop(synthetic_data):
    from transformers import AutoTokenizer

    from interestbert.encoder.model import DEFAULT_BASE_MODEL, resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_BASE_MODEL))
    verbaliser = Verbaliser(synthetic_data, tok, 64)
    texts = verbaliser.texts()
    counts = [len(ids) for ids in tok(texts)["input_ids"]]
    assert max(counts) <= 64 and min(counts) > 32  # full: each history is longer than the budget
    assert verbaliser.stats.cut == len(texts) and verbaliser.stats.newest_event_over_budget == 0
    first = texts[0].split("\n")
    assert first[-1] == verbaliser.event_text(verbaliser.users[0], int(verbaliser.n_events[0]) - 1)


def test_a_filtered_card_data_gives_only_its_rows(tokenizer, synthetic_data):
    """`Dataset.filter` keeps the whole table behind an index map; the Verbaliser reads the rows it selects."""
    import dataclasses

    whole = Verbaliser(synthetic_data, tokenizer, 64)
    keep = set(whole.users[1:4])
    events = synthetic_data.events.filter(lambda u: u in keep, input_columns="user_id")
    assert events.data.num_rows == len(synthetic_data.events)  # the trap: the table behind it is the whole one
    part = Verbaliser(dataclasses.replace(synthetic_data, events=events), tokenizer, 64)
    assert part.users == whole.users[1:4] and part.item_ids == whole.item_ids
    assert part.texts() == whole.texts(whole.users[1:4])


def test_newest_event_longer_than_budget_is_kept_whole_and_counted(tokenizer):
    long_title = " ".join(WORDS * 3)
    cd = make_data(load_card("synthetic-shop"), [[(0, 0), (1, 1)]], ["short", long_title])
    verbaliser = Verbaliser(cd, tokenizer, 16)
    (text,) = verbaliser.texts()
    assert text == verbaliser.event_text("u0", 1)
    assert verbaliser.stats.newest_event_over_budget == 1


def test_bad_arguments(tokenizer, synthetic_data):
    with pytest.raises(ValueError, match="at least 8"):
        Verbaliser(synthetic_data, tokenizer, 4)
    verbaliser = Verbaliser(synthetic_data, tokenizer, 32)
    with pytest.raises(ValueError, match="`ends`"):
        verbaliser.texts([verbaliser.users[0]], [10_000])
    with pytest.raises(KeyError, match="no events"):
        verbaliser.text("nobody")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=shop(), budget=st.integers(8, 60), keep=st.integers(1, 5))
def test_max_events_keeps_only_the_newest_events(tokenizer, data, budget, keep):
    titles, histories = data
    verbaliser = Verbaliser(make_data(load_card("synthetic-shop"), histories, titles), tokenizer, budget)
    whole = verbaliser.texts()
    newest = verbaliser.texts(max_events=keep)
    for k, user in enumerate(verbaliser.users):
        n = int(verbaliser.n_events[k])
        pieces = [verbaliser.event_text(user, p) for p in range(n)]
        kept = next(s for s in range(n) if verbaliser.separator.join(pieces[s:]) == newest[k])
        assert n - kept <= keep, "never more than max_events events"
        # within max_events, as many as the budget holds: the same suffix as the whole text, or a longer one cut
        whole_kept = next(s for s in range(n) if verbaliser.separator.join(pieces[s:]) == whole[k])
        assert kept == max(whole_kept, n - keep)
    with pytest.raises(ValueError, match="max_events"):
        verbaliser.texts(max_events=0)
