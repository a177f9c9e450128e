"""The drift monitor's learned projection, as a pure fit on arrays: which directions of an event vector tell one
person's behaviour from another's.

A generic sentence embedding spends most of its dimensions on what every user shares. `fit_projection` learns a
``(dim, k)`` map with a contrastive "same user?" objective: the mean of a user's events before a point and the
mean of the window from it should be nearer to each other than to other users'. Beside each event's text vector it
can read the event's action as a one-hot (`with_actions`, vocabulary from `shared_actions`), and give each item
shared by enough users a vector of its own (`shared_items`). `DriftMonitor.fit_projection` turns histories into the
arrays this module reads; nothing here knows about events or encoders.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

MIN_PROJECTION_USERS = 25  # the fit needs twice this many histories (in-batch negatives)
PROJECTION_DIM = 64  # output dims (or the encoder's, if smaller)
PROJECTION_LOOKBACK = 12  # events before the point; longer spans straddle a user's own changes of interest
ACTION_VOCAB = 32  # the most frequent event actions ("rated 4/5", "viewed") read beside the text
ACTION_WEIGHT = 3.0  # the length of an action's one-hot beside the unit text vector (0: the text alone)
MIN_ACTION_USERS = 5  # an action enters the projection (and the saved config) only if this many users share it
ITEM_WEIGHT = 3.0  # how fast the items' own vectors learn beside the text's, when asked for
MIN_ITEM_USERS = 5  # an item gets its own vector (listed in the saved config) only if this many users share it
ITEMS_KEY = "projection_items"  # the saved config's list of the items with vectors (rows of ``item_vectors``)


def with_actions(raw: np.ndarray, actions: Sequence[str], vocab: Sequence[str], weight: float) -> np.ndarray:
    """``raw`` with a one-hot of each row's action among ``vocab`` (zeros for any other) of length ``weight``
    beside it: ``(n, dim)`` -> ``(n, dim + len(vocab))``."""
    index = {a: k for k, a in enumerate(vocab)}
    extra = np.zeros((len(raw), len(vocab)), dtype=np.float32)
    for row, action in enumerate(actions):
        k = index.get(action)
        if k is not None:
            extra[row, k] = weight
    return np.concatenate([np.asarray(raw, dtype=np.float32).reshape(len(raw), -1), extra], axis=1)


def shared_actions(actions: Sequence[Sequence[str]]) -> list[str]:
    """The `ACTION_VOCAB` most frequent actions among those at least `MIN_ACTION_USERS` users share (``actions``:
    one list per user). The list is saved with the model, so no one person's free text may be in it."""
    counts = Counter(a for row in actions for a in row)
    sharing = Counter(a for row in actions for a in set(row))
    return [a for a, _ in counts.most_common() if sharing[a] >= MIN_ACTION_USERS][:ACTION_VOCAB]


def shared_items(items: Sequence[Sequence[str]]) -> list[str]:
    """The items at least `MIN_ITEM_USERS` users share, sorted (``items``: one list of item texts per user)."""
    sharing = Counter(i for row in items for i in {i for i in row if i})
    return sorted(i for i, n in sharing.items() if n >= MIN_ITEM_USERS)


def fit_projection(
    table: np.ndarray,
    rows: Sequence[np.ndarray],
    window: int,
    dim: int,
    *,
    text_items: np.ndarray | None = None,
    n_items: int = 0,
    steps: int = 2000,
    batch_users: int = 256,
    lookback: int = PROJECTION_LOOKBACK,
    temperature: float = 0.1,
    lr: float = 1e-3,
    item_weight: float = 0.0,
    seed: int = 0,
    show_progress_bar: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Fits the projection on arrays.

    Each step samples ``batch_users`` users and a point ``t`` in each; the mean of the ``lookback`` events before
    ``t`` and the mean of the ``window`` events from it (each event's vector projected and normalised, as the
    monitor averages them) are pulled together against the other users' (in-batch InfoNCE, both directions). It
    starts from a random orthonormal map: the top principal directions would start it in what every user shares.

    Args:
        table: ``(n_texts, d)`` float32, one row per distinct event text (actions already beside it).
        rows: Per user, the event texts' row numbers in time order (each at least ``window + 2`` long).
        window: The monitor's window.
        dim: Output dims, at most ``d``.
        text_items: ``(n_texts,)`` int64, each text's item (1..``n_items``; 0: no vector of its own).
        n_items: Items with a vector of their own, learned from zero at ``item_weight`` times the text's speed.

    Returns:
        ``(projection (d, dim), item_vectors (n_items, dim), record)``; the record has the fit's losses.
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    table_t = torch.from_numpy(np.ascontiguousarray(table, dtype=np.float32))  # (n_texts, d)
    if table_t.shape[1] < dim:
        raise ValueError(f"the projection's dim ({dim}) should be at most the encoder's ({table_t.shape[1]}).")
    items_t = torch.zeros(len(table_t), dtype=torch.int64) if text_items is None else torch.from_numpy(text_items)
    rng = np.random.default_rng([seed, 17])
    generator = torch.Generator().manual_seed(seed)
    start = torch.linalg.qr(torch.randn(table_t.shape[1], dim, generator=generator))[0]  # (d, dim), orthonormal
    weight = torch.nn.Parameter(start.clone().contiguous())
    own = torch.nn.Parameter(torch.zeros(n_items + 1, dim))  # row 0 stays 0: masked below
    optimizer = torch.optim.Adam([weight, own], lr=lr)
    batch = min(batch_users, len(rows))
    target = torch.arange(batch)

    def window_means(spans: list[np.ndarray]) -> torch.Tensor:
        flat = torch.from_numpy(np.concatenate(spans))
        owner = torch.repeat_interleave(torch.arange(len(spans)), torch.tensor([len(s) for s in spans]))
        event = table_t[flat] @ weight  # (events, dim)
        if n_items:  # the items' own vectors (row 0, for items without one, masked)
            item = items_t[flat]
            event = event + item_weight * own[item] * (item > 0).unsqueeze(1)
        sums = torch.zeros(len(spans), dim).index_add_(0, owner, F.normalize(event, dim=-1))  # (spans, dim)
        return F.normalize(sums, dim=-1)

    losses = []
    for _ in tqdm(range(steps), desc="drift projection", disable=not show_progress_bar, leave=False):
        before, after = [], []
        for u in rng.choice(len(rows), batch, replace=False).tolist():
            r = rows[u]
            t = int(rng.integers(min(2 * window, len(r) - window), len(r) - window + 1))
            before.append(r[max(0, t - lookback) : t])
            after.append(r[t : t + window])
        a, b = window_means(before), window_means(after)
        logits = a @ b.T / temperature  # (batch, batch)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    record = {
        "batch_users": batch,
        "first_loss": round(float(np.mean(losses[:50])), 4),
        "last_loss": round(float(np.mean(losses[-50:])), 4),
        "chance_loss": round(math.log(batch), 4),
    }
    return weight.detach().numpy(), (item_weight * own.detach()[1:]).numpy(), record
