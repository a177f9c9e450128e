"""Examples from a card: the leave-one-out split in time, and item popularity per split.

For a user with events ``e_0 .. e_{n-1}`` (time order, ties in file order):

- test: target ``e_{n-1}``, history ``e_0 .. e_{n-2}``;
- validation: target ``e_{n-2}``, history ``e_0 .. e_{n-3}``;
- training: targets ``e_1 .. e_{n-3}``, each with the history before it (optionally only the last K per user).

Users with fewer than 3 events cannot be split; they are skipped and counted. An example is three integers:
the user's position in the verbaliser, the history length, and the target's catalogue row; the text is rendered
only when a batch needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from interestbert.encoder.verbalise import Verbaliser

MIN_EVENTS = 3


@dataclass
class Examples:
    """Parallel arrays, one entry per example: ``users`` (verbaliser positions), ``ends`` (history lengths),
    ``targets`` (catalogue rows)."""

    users: np.ndarray
    ends: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, index) -> Examples:
        return Examples(self.users[index], self.ends[index], self.targets[index])


@dataclass
class Split:
    """The leave-one-out split of one card's events."""

    train: Examples
    validation: Examples
    test: Examples
    skipped_users: int  # fewer than MIN_EVENTS events
    n_items: int
    popularity: dict[str, np.ndarray]  # "train", "validation", "test": counts of the events before that target

    def __getitem__(self, name: str) -> Examples:
        if name not in ("train", "validation", "test"):
            raise KeyError(f"split should be train, validation or test, got {name!r}")
        return getattr(self, name)


def leave_one_out(verbaliser: Verbaliser, max_train_prefixes_per_user: int | None = None) -> Split:
    """Builds the split from a verbaliser's events (see the module docstring).

    Args:
        verbaliser: Holds the events, in user and time order.
        max_train_prefixes_per_user: Keep only each user's last K training targets (None: all).
    """
    if max_train_prefixes_per_user is not None and max_train_prefixes_per_user < 0:
        raise ValueError(f"`max_train_prefixes_per_user` should be >= 0 or None, got {max_train_prefixes_per_user}.")
    n = verbaliser.n_events  # (n_users,)
    offsets = verbaliser.offsets
    items = verbaliser.event_items
    ok = np.flatnonzero(n >= MIN_EVENTS)

    def at(users: np.ndarray, ends: np.ndarray) -> Examples:
        return Examples(users, ends, items[offsets[users] + ends])

    test = at(ok, n[ok] - 1)
    validation = at(ok, n[ok] - 2)
    # training targets at positions 1 .. n-3 (position 0 has no history)
    first = np.ones_like(n[ok])
    if max_train_prefixes_per_user is not None:
        first = np.maximum(first, n[ok] - 2 - max_train_prefixes_per_user)
    counts = np.maximum(n[ok] - 2 - first, 0)
    users = np.repeat(ok, counts)
    starts = np.repeat(first, counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    train = at(users, starts + within)

    n_items = len(verbaliser.item_ids)
    before_validation = _counts(verbaliser, ok, n[ok] - 2, n_items)  # the training events
    popularity = {
        "train": before_validation,
        "validation": before_validation,
        "test": _counts(verbaliser, ok, n[ok] - 1, n_items),
    }
    return Split(
        train=train,
        validation=validation,
        test=test,
        skipped_users=int((n < MIN_EVENTS).sum()),
        n_items=n_items,
        popularity=popularity,
    )


def _counts(verbaliser: Verbaliser, users: np.ndarray, ends: np.ndarray, n_items: int) -> np.ndarray:
    """Interactions per item among each user's first ``ends`` events."""
    starts = verbaliser.offsets[users]
    # mark [start, start + end) for each user without a Python loop
    delta = np.zeros(len(verbaliser.event_items) + 1, dtype=np.int64)
    np.add.at(delta, starts, 1)
    np.add.at(delta, starts + ends, -1)
    mask = np.cumsum(delta[:-1]) > 0
    return np.bincount(verbaliser.event_items[mask], minlength=n_items).astype(np.int64)
