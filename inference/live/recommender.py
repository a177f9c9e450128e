"""The live recommender: a person's state plus new events in, the updated state, top-k items and drift out.

`LiveRecommender` is the library call behind ``interestbert serve``. It holds the model (encoder, heads, drift
monitor) and the catalogue, never a person: each call takes a `UserState` and returns a new one, so the state can
live anywhere (`interestbert.inference.live.store`). Every answer is computed by the batch code itself
(`interestbert.inference.recommend.recommend_users`, `InterestEncoder.encode_histories`, the drift tail of
``recommend --drift-aware``) over a one-person verbaliser made from the state (`Verbaliser.for_history`), so it
equals ``interestbert recommend``'s answer for the same history.

What one event costs does not grow with the history: the state holds a bounded number of events, an event's text
(item x action) is rendered and counted once (a bounded memo), and every text vector comes from the encoder's
bounded `VectorCache`:

- sequence head: no encoder call at all (it reads the item vectors it stores); one small transformer pass over the
  newest ``max_events`` items;
- strategy head / text cosine: one encoder pass over the interest horizons' texts the event changed (all but an
  event text already cached), because a BERT reads the whole token budget at once and its vector cannot be rebuilt
  from cached pieces. This is the one cost that is not near zero; it is bounded by the token budget;
- drift (monitor present): the new window's vector (one encoder call, or none with ``window_vector="mean"`` once
  the event's text is cached) and a replay of the bounded tail.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch.nn import functional as F

from interestbert.encoder.cache import DEFAULT_TEXTS, VectorCache
from interestbert.encoder.drift import histories_from_verbaliser
from interestbert.encoder.errors import InterestBertError, excerpt
from interestbert.encoder.scoring import SequenceHeadScorer, StrategyHeadScorer, TextCosineScorer, scorer_for
from interestbert.inference.recommend import RECENT, TAIL, recommend_users, tail_scans

from .state import LiveEvent, UserState, check_id

MAX_SEEN = 1_000  # distinct items per person never recommended again
PIECES = 100_000  # rendered event texts (item x action) kept
MAX_ITEM_TEXT = 10_000  # characters of an item text given to `add_items`
EXPLAIN_EVENTS = 10  # newest events an explanation looks at


class LiveError(InterestBertError):
    """A request the recommender cannot answer, with the HTTP status the service gives it."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Update:
    """The result of `LiveRecommender.update`: the new state and the drift detections the events fired."""

    state: UserState
    drift_events: list[dict] = field(default_factory=list)
    drift_score: float = float("nan")


@dataclass
class Answer:
    """Top-k for one person: item ids and scores (best first), the drift score at the newest event and the weight
    it gave the newest window (NaN and 0 unless drift-aware), the scorer, and why (`LiveRecommender.explain`)."""

    user_id: str
    items: list[str]
    scores: list[float]
    drift_score: float
    short_term_weight: float
    scorer: str
    why: dict

    def to_dict(self) -> dict:
        return {
            "user_id": self.user_id,
            "items": [{"item_id": i, "score": s} for i, s in zip(self.items, self.scores)],
            "drift_score": None if self.drift_score != self.drift_score else self.drift_score,
            "short_term_weight": self.short_term_weight,
            "scorer": self.scorer,
            "why": self.why,
        }


