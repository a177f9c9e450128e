"""The live recommender: one person's state plus new events in, the batch `recommend`'s answer out, at a cost per
event that does not grow with the history; items added from their text; drift fired once per shift; bad events
refused with nothing changed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import bag_of_words

from interestbert.encoder.drift import DriftConfig, DriftMonitor
from interestbert.inference.live import LiveError, LiveEvent, UserState, card_histories
from interestbert.inference.recommend import recommend_users

USERS = 10


def _batch(live, users, k, scorer, drift_aware):
    """``recommend_users`` over the card, with the live text cache off (so nothing is shared with the live side)."""
    cache, live.encoder.text_cache = live.encoder.text_cache, None
    try:
        return recommend_users(live.encoder, live.verbaliser, users, k, scorer, live.monitor if drift_aware else None)
    finally:
        live.encoder.text_cache = cache


@pytest.mark.parametrize("scorer", ["sequence", "strategy", "text"])
@pytest.mark.parametrize("drift_aware", [False, True])
def test_the_live_answer_is_the_batch_recommend_answer_for_the_same_history(live, synthetic_data, scorer, drift_aware):
    from interestbert.encoder.scoring import scorer_for

    live.scorer = scorer_for(live.encoder, live.verbaliser, scorer)
    users = np.arange(USERS)
    batch = _batch(live, users, 6, scorer, drift_aware)
    histories = card_histories(synthetic_data, [live.verbaliser.users[u] for u in users])
    weights = []
    for row, u in enumerate(users.tolist()):
        user = live.verbaliser.users[u]
        answer = live.recommend(live.state_from_events(user, histories[user]), k=6, drift_aware=drift_aware)
        assert answer.items == [live.verbaliser.item_ids[i] for i in batch.items[row]], (scorer, user)
        np.testing.assert_allclose(answer.scores, batch.scores[row], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(answer.drift_score, batch.drift[row], atol=1e-4, equal_nan=True)
        weights.append(answer.short_term_weight)
        assert answer.scorer == batch.scorer
    if drift_aware:
        assert max(weights) > 0  # the blend was exercised, not only the long-term path


def test_posting_events_one_by_one_gives_the_state_and_answer_of_the_whole_history(live, synthetic_data):
    user = live.verbaliser.users[3]
    history = card_histories(synthetic_data, [user])[user]
    state = UserState(user)
    for item, action, timestamp in history:
        state = live.update(state, [LiveEvent(user, item, timestamp, action)]).state
    whole = live.state_from_events(user, history)
    assert (state.events, state.seen, state.n_events) == (whole.events, whole.seen, whole.n_events)
    assert live.recommend(state, 5).items == live.recommend(whole, 5).items


def test_the_state_is_bounded_and_seen_items_beyond_it_stay_excluded(live):
    live.max_events, live.max_seen = 12, 40
    user, items = "u-long", live.verbaliser.item_ids
    state = live.state_from_events(user, [(items[i % 30], "viewed", 1000 + i) for i in range(200)])
    assert len(state.events) == 12 and len(state.seen) == 30 and state.n_events == 200
    answer = live.recommend(state, k=20)
    assert not set(answer.items) & set(items[:30])  # the 18 seen items older than the stored events too


@pytest.mark.parametrize("scorer", ["sequence", "strategy"])
def test_the_cost_of_one_event_does_not_grow_with_the_history(live, scorer):
    """Texts encoded and positions scored per event at 20 and 400 events of history: the same."""
    from interestbert.encoder.scoring import scorer_for

    live.scorer = scorer_for(live.encoder, live.verbaliser, scorer)
    live.monitor = None
    items = live.verbaliser.item_ids
    calls = []
    forward = live.encoder.model.forward

    def counting(*args, **kwargs):
        calls.append(args[0]["input_ids"].shape)
        return forward(*args, **kwargs)

    live.encoder.model.forward = counting
    seen_positions = []
    head_scores = live.encoder.sequence_head.scores

    def sequence_scores(histories):
        seen_positions.append(histories.shape)
        return head_scores(histories)

    live.encoder.sequence_head.scores = sequence_scores
    costs = {}
    for length in (20, 400):
        state = live.state_from_events(f"u{length}", [(items[(7 * i) % 500], "viewed", i) for i in range(length)])
        live.recommend(state, 10)  # warm: the history's texts are cached
        calls.clear(), seen_positions.clear()
        step = live.update(state, [LiveEvent(state.user_id, items[511], length, "bought")])
        live.recommend(step.state, 10)
        costs[length] = (len(calls), [c[0] for c in calls], list(seen_positions))
        assert all(c[1] <= live.verbaliser.max_seq_length for c in calls)  # within the token budget
    assert costs[20] == costs[400]  # encoder passes, texts per pass, sequence positions scored
    if scorer == "sequence":
        assert costs[20][0] == 0 and costs[20][2] == [(1, 12)]  # no encoder pass: the head's own item vectors
    else:
        horizons = len(live.encoder.horizons)  # one pass over the horizon texts the event changed
        assert costs[20][0] == 1 and costs[20][1] == [horizons]


def test_an_added_item_is_recommended_at_once_and_events_of_it_are_accepted(live):
    from interestbert.encoder.scoring import scorer_for

    live.scorer = scorer_for(live.encoder, live.verbaliser, "text")
    user, items = "u-new", live.verbaliser.item_ids
    state = live.state_from_events(user, [(items[i], "viewed", i) for i in range(8)])
    top = live.recommend(state, 1).items[0]
    with pytest.raises(LiveError, match="not in the catalogue") as refused:
        live.update(state, [LiveEvent(user, "NEW-1", 100, "viewed")])
    assert refused.value.status == 422
    text = live.verbaliser.item_texts[live.verbaliser.item_index[top]]
    assert live.add_items([{"item_id": "NEW-1", "text": text}]) == {"added": 1, "updated": 0}
    assert "NEW-1" in live.recommend(state, 2).items  # its text alone puts it beside the best item
    head, row = live.encoder.head, live.encoder.head.index["NEW-1"]  # and both heads got a row from its text
    torch.testing.assert_close(head.weight[row], head.weight[head.index[top]])
    assert live.encoder.sequence_head.index["NEW-1"] == row and live.encoder.sequence_head.n_items == head.n_items
    assert live.add_items([{"item_id": "NEW-1", "text": "zzz unrelated"}]) == {"added": 0, "updated": 1}
    assert "NEW-1" not in live.recommend(state, 3).items
    after = live.update(state, [LiveEvent(user, "NEW-1", 100, "viewed")]).state
    assert after.events[-1] == ("NEW-1", "viewed", 100) and "NEW-1" not in live.recommend(after, 50).items


def test_a_refused_event_changes_nothing_and_says_why(live):
    items = live.verbaliser.item_ids
    state = live.state_from_events("u1", [(items[0], "viewed", 50)])
    before = state.to_json()
    cases = [
        ([LiveEvent("u1", "nope", 60)], 422, "not in the catalogue"),
        ([LiveEvent("u1", items[1], 60), LiveEvent("u1", items[2], 40)], 409, "older than this user's last"),
        ([LiveEvent("u2", items[1], 60)], 400, "not of this state's user"),
        ([], 400, "no events"),
    ]
    for events, status, words in cases:
        with pytest.raises(LiveError, match=words) as refused:
            live.update(state, events)
        assert refused.value.status == status
    assert state.to_json() == before
    with pytest.raises(LiveError, match="no events yet") as unknown:
        live.recommend(UserState("ghost"), 5)
    assert unknown.value.status == 404


def test_a_shift_fires_one_drift_event_with_its_explanation(live):
    from helpers import GARDEN, JAZZ

    live.monitor = DriftMonitor(bag_of_words, DriftConfig(window=4, stride=2, threshold=0.12), separator="\n")
    live.add_items([{"item_id": f"g{i}", "text": t} for i, t in enumerate(GARDEN)])
    live.add_items([{"item_id": f"j{i}", "text": t} for i, t in enumerate(JAZZ)])
    rng = np.random.default_rng(0)
    sequence = [f"g{i}" for i in rng.integers(0, len(GARDEN), 16)] + [f"j{i}" for i in rng.integers(0, len(JAZZ), 12)]
    state, fired = UserState("u-shift"), []
    for t, item in enumerate(sequence):
        step = live.update(state, [LiveEvent("u-shift", item, t, "viewed")])
        state = step.state
        fired += [(t, e) for e in step.drift_events]
    assert len(fired) == 1, fired
    t, event = fired[0]
    assert 16 <= t < 16 + 4 and event["index"] == t and event["user_id"] == "u-shift"
    assert set(event["moved_to"]) & {w for text in JAZZ for w in text.split()}, event
    answer = live.recommend(state, 3, drift_aware=True)
    assert answer.why["drift"]["index"] == t and "moved from" in answer.why["text"]
