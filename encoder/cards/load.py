"""Reading a card's files: `load_card_data` turns a card and a data folder into `datasets.Dataset`s of events (sorted
by user, then time, ties in file order) and items, with the counts `interestbert cards validate` prints. The files
are read by `interestbert.encoder.cards.files`; every problem is one `DataCardError` sentence naming the file and line.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataCardError
from .card import DataCard, load_card
from .files import check_finite, int_column, read_table


@dataclass
class CardData:
    """What a card yields from a data folder.

    Attributes:
        events: ``user_id``, ``item_id``, ``timestamp``, ``action``; users in order of first appearance, each
            user's events by timestamp, ties in file order.
        items: ``item_id``, ``text`` and the card's item fields, in file order (the whole catalogue).
        switches: True interest switches (``user_id``, ``event_index``, ``timestamp``, ...) when the data has them.
        stats: Counts for `interestbert cards validate`.
    """

    card: DataCard
    events: object  # datasets.Dataset
    items: object  # datasets.Dataset
    switches: object | None
    stats: dict


def load_card_data(card: DataCard | str | os.PathLike, data_dir: str | os.PathLike | None = None) -> CardData:
    """Reads a card's files into events and items.

    Args:
        card: A `DataCard`, a shipped card name or a path to a card.
        data_dir: The folder holding the card's files. A card with a ``generator`` (synthetic-shop) may omit it:
            its data is then generated into a temporary folder and read from there.

    Returns:
        `CardData` with ``events`` and ``items`` as `datasets.Dataset`.

    Example:
        >>> data = load_card_data("movielens-100k", "../shared/data/ml-100k")  # doctest: +SKIP
        >>> data.events[0]  # doctest: +SKIP
        {'user_id': '1', 'item_id': '168', 'timestamp': 874965478, 'action': 'rated 5/5'}
    """
    if not isinstance(card, DataCard):
        card = load_card(card)
    if data_dir is None:
        if card.generator is None:
            raise DataCardError(
                f"{card.where}: --data-dir is required; point it at the folder holding {card.events.path}."
            )
        with tempfile.TemporaryDirectory(prefix=f"interestbert-{card.name}-") as tmp:
            generate_card_files(card, tmp)
            return _load(card, Path(tmp))
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataCardError(
            f"{card.where}: --data-dir {data_dir} is not a folder; pass the folder that holds {card.events.path}."
        )
    return _load(card, data_dir)


def generate_card_files(card: DataCard, output_dir: str | os.PathLike) -> dict:
    """Runs a generator card's built-in generator into ``output_dir``; returns its counts."""
    if card.generator is None:
        raise DataCardError(f"{card.where} has no `generator`; only generated cards (synthetic-shop) can be generated.")
    from . import synthetic  # local: only generated cards need it

    options = card.generator.options()
    return synthetic.generate(output_dir, **options)


def load_items(card: DataCard, data_dir: Path):
    """The catalogue: ``(datasets.Dataset of item_id, text and the item fields, {item_id: row})``; item ids must
    be unique."""
    import datasets

    where = f"data card {card.name}"
    it = read_table(card.items, data_dir, where)
    item_ids = it.columns["item_id"]
    seen: dict[str, int] = {}
    for i, item in enumerate(item_ids):
        if item in seen:
            raise DataCardError(
                f"{where}: file {it.path} line {it.lines[i]}: item `{item}` appears again (first on "
                f"line {it.lines[seen[item]]}); item ids must be unique."
            )
        seen[item] = i
    fields = {k: v for k, v in it.columns.items() if k != "item_id"}
    check_finite(it, fields, where)
    texts = [t.strip() for t in card.item_text.render_table(fields, len(it), it)]
    items = datasets.Dataset.from_dict(
        {"item_id": item_ids, "text": texts, **fields},
        features=datasets.Features({k: datasets.Value("string") for k in ["item_id", "text", *fields]}),
    )
    return items, seen


def load_switches(card: DataCard, data_dir: Path):
    """The card's true interest switches as a `datasets.Dataset`, or None when it has none."""
    import datasets

    if card.switches is None:
        return None
    where = f"data card {card.name}"
    sw = read_table(card.switches, data_dir, where)
    cols = dict(sw.columns)
    cols["event_index"] = int_column(cols["event_index"], sw, "event_index", where)
    if "timestamp" in cols:
        cols["timestamp"] = int_column(cols["timestamp"], sw, "timestamp", where)
    return datasets.Dataset.from_dict(cols)


