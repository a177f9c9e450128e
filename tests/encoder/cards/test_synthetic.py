"""Tests for the synthetic-shop generator."""

import collections
import csv
import re

import pytest

from interestbert.encoder.cards import synthetic

FILES = ("items.csv", "events.csv", "switches.csv")
SMALL = dict(n_users=300)  # default n_items: 125 per category, no category runs out


def _read(folder, name):
    with open(folder / name, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shop")
    counts = synthetic.generate(folder, seed=1, **SMALL)
    items = {r["item_id"]: r for r in _read(folder, "items.csv")}
    events = collections.defaultdict(list)
    for row in _read(folder, "events.csv"):
        events[row["user_id"]].append(row)
    switches = collections.defaultdict(list)
    for row in _read(folder, "switches.csv"):
        switches[row["user_id"]].append(row)
    return folder, counts, items, events, switches


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        synthetic.generate(tmp_path / name, seed=seed, n_users=50, n_items=240)
    for f in FILES:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert any((tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes() for f in FILES)


def test_counts_match_files(shop):
    folder, counts, items, events, switches = shop
    assert counts == {
        "users": 300,
        "items": 1500,
        "events": sum(map(len, events.values())),
        "switches": sum(map(len, switches.values())),
    }
    assert len(items) == 1500 and len(events) == 300
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)  # no temporary leftovers


def test_histories_are_ordered_and_never_repeat_items(shop):
    _, _, items, events, _ = shop
    actions = {"viewed", "added to cart", "bought"} | {f"rated {k}/5" for k in range(1, 6)}
    for rows in events.values():
        assert 20 <= len(rows) <= 120
        times = [int(r["timestamp"]) for r in rows]
        assert all(a < b for a, b in zip(times, times[1:]))
        assert len({r["item_id"] for r in rows}) == len(rows)
        assert {r["item_id"] for r in rows} <= items.keys()
        assert {r["action"] for r in rows} <= actions


def test_switches_point_at_the_new_main_category(shop):
    _, _, items, events, switches = shop
    for user, rows in switches.items():
        history = events[user]
        bounds = [int(r["event_index"]) for r in rows] + [len(history)]
        for row, start, end in zip(rows, bounds, bounds[1:]):
            assert 0 < start < len(history) and end - start >= 8
            assert int(row["timestamp"]) == int(history[start]["timestamp"])
            assert row["from_category"] != row["to_category"]
            cats = collections.Counter(items[e["item_id"]]["category"] for e in history[start:end])
            assert cats.most_common(1)[0][0] == row["to_category"]


def test_about_fifteen_percent_of_users_never_switch(shop):
    _, _, _, events, switches = shop
    controls = sum(user not in switches for user in events) / len(events)
    assert 0.07 <= controls <= 0.25
    assert sum(len(switches.get(u, [])) <= 3 for u in events) / len(events) > 0.85


def test_items_have_unique_titles_and_twelve_categories(shop):
    _, _, items, _, _ = shop
    assert len({r["title"] for r in items.values()}) == len(items)
    assert len({r["category"] for r in items.values()}) == 12
    for r in items.values():
        assert r["item_id"].startswith("I") and float(r["price"]) > 0
        assert r["price"] == f"{float(r['price']):.2f}"


@pytest.mark.parametrize(
    "kwargs, name, value",
    [
        (dict(n_users=0), "n_users", "0"),
        (dict(n_items=100), "n_items", "100"),
        (dict(min_events=5), "min_events", "5"),
        (dict(min_events=30, max_events=25), "max_events", "25"),
        (dict(n_items=240, max_events=300), "max_events", "300"),
        (dict(seed=-1), "seed", "-1"),
        (dict(n_users=2.5), "n_users", "2.5"),
    ],
)
def test_bad_arguments_raise_with_the_value(tmp_path, kwargs, name, value):
    # the message names the argument and ends with the value given: "`n_users` should be ..., got 0."
    with pytest.raises(ValueError, match=rf"^`{name}` should be .*, got {re.escape(value)}\.$"):
        synthetic.generate(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())  # validation happens before anything is written


def test_main_prints_counts(tmp_path, capsys):
    assert synthetic.main([str(tmp_path), "--seed", "2", "--n-users", "20", "--n-items", "240"]) == 0
    assert "users=20 items=240" in capsys.readouterr().out


def test_small_catalog_never_crashes_or_repeats(tmp_path):
    # 20 items per category but up to 120 events: long segments exhaust their category.
    counts = synthetic.generate(tmp_path, seed=5, n_users=40, n_items=240, max_events=120)
    rows = _read(tmp_path, "events.csv")
    assert len(rows) == counts["events"]
    seen = collections.Counter((r["user_id"], r["item_id"]) for r in rows)
    assert max(seen.values()) == 1
