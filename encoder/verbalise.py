"""Histories to text: each user's events, oldest first, rendered by the card and cut to a token budget.

The budget is measured with the encoder's tokenizer, special tokens included, so the encoder never truncates a
history silently. When a history does not fit, the oldest events are dropped first and an event is never cut in
half; the newest event is always kept. Output is a pure function of the data, the card and the tokenizer.

Speed comes from doing each piece of work once: an event's text depends only on its item and action, so each
distinct (item, action) pair is rendered and tokenised once; the cut for every user (or every history prefix) is a
vectorised binary search over cumulative token counts; the final texts are then tokenised once in a batch to make
the budget exact for tokenizers whose counts do not add up (BPE merges across a separator).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .cards.load import CardData


@dataclass(frozen=True)
class VerbaliserStats:
    """How the budget affected the texts of the last call: users whose history was cut, and users whose newest
    event alone is longer than the budget (kept whole; the encoder truncates it)."""

    texts: int
    cut: int
    newest_event_over_budget: int


class Verbaliser:
    """Turns a card's events into one text per user or per history prefix.

    Args:
        data: Events and items from `load_card_data`.
        tokenizer: The encoder's (fast) tokenizer; budgets are counted with it.
        max_seq_length: Token budget of a text, special tokens included.

    Example:
        >>> v = Verbaliser(load_card_data("synthetic-shop"), encoder.tokenizer, max_seq_length=128)  # doctest: +SKIP
        >>> print(v.text("U0001"))  # doctest: +SKIP
        viewed: Bamboo watering can by SoilCraft (Gardening)
        bought: Ergonomic pruning shears by GreenThumb (Gardening)
    """

    def __init__(self, data: CardData, tokenizer, max_seq_length: int = 256):
        if max_seq_length < 8:
            raise ValueError(f"`max_seq_length` should be at least 8 tokens, got {max_seq_length}.")
        card = data.card
        self.card = card  # the `DataCard` the texts are rendered by
        self.tokenizer = tokenizer
        self.max_seq_length = int(max_seq_length)
        self.separator = card.separator
        self.stats = VerbaliserStats(0, 0, 0)

        # pyarrow tables, no per-row Python objects; through the "arrow" format, which honours an index map (a
        # filtered or selected Dataset keeps its whole table behind one, and `.data` is that whole table)
        events = data.events.with_format("arrow")[:]
        items = data.items.with_format("arrow")[:]
        self.item_ids: list[str] = items.column("item_id").to_pylist()
        self.item_texts: list[str] = items.column("text").to_pylist()
        self.item_index = {item: i for i, item in enumerate(self.item_ids)}

        user_col = events.column("user_id").to_pylist()
        # users are contiguous in `events` (load_card_data sorts by user, then time)
        starts = [0] + [i for i in range(1, len(user_col)) if user_col[i] != user_col[i - 1]]
        self.users: list[str] = [user_col[i] for i in starts]
        self.user_index = {u: i for i, u in enumerate(self.users)}
        self.offsets = np.asarray(starts + [len(user_col)], dtype=np.int64)  # (n_users + 1,)
        self.event_items = np.fromiter(
            (self.item_index[x] for x in events.column("item_id").to_pylist()), dtype=np.int64, count=len(user_col)
        )
        self.timestamps = events.column("timestamp").to_numpy()

        # One text (and one token count) per distinct (item, action).
        actions = events.column("action").to_pylist()
        item_fields = [c for c in items.column_names if c not in ("item_id", "text")]
        columns = {"action": actions}
        needed = set(card.event_text.variables)
        if "item" in needed:
            columns["item"] = [self.item_texts[i] for i in self.event_items]
        for name in item_fields:
            if name in needed:
                values = items.column(name).to_pylist()
                columns[name] = [values[i] for i in self.event_items]
        rendered = card.event_text.render_table(columns, len(actions))
        piece_ids: dict[str, int] = {}
        self.event_piece = np.fromiter(
            (piece_ids.setdefault(t, len(piece_ids)) for t in rendered), dtype=np.int64, count=len(rendered)
        )  # (n_events,)
        self.pieces: list[str] = list(piece_ids)
        self.piece_tokens = np.asarray(self._count_tokens(self.pieces, special=False), dtype=np.int64)
        self.sep_tokens = self._count_tokens([self.separator], special=False)[0]
        self.special_tokens = tokenizer.num_special_tokens_to_add(pair=False)
        self.additive = _counts_add_up(tokenizer, self.separator)
        self._cumulate()

    def _cumulate(self) -> None:
        costs = self.piece_tokens[self.event_piece] + self.sep_tokens
        self._cum = np.concatenate([[0], np.cumsum(costs)])  # (n_events + 1,) cost of events[:k] with separators

    def for_history(
        self, user: str, event_items: np.ndarray, pieces: list[str], piece_tokens: np.ndarray, timestamps: np.ndarray
    ) -> Verbaliser:
        """A verbaliser of one user's history (``event_items``: catalogue rows, oldest first; ``pieces``: each
        event's text, ``piece_tokens`` its token count without special tokens), sharing this one's card, tokenizer,
        budget and catalogue: every batch path (`InterestEncoder.encode_histories`, the scorers, the drift tail)
        then reads it exactly as it reads the card's verbaliser. `interestbert.inference.live` builds one per
        answer from a person's stored events."""
        view = object.__new__(Verbaliser)
        view.__dict__.update(self.__dict__)  # catalogue, tokenizer and budget: shared, never copied
        view.users, view.user_index = [user], {user: 0}
        view.offsets = np.asarray([0, len(event_items)], dtype=np.int64)
        view.event_items = np.asarray(event_items, dtype=np.int64)
        view.timestamps = np.asarray(timestamps, dtype=np.int64)
        view.pieces = list(pieces)
        view.event_piece = np.arange(len(view.pieces), dtype=np.int64)
        view.piece_tokens = np.asarray(piece_tokens, dtype=np.int64)
        view.stats = VerbaliserStats(0, 0, 0)
        view._cumulate()
        return view

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Each text's token count without special tokens (how `for_history` wants ``piece_tokens``)."""
        return self._count_tokens(list(texts), special=False)

    # ------------------------------------------------------------------------------------------------ public

    @property
    def n_events(self) -> np.ndarray:
        """Number of events of each user, in `users` order."""
        return np.diff(self.offsets)

    def text(self, user: str, end: int | None = None) -> str:
        """The text of ``user``'s history up to (not including) event ``end`` (default: the whole history)."""
        return self.texts([user], None if end is None else [end])[0]

    def texts(
        self,
        users: Sequence[str] | None = None,
        ends: Sequence[int] | np.ndarray | None = None,
        max_events: int | None = None,
    ) -> list[str]:
        """Texts for many users (default: all, in `users` order), each cut to the budget.

        Args:
            users: User ids; may repeat (one text per history prefix).
            ends: For each user, how many of their events the history holds (a prefix); default all.
            max_events: Keep at most the newest N events of each history (None: as many as the budget holds).
        """
        idx = np.arange(len(self.users)) if users is None else np.asarray([self._user(u) for u in users], np.int64)
        return self.texts_for_indices(idx, ends, max_events)

    def texts_for_indices(
        self, user_idx: np.ndarray, ends: Sequence[int] | np.ndarray | None = None, max_events: int | None = None
    ) -> list[str]:
        """Like `texts`, with users as positions in `users`."""
        if max_events is not None and max_events < 1:
            raise ValueError(f"`max_events` should be at least 1 or None, got {max_events}.")
        user_idx = np.asarray(user_idx, dtype=np.int64)
        first = self.offsets[user_idx]
        stop = self.offsets[user_idx + 1]
        if ends is not None:
            ends = np.asarray(ends, dtype=np.int64)
            if ends.shape != user_idx.shape or (ends < 0).any() or (first + ends > stop).any():
                raise ValueError("`ends` must hold one prefix length per user, between 0 and the user's event count.")
            stop = first + ends
        if max_events is not None:
            first = np.maximum(first, stop - max_events)
        start = self._starts(first, stop, self.max_seq_length)
        texts = [self._join(a, b) for a, b in zip(start.tolist(), stop.tolist())]
        if self.additive:
            counts = self._cum[stop] - self._cum[start] - self.sep_tokens * (stop > start) + self.special_tokens
        else:  # count exactly: the estimate can be off both ways when tokens merge across the separator
            counts = self._exact_cut(texts, start, first, stop)
        self.stats = VerbaliserStats(
            texts=len(texts),
            cut=int((start > first).sum()),
            newest_event_over_budget=int((counts > self.max_seq_length).sum()),
        )
        return texts

    def _exact_cut(self, texts: list[str], start: np.ndarray, first: np.ndarray, stop: np.ndarray) -> np.ndarray:
        """Moves each ``start`` (in place, with ``texts``) to the oldest event that really fits; returns counts."""
        budget = self.max_seq_length
        counts = np.asarray(self._count_tokens(texts, special=True), dtype=np.int64)
        over = np.flatnonzero((counts > budget) & (stop - start > 1))
        while over.size:  # drop the oldest event until it fits
            start[over] += 1
            for i in over.tolist():
                texts[i] = self._join(start[i], stop[i])
            counts[over] = self._count_tokens([texts[i] for i in over.tolist()], special=True)
            over = over[(counts[over] > budget) & (stop[over] - start[over] > 1)]
        grow = np.flatnonzero((counts <= budget) & (start > first))
        while grow.size:  # add older events while they still fit
            longer = [self._join(start[i] - 1, stop[i]) for i in grow.tolist()]
            new_counts = np.asarray(self._count_tokens(longer, special=True), dtype=np.int64)
            fits = new_counts <= budget
            for i, text in zip(grow[fits].tolist(), [t for t, f in zip(longer, fits) if f]):
                texts[i] = text
            start[grow[fits]] -= 1
            counts[grow[fits]] = new_counts[fits]
            grow = grow[fits & (start[grow] > first[grow])]
        return counts

    def event_text(self, user: str, position: int) -> str:
        """The text of one event of ``user``."""
        u = self._user(user)
        return self.pieces[self.event_piece[self.offsets[u] + position]]

    # ------------------------------------------------------------------------------------------------ internals

    def _user(self, user: str) -> int:
        try:
            return self.user_index[str(user)]
        except KeyError:
            raise KeyError(f"user {user!r} has no events in this data") from None

    def _starts(self, first: np.ndarray, stop: np.ndarray, budget: int) -> np.ndarray:
        """The oldest event each text can keep: the smallest ``start`` with cost(events[start:stop]) <= budget,
        never past ``stop - 1`` (the newest event is kept)."""
        # cost(start, stop) = cum[stop] - cum[start] - sep + special  <=  budget
        threshold = self._cum[stop] - self.sep_tokens + self.special_tokens - budget
        start = np.searchsorted(self._cum, threshold, side="left")
        return np.clip(start, first, np.maximum(stop - 1, first))

    def _join(self, start: int, stop: int) -> str:
        pieces = self.pieces
        return self.separator.join([pieces[p] for p in self.event_piece[start:stop].tolist()])

    def _count_tokens(self, texts: list[str], special: bool) -> list[int]:
        if not texts:
            return []
        enc = self.tokenizer(
            texts, add_special_tokens=special, return_attention_mask=False, return_token_type_ids=False, verbose=False
        )
        return [len(ids) for ids in enc["input_ids"]]


def _counts_add_up(tokenizer, separator: str) -> bool:
    """True when the token count of ``a + separator + b`` is always count(a) + count(separator) + count(b).

    That holds for BERT's pre-tokenizer (it splits at whitespace and punctuation, and its normaliser is per
    character) when the separator begins and ends with whitespace or punctuation, so no token spans a boundary.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    if type(pre).__name__ != "BertPreTokenizer":
        return False
    import unicodedata

    def splits(ch: str) -> bool:
        return ch.isspace() or unicodedata.category(ch).startswith("P") or (ch.isascii() and not ch.isalnum())

    return splits(separator[0]) and splits(separator[-1])