def _load(card: DataCard, data_dir: Path) -> CardData:
    import datasets

    where = f"data card {card.name}"
    ev = read_table(card.events, data_dir, where)
    if len(ev) == 0:
        raise DataCardError(f"{where}: file {ev.path} has no events; point the card at a file with rows.")
    items, seen = load_items(card, data_dir)
    it_path = card.items.path

    # events: map ids through id_map, check the catalogue, sort
    event_items = ev.columns["item_id"]
    if card.id_map is not None:
        mp = read_table(card.id_map, data_dir, where)
        mapping = dict(zip(mp.columns["item_id"], mp.columns["key"]))
        missing = next((i for i, x in enumerate(event_items) if x not in mapping), None)
        if missing is not None:
            raise DataCardError(
                f"{where}: file {ev.path} line {ev.lines[missing]}: item `{event_items[missing]}` is "
                f"not in {mp.path}; complete the id map or drop the event."
            )
        event_items = [mapping[x] for x in event_items]
    missing = next((i for i, x in enumerate(event_items) if x not in seen), None)
    if missing is not None:
        n_missing = sum(x not in seen for x in event_items)
        raise DataCardError(
            f"{where}: file {ev.path} line {ev.lines[missing]}: item `{event_items[missing][:80]}` "
            f"is not in the catalogue {it_path} (nor are those of {n_missing:,} of the {len(ev):,} "
            f"events, {100 * n_missing / len(ev):.0f} %); add them there, map them with `id_map`, or "
            "drop the events."
        )
    for i, u in enumerate(ev.columns["user_id"]):
        if not u.strip():
            raise DataCardError(
                f"{where}: file {ev.path} line {ev.lines[i]}: `user_id` is empty; fill it or drop the line."
            )
    timestamps = int_column(ev.columns["timestamp"], ev, "timestamp", where)
    event_fields = {k: v for k, v in ev.columns.items() if k not in ("user_id", "item_id", "timestamp")}
    check_finite(ev, event_fields, where)
    actions = card.action.render_table(event_fields, len(ev), ev)

    users = np.asarray(ev.columns["user_id"], dtype=object)
    codes, uniques = _factorize(users)
    order = np.lexsort((np.arange(len(users)), timestamps, codes))  # user, then time, then file order
    event_items_arr = np.asarray(event_items, dtype=object)[order]
    events = datasets.Dataset.from_dict(
        {
            "user_id": users[order].tolist(),
            "item_id": event_items_arr.tolist(),
            "timestamp": timestamps[order],
            "action": np.asarray(actions, dtype=object)[order].tolist(),
        },
        features=datasets.Features(
            {
                "user_id": datasets.Value("string"),
                "item_id": datasets.Value("string"),
                "timestamp": datasets.Value("int64"),
                "action": datasets.Value("string"),
            }
        ),
    )
    switches = load_switches(card, data_dir)

    sorted_ts = timestamps[order]
    sorted_codes = codes[order]
    last = np.r_[sorted_codes[1:] != sorted_codes[:-1], True]
    has_prev = np.r_[False, sorted_codes[1:] == sorted_codes[:-1]]
    tied = np.r_[False, sorted_ts[1:] == sorted_ts[:-1]] & has_prev
    stats = {
        "users": int(len(uniques)),
        "items": int(len(set(event_items))),
        "catalogue": len(items),
        "events": len(ev),
        "first_timestamp": int(timestamps.min()),
        "last_timestamp": int(timestamps.max()),
        "min_events_per_user": int(np.bincount(codes).min()),
        "users_under_3_events": int((np.bincount(codes) < 3).sum()),
        "max_events_per_user": int(np.bincount(codes).max()),
        "last_event_tied_share": float(tied[last].mean()),
    }
    return CardData(card=card, events=events, items=items, switches=switches, stats=stats)


def _factorize(values: np.ndarray) -> tuple[np.ndarray, list]:
    """Integer codes in order of first appearance (deterministic, no hashing order)."""
    index: dict = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(index)