class LiveRecommender:
    """Answers for one person at a time from their bounded state (module docstring).

    Args:
        encoder: An `InterestEncoder` (merged for inference), frozen here (`InterestEncoder.freeze`); its
            ``text_cache`` is set to a `VectorCache` of ``cache_texts`` texts when it has none.
        verbaliser: The card's `Verbaliser`: its catalogue, event template, tokenizer and token budget (the heads
            must score its catalogue).
        item_fields: The item fields the card's event template reads, one list of values per catalogue row
            (`from_card_data` fills it).
        monitor: A calibrated `DriftMonitor`: events are scanned for drift and ``drift_aware`` answers are possible.
        scorer: ``auto``, ``sequence``, ``strategy`` or ``text`` (`interestbert.encoder.scoring.scorer_for`).
        max_events: Events kept per person (default: the longest stretch any answer reads, `needed_events`); fewer
            make answers differ from the batch ones for long histories.
        max_seen: Distinct items per person excluded from recommendations.
        batch_size: Texts per encoder pass (an answer's changed horizon texts go in one pass).

    Example:
        >>> live = LiveRecommender.from_card_data(encoder, load_card_data("synthetic-shop"))  # doctest: +SKIP
        >>> update = live.update(UserState("u1"), [LiveEvent("u1", "I0042", 1700000000, "viewed")])  # doctest: +SKIP
        >>> live.recommend(update.state, k=10).items  # doctest: +SKIP
    """

    def __init__(
        self,
        encoder,
        verbaliser,
        item_fields: dict[str, list] | None = None,
        monitor=None,
        scorer: str = "auto",
        max_events: int | None = None,
        max_seen: int = MAX_SEEN,
        cache_texts: int = DEFAULT_TEXTS,
        batch_size: int = 64,
    ):
        self.encoder = encoder.freeze()
        self.verbaliser = verbaliser
        if encoder.text_cache is None:
            encoder.text_cache = VectorCache(cache_texts)
        needed = set(verbaliser.card.event_text.variables) - {"action", "item"}
        self.item_fields = {
            name: list((item_fields or {}).get(name, [""] * len(verbaliser.item_ids))) for name in needed
        }
        self.monitor = monitor
        if monitor is not None and not monitor.calibrated:
            raise LiveError("the drift monitor is not calibrated; calibrate it or pass none.")
        self.batch_size = batch_size
        self.scorer = scorer_for(encoder, verbaliser, scorer, batch_size=batch_size)
        self.max_events = max_events or self.needed_events()
        if self.max_events < 1 or max_seen < 1:
            raise LiveError(f"max_events ({self.max_events}) and max_seen ({max_seen}) must be at least 1.")
        self.max_seen = max_seen
        self._pieces: dict[tuple[str, str], tuple[str, int]] = {}
        self._live_items: set[str] = set()  # added here: their head rows come from their text alone
        self._lock = threading.RLock()  # the catalogue and the memos change under it; answers read under it

    @classmethod
    def from_card_data(cls, encoder, data, monitor=None, verbaliser=None, **options) -> LiveRecommender:
        """A recommender over a card's catalogue (`interestbert.encoder.cards.load_card_data`'s ``CardData``;
        ``verbaliser``: the card's, when made already)."""
        from interestbert.encoder.verbalise import Verbaliser

        verbaliser = verbaliser or Verbaliser(data, encoder.tokenizer, encoder.max_seq_length)
        items = data.items.with_format("arrow")[:]
        fields = {
            name: items.column(name).to_pylist() for name in items.column_names if name not in ("item_id", "text")
        }
        live = cls(encoder, verbaliser, fields, monitor, **options)
        # the card's own event texts, rendered and counted already: the memo starts with them
        actions = data.events.with_format("arrow")[:].column("action").to_pylist()
        ids, pieces, tokens = verbaliser.item_ids, verbaliser.pieces, verbaliser.piece_tokens.tolist()
        for item, action, piece in zip(verbaliser.event_items.tolist(), actions, verbaliser.event_piece.tolist()):
            if len(live._pieces) >= PIECES:
                break
            live._pieces.setdefault((ids[item], action), (pieces[piece], tokens[piece]))
        return live

    def warm(self, limit: int | None = None) -> int:
        """Encodes the card's event texts (item x action) into the text cache, at most ``limit`` (default: what the
        cache holds), so that a known item's first event costs no encoder pass; returns how many were new."""
        cache = self.encoder.text_cache
        texts = self.verbaliser.pieces[: cache.max_texts if limit is None else limit]
        before = cache.misses
        self.encoder.encode(texts, batch_size=64)
        return cache.misses - before

    def needed_events(self) -> int:
        """The longest stretch of a history any answer reads: the sequence head's window, the drift tail, the
        longest interest horizon, and the token budget in events (each costs at least one token)."""
        spans = [self.verbaliser.max_seq_length]
        head = self.encoder.sequence_head
        if head is not None:
            spans.append(head.options.max_events)
        if self.monitor is not None:
            spans.append(TAIL + 2 * self.monitor.config.window)
        spans += [n for n, _ in self.encoder.horizons if n is not None]
        return max(spans)

    # ------------------------------------------------------------------------------------------------- events

    def update(self, state: UserState, events: Sequence[LiveEvent]) -> Update:
        """``state`` with ``events`` appended (oldest first, not older than the state's newest event), and the drift
        detections they fired. Nothing changes when an event is refused (`LiveError`): an unknown item (422), a
        timestamp older than the person's last (409), another person's event (400). A detection fires once per
        shift: not again within ``window`` events of the last one."""
        if not events:
            raise LiveError("no events given; send at least one.")
        last = state.last_timestamp
        with self._lock:
            for k, event in enumerate(events):
                if event.user_id != state.user_id:
                    raise LiveError(f"event {k} is of user {excerpt(event.user_id)}, not of this state's user.")
                if event.item_id not in self.verbaliser.item_index:
                    raise LiveError(
                        f"event {k}: item {excerpt(event.item_id)} is not in the catalogue; add it first "
                        "(POST /v1/items, or LiveRecommender.add_items).",
                        422,
                    )
                if last is not None and event.timestamp < last:
                    raise LiveError(
                        f"event {k}: timestamp {event.timestamp} is older than this user's last event ({last}); "
                        "send each user's events in time order.",
                        409,
                    )
                last = event.timestamp
            new = replace(state, events=list(state.events), seen=list(state.seen))
            for event in events:
                new.add(event.item_id, event.action, event.timestamp, self.max_events, self.max_seen)
            if self.monitor is None:
                return Update(new)
            return self._drift(new, first_new=state.n_events)

    def _drift(self, state: UserState, first_new: int) -> Update:
        """Scans the tail as ``recommend --drift-aware`` does; a detection at a new event fires unless one fired
        within the last ``window`` events."""
        monitor = self.monitor
        view = self.view(state)
        scan = tail_scans(monitor, histories_from_verbaliser(view, [0]))[0]
        offset = state.n_events - scan.n_events  # the tail's first event in the whole history
        fired = []
        last = state.last_drift
        for detection in scan.events:
            index = offset + detection.index
            if index < first_new or (last is not None and index - last["index"] < monitor.config.window):
                continue
            last = {
                "index": index,
                "timestamp": detection.timestamp,
                "score": float(detection.score),
                "since_index": offset + detection.since_index,
                "moved_from": list(detection.moved_from),
                "moved_to": list(detection.moved_to),
                "explanation": detection.explanation,
            }
            fired.append(dict(last, user_id=state.user_id))
        state.last_drift = last
        at_newest = len(scan.scores) and scan.indices[-1] == scan.n_events - 1
        return Update(state, fired, float(scan.scores[-1]) if at_newest else float("nan"))

    # ------------------------------------------------------------------------------------------------ answers

    def recommend(self, state: UserState, k: int = 10, drift_aware: bool = False, explain: bool = True) -> Answer:
        """The top-``k`` unseen items for the person now (`recommend_users` on their history), with why."""
        if not state.events:
            raise LiveError(f"user {excerpt(state.user_id)} has no events yet; post one first.", 404)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
            raise LiveError(f"k is {excerpt(k)}; it must be an integer from 1 to 1000.")
        if drift_aware and self.monitor is None:
            raise LiveError(
                "drift_aware needs a drift monitor; serve a model saved with a drift calibration, or start the "
                "service with --calibrate."
            )
        with self._lock:
            view = self.view(state)
            held = set(view.event_items.tolist())
            older = {self.verbaliser.item_index[i] for i in state.seen if i in self.verbaliser.item_index} - held
            recs = recommend_users(
                self.encoder,
                view,
                np.zeros(1, np.int64),
                k + len(older),
                self.scorer.bind(view),
                self.monitor if drift_aware else None,
                batch_size=self.batch_size,
            )
            keep = [j for j, row in enumerate(recs.items[0].tolist()) if row not in older][:k]
            rows = recs.items[0][keep]
            ids = [self.verbaliser.item_ids[r] for r in rows.tolist()]
            why = self.explain(view, state, rows, float(recs.short_term_weight[0])) if explain else {}
        return Answer(
            state.user_id,
            ids,
            [float(s) for s in recs.scores[0][keep]],
            float(recs.drift[0]),
            float(recs.short_term_weight[0]),
            recs.scorer,
            why,
        )

    def interest(self, state: UserState) -> np.ndarray:
        """The person's interest vector now: ``interestbert encode``'s vector of their history (unit norm)."""
        if not state.events:
            raise LiveError(f"user {excerpt(state.user_id)} has no events yet; post one first.", 404)
        with self._lock:
            view = self.view(state)
            return self.encoder.encode_histories(view, np.zeros(1, np.int64), batch_size=self.batch_size)[0]

    @torch.no_grad()
    def explain(self, view, state: UserState, rows: np.ndarray, short_term_weight: float) -> dict:
        """Why these items: for each, the newest event whose item is closest to it in the scorer's item space, the
        newest events that drive the list most, and the last drift (from -> to) when it is recent; in words too."""
        space = self._item_space()
        newest = view.event_items[-EXPLAIN_EVENTS:]
        if not len(rows) or space is None:
            return {"because": [], "drivers": [], "drift": None, "text": ""}
        sim = (space[torch.as_tensor(rows)] @ space[torch.as_tensor(newest)].T).cpu().numpy()  # (k, newest)
        events = state.events[-len(newest) :]
        because = [
            {
                "item_id": self.verbaliser.item_ids[r],
                "event": _event(events[j]),
                "similarity": round(float(sim[i, j]), 4),
            }
            for i, (r, j) in enumerate(zip(rows.tolist(), sim.argmax(axis=1).tolist()))
        ]
        weight = np.clip(sim, 0, None).sum(axis=0)
        order = [j for j in np.argsort(-weight, kind="stable")[:3].tolist() if weight[j] > 0]
        drivers = [_event(events[j]) for j in order]
        drift = (
            state.last_drift if state.last_drift and state.n_events - 1 - state.last_drift["index"] < RECENT else None
        )
        words = []
        if drivers:
            words.append(
                "driven most by the newest events with " + ", ".join(self._title(d["item_id"]) for d in drivers)
            )
        if drift is not None:
            ago = state.n_events - 1 - drift["index"]
            words.append(f"interests {drift['explanation']} {ago} event(s) ago")
            if short_term_weight > 0:
                words.append(f"the newest window weighs {short_term_weight:.0%}")
        return {"because": because, "drivers": drivers, "drift": drift, "text": "; ".join(words)}

    def _title(self, item_id: str) -> str:
        text = self.verbaliser.item_texts[self.verbaliser.item_index[item_id]]
        return text if len(text) <= 60 else text[:57] + "..."

    def _item_space(self) -> torch.Tensor | None:
        """Unit item vectors the explanation compares: the sequence head's item texts, the strategy head's rows,
        or the text scorer's item vectors."""
        scorer = self.scorer
        if isinstance(scorer, SequenceHeadScorer):
            return scorer.head._unit_text()
        if isinstance(scorer, StrategyHeadScorer):
            return F.normalize(scorer.head.weight.detach(), dim=-1)
        if isinstance(scorer, TextCosineScorer):
            return scorer.item_vectors
        return None

    # ---------------------------------------------------------------------------------------------- the view

    def view(self, state: UserState):
        """The one-person `Verbaliser` of the state's events (`Verbaliser.for_history`)."""
        index = self.verbaliser.item_index
        missing = [i for i, _, _ in state.events if i not in index]
        if missing:
            raise LiveError(
                f"user {excerpt(state.user_id)}'s events name item {excerpt(missing[0])}, which this replica's "
                "catalogue lacks; add it (POST /v1/items) or erase the user.",
                409,
            )
        rows = [index[i] for i, _, _ in state.events]
        pieces = [self._piece(item, action, row) for (item, action, _), row in zip(state.events, rows)]
        return self.verbaliser.for_history(
            state.user_id, rows, [p for p, _ in pieces], [t for _, t in pieces], [ts for _, _, ts in state.events]
        )

    def _piece(self, item: str, action: str, row: int) -> tuple[str, int]:
        """An event's text as the card renders it and its token count, from a memo of `PIECES` (item, action), the
        oldest made dropped first."""
        key = (item, action)
        found = self._pieces.get(key)
        if found is not None:  # no LRU reordering: a lookup per event of every answer must stay a dict lookup
            return found
        v = self.verbaliser
        columns = {"action": [action], "item": [v.item_texts[row]]}
        columns.update({name: [values[row]] for name, values in self.item_fields.items()})
        text = v.card.event_text.render_table(columns, 1)[0]
        found = self._pieces[key] = (text, v.count_tokens([text])[0])
        while len(self._pieces) > PIECES:  # the oldest made first
            del self._pieces[next(iter(self._pieces))]
        return found

    # ------------------------------------------------------------------------------------------- the catalogue

    def add_items(self, items: Sequence[dict]) -> dict:
        """Adds or updates catalogue items from their text (``{"item_id", "text", <the card's item fields>}``): new
        ones are recommendable at once, their head rows made from their text alone (cold start, no training); an
        updated item's text changes how its events read and its text vectors (a trained item keeps its learned
        strategy-head row). Returns ``{"added": n, "updated": n}``."""
        records = [self.check_item(value, f"items[{k}]") for k, value in enumerate(items)]
        if len({r["item_id"] for r in records}) != len(records):
            raise LiveError("items: an item id is given twice; send each item once.")
        if not records:
            return {"added": 0, "updated": 0}
        with self._lock:
            vectors = self.encoder.encode([r["text"] for r in records], batch_size=self.batch_size)
            v = self.verbaliser
            new = [j for j, r in enumerate(records) if r["item_id"] not in v.item_index]
            old = [j for j, r in enumerate(records) if r["item_id"] in v.item_index]
            for j in old:
                self._update_item(records[j], vectors[j])
            if new:
                ids = [records[j]["item_id"] for j in new]
                for j in new:
                    v.item_index[records[j]["item_id"]] = len(v.item_ids)
                    v.item_ids.append(records[j]["item_id"])
                    v.item_texts.append(records[j]["text"])
                    for name, values in self.item_fields.items():
                        values.append(records[j].get(name, ""))
                for head in (self.encoder.head, self.encoder.sequence_head):
                    if head is not None:
                        head.add_items(ids, vectors[new])
                if isinstance(self.scorer, TextCosineScorer):
                    more = torch.as_tensor(vectors[new], device=self.scorer.item_vectors.device)
                    self.scorer.item_vectors = torch.cat([self.scorer.item_vectors, more])
                self._live_items.update(ids)
        return {"added": len(new), "updated": len(old)}

    def _update_item(self, record: dict, vector: np.ndarray) -> None:
        v = self.verbaliser
        row = v.item_index[record["item_id"]]
        v.item_texts[row] = record["text"]
        for name, values in self.item_fields.items():
            values[row] = record.get(name, values[row])
        for key in [key for key in self._pieces if key[0] == record["item_id"]]:
            del self._pieces[key]
        vec = torch.as_tensor(vector)
        with torch.no_grad():
            seq = self.encoder.sequence_head
            if seq is not None:
                seq.text[seq.index[record["item_id"]]] = vec.to(seq.text.device)
            head = self.encoder.head
            if head is not None and record["item_id"] in self._live_items:
                head.weight[head.index[record["item_id"]]] = vec.to(head.weight.device) * head.init_scale
            if isinstance(self.scorer, TextCosineScorer):
                self.scorer.item_vectors[row] = vec.to(self.scorer.item_vectors.device)

    def check_item(self, value: object, where: str) -> dict:
        """One item record checked: ``item_id``, ``text`` and only the card's item fields (`LiveError` otherwise)."""
        if not isinstance(value, dict):
            raise LiveError(f"{where}: an item should be an object with item_id and text.")
        check = {"item_id", "text", *self.item_fields}
        unknown = sorted(set(value) - check)
        if unknown:
            raise LiveError(f"{where}: unknown field {excerpt(unknown[0])}; an item has {', '.join(sorted(check))}.")
        try:
            check_id(value.get("item_id"), f"{where}.item_id")
        except InterestBertError as err:
            raise LiveError(str(err)) from None
        text = value.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_ITEM_TEXT:
            raise LiveError(
                f"{where}.text should be the item's text, a non-empty string of at most {MAX_ITEM_TEXT:,} "
                f"characters, got {excerpt(text)}."
            )
        for name in self.item_fields:
            if name in value and not isinstance(value[name], (str, int, float)):
                raise LiveError(f"{where}.{name} should be a string or a number, got {excerpt(value[name])}.")
        return dict(value)

    def state_from_events(self, user_id: str, events: Sequence[tuple[str, str, int]]) -> UserState:
        """A state holding a known history (``(item_id, action, timestamp)``, oldest first), e.g. a card's, without
        drift detections: what the state would be after posting them one by one, bar ``last_drift``."""
        state = UserState(user_id)
        for item, action, timestamp in events:
            state.add(item, action, int(timestamp), self.max_events, self.max_seen)
        return state

    def stats(self) -> dict:
        return {
            "items": len(self.verbaliser.item_ids),
            "items_added_live": len(self._live_items),
            "event_texts": len(self._pieces),
            "text_vectors": self.encoder.text_cache.stats(),
            "max_events": self.max_events,
            "max_seen": self.max_seen,
        }


def _event(event: tuple[str, str, int]) -> dict:
    item, action, timestamp = event
    return {"item_id": item, "action": action, "timestamp": timestamp}


def card_histories(data, users: Sequence[str] | None = None) -> dict[str, list[tuple[str, str, int]]]:
    """Each user's events in a card's data as ``(item_id, action, timestamp)``, oldest first (the order
    `load_card_data` sorted them in)."""
    table = data.events.with_format("arrow")[:]
    wanted = None if users is None else set(users)
    out: dict[str, list] = {}
    columns = [table.column(c).to_pylist() for c in ("user_id", "item_id", "action", "timestamp")]
    for user, item, action, timestamp in zip(*columns):
        if wanted is None or user in wanted:
            out.setdefault(user, []).append((item, action, int(timestamp)))
    return out
