"""`interestbert cards init`: drafted cards for unseen files validate as written, on the tests' own files and on
every shared dataset; a wrong guess still fails `validate` with a sentence naming the field."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from conftest import REAL_CARDS, shared_data_dir
from helpers import EVENTS, ITEMS

from interestbert.encoder import load_card, load_card_data
from interestbert.encoder.cards.draft import draft_card, sniff
from interestbert.inference.cli import main

REAL_FILES = {
    "movielens-100k": ("ml-100k.inter", "ml-100k.item"),
    "movielens-1m": ("ratings_users_1-2999.dat.gz", "movies.dat"),
    "amazon-beauty": ("amazon-beauty.inter", "amazon-beauty.item"),
    "amazon-office": ("Office.inter.gz", "Office.text.gz", "Office.link.gz"),
}


def init(tmp_path: Path, events: Path, items: Path, capsys, *extra: str) -> tuple[Path, str]:
    out = tmp_path / "card"
    assert (
        main(
            [
                "cards",
                "init",
                "--events",
                str(events),
                "--items",
                str(items),
                "--name",
                "drafted",
                "--output",
                str(out),
                *extra,
            ]
        )
        == 0
    )
    return out, capsys.readouterr().out


def test_a_tab_separated_shop_with_a_header(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "events.tsv").write_text(EVENTS)
    (tmp_path / "data" / "items.tsv").write_text(ITEMS)
    card, out = init(tmp_path, tmp_path / "data" / "events.tsv", tmp_path / "data" / "items.tsv", capsys)
    assert "user_id <- user, item_id <- item, timestamp <- ts, rating <- rating" in out
    assert "item_id <- id, text from name, category" in out
    data = load_card_data(card, tmp_path / "data")
    assert data.stats["events"] == 4 and data.items["text"][:] == ["Apple (fruit)", "Bread (bakery)", "Cheese (dairy)"]
    assert sorted(data.events["action"][:]) == ["rated 1/5", "rated 3/5", "rated 4/5", "rated 5/5"]
    assert (
        main(
            [
                "cards",
                "init",
                "--events",
                str(tmp_path / "data" / "events.tsv"),
                "--items",
                str(tmp_path / "data" / "items.tsv"),
                "--output",
                str(card),
            ]
        )
        == 2
    )  # no --force: kept
    assert "--force" in capsys.readouterr().err


def test_no_header_double_colon_gzip_latin1(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    with gzip.open(tmp_path / "d" / "ratings.dat.gz", "wt") as f:
        f.write(
            "".join(
                f"{u}::{10 + (u * 7 + k) % 5}::{1 + k % 5}::{978300760 + 60 * k}\n"
                for u in range(1, 13)
                for k in range(6)
            )
        )
    (tmp_path / "d" / "movies.dat").write_bytes(
        "".join(f"{10 + i}::Caf\u00e9 film {i} (1995)::Comedy|Drama\n" for i in range(5)).encode("latin-1")
    )
    guess = sniff(tmp_path / "d" / "movies.dat")
    assert (guess.separator, guess.header, guess.encoding) == ("::", False, "latin-1")
    card, out = init(tmp_path, tmp_path / "d" / "ratings.dat.gz", tmp_path / "d" / "movies.dat", capsys)
    assert "user_id <- col1, item_id <- col2, timestamp <- col4, rating <- col3" in out
    data = load_card_data(card, tmp_path / "d")
    assert data.stats["users"] == 12 and data.items["text"][0] == "Caf\u00e9 film 0 (1995) (Comedy|Drama)"


def test_parquet_and_json_lines(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "d").mkdir()
    pq.write_table(
        pa.table(
            {
                "customer": ["a", "a", "a", "b"],
                "product": ["p1", "p2", "p1", "p2"],
                "event_time": [1700000000, 1700000100, 1700000200, 1700000050],
            }
        ),
        tmp_path / "d" / "events.parquet",
    )
    (tmp_path / "d" / "products.jsonl").write_text(
        '{"product_id": "p1", "name": "Trowel", "category": "garden"}\n'
        '{"product_id": "p2", "name": "Tent", "category": "camping"}\n'
    )
    card, out = init(tmp_path, tmp_path / "d" / "events.parquet", tmp_path / "d" / "products.jsonl", capsys)
    assert "user_id <- customer, item_id <- product, timestamp <- event_time" in out
    data = load_card_data(card, tmp_path / "d")
    assert data.events["action"][:] == ["interacted"] * 4 and data.items["text"][:] == [
        "Trowel (garden)",
        "Tent (camping)",
    ]


def test_a_wrong_guess_fails_validate_naming_the_field(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "events.csv").write_text("user,item,date\nu1,a,2024-01-02\nu1,b,2024-01-03\n")
    (tmp_path / "d" / "items.csv").write_text("item,title\na,Apple\nb,Bread\n")
    card, _ = init(tmp_path, tmp_path / "d" / "events.csv", tmp_path / "d" / "items.csv", capsys)
    assert main(["cards", "validate", str(card), "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "line 2: `timestamp` is '2024-01-02', not an integer (unix seconds)" in err and err.count("\n") == 1


def test_a_missing_file_is_one_sentence(tmp_path, capsys):
    assert (
        main(
            [
                "cards",
                "init",
                "--events",
                str(tmp_path / "nope.csv"),
                "--items",
                str(tmp_path / "i.csv"),
                "--output",
                str(tmp_path / "card"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "nope.csv does not exist" in err and not (tmp_path / "card").exists()


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_drafts_of_the_shared_datasets_validate_to_the_shipped_cards_counts(name, tmp_path):
    users, items, catalogue, events = REAL_CARDS[name]
    data_dir = shared_data_dir(name)
    files = [data_dir / f for f in REAL_FILES[name]]
    draft = draft_card(*files[:2], "drafted", *files[2:])
    (tmp_path / "card").mkdir()
    (tmp_path / "card" / "README.md").write_text(draft.text, encoding="utf-8")
    s = load_card_data(load_card(tmp_path / "card"), data_dir).stats
    assert (s["users"], s["items"], s["catalogue"], s["events"]) == (users, items, catalogue, events)


def test_events_that_name_other_ids_than_the_items_are_refused_with_the_share(tmp_path, capsys):
    data_dir = shared_data_dir("amazon-office")
    card, _ = init(tmp_path, data_dir / "Office.inter.gz", data_dir / "Office.text.gz", capsys)  # no --id-map
    assert main(["cards", "validate", str(card), "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert "is not in the catalogue Office.text.gz (nor are those of 53,258 of the 53,258 events, 100 %)" in err
    assert "`id_map`" in err
