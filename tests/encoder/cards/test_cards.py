"""Data cards: the shipped cards read the real files exactly, and every kind of bad card or file is one sentence."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import pytest
from conftest import REAL_CARDS, shared_data_dir
from helpers import COLUMNAR_CARD, EVENTS, GOOD_CARD, ITEMS, columnar_files, write_card

from interestbert.encoder import DataCardError, available_cards, load_card, load_card_data
from interestbert.inference.cli import main


def test_shipped_cards_are_listed_and_parse():
    assert set(available_cards()) == {
        "movielens-100k",
        "movielens-1m",
        "amazon-beauty",
        "amazon-office",
        "synthetic-shop",
    }
    for name in available_cards():
        card = load_card(name)
        assert card.metadata["license"], name
        assert "interestbert" not in card.metadata  # the block is parsed, not left in the metadata


def test_events_are_sorted_by_user_then_time_with_actions_phrased(tmp_path):
    data = load_card_data(write_card(tmp_path), tmp_path / "data")
    rows = data.events.to_list()
    assert [(r["user_id"], r["item_id"], r["timestamp"]) for r in rows] == [
        ("u1", "b", 10),
        ("u1", "c", 20),
        ("u1", "a", 30),
        ("u2", "a", 20),
    ]
    assert [r["action"] for r in rows] == ["rated 5/5", "rated 1/5", "rated 4/5", "rated 3/5"]
    assert data.items["text"][:] == ["Apple (fruit)", "Bread (bakery)", "Cheese (dairy)"]
    assert data.stats["users"] == 2 and data.stats["events"] == 4 and data.stats["catalogue"] == 3


def test_timestamp_ties_keep_file_order(tmp_path):
    events = "user\titem\tts\trating\nu1\tc\t10\t1\nu1\ta\t10\t2\nu1\tb\t10\t3\n"
    data = load_card_data(write_card(tmp_path, events=events), tmp_path / "data")
    assert data.events["item_id"][:] == ["c", "a", "b"]
    assert data.stats["last_event_tied_share"] == 1.0


@pytest.mark.parametrize("name", sorted(REAL_CARDS))
def test_real_card_counts_match_the_data_readme(name):
    users, items, catalogue, events = REAL_CARDS[name]
    data = load_card_data(name, shared_data_dir(name))
    s = data.stats
    assert (s["users"], s["items"], s["catalogue"], s["events"]) == (users, items, catalogue, events)
    assert all(data.items["text"][:]), "every item has text"


def test_ml1m_reads_latin1_titles():
    data = load_card_data("movielens-1m", shared_data_dir("movielens-1m"))
    assert any("Misérables" in t for t in data.items["text"][:])


def test_synthetic_card_generates_without_data_dir():
    data = load_card_data("synthetic-shop")
    assert data.stats["users"] == 2000 and data.switches is not None and len(data.switches) > 1000


# ------------------------------------------------------------------------------------------------ bad input

BAD_CARDS = {
    "missing key": (
        GOOD_CARD.replace('    text: "{{ title }} ({{ kind }})"\n', ""),
        "`interestbert.items.text` is missing",
    ),
    "misspelt key": (GOOD_CARD.replace("    columns: {user_id", "    colums: {user_id"), "did you mean `columns`"),
    "column not in file": (GOOD_CARD.replace("stars: rating", "stars: ratting"), "column `ratting`"),
    "missing file": (GOOD_CARD.replace("path: items.tsv", "path: nope.tsv"), "`nope.tsv` does not exist"),
    "path leaves data dir": (
        GOOD_CARD.replace("path: items.tsv", "path: ../../etc/passwd"),
        "leaves the data directory",
    ),
    "absolute path": (GOOD_CARD.replace("path: items.tsv", "path: /etc/passwd"), "leaves the data directory"),
    "template attribute trick": (GOOD_CARD.replace("({{ kind }})", "{{ ''.__class__ }}"), "touches `__class__`"),
    "template item trick": (GOOD_CARD.replace("({{ kind }})", "{{ title['__class__'] }}"), "touches `__class__`"),
    "template unknown variable": (GOOD_CARD.replace("({{ kind }})", "({{ colour }})"), "`colour`"),
    "template syntax": (GOOD_CARD.replace("({{ kind }})", "({{ kind )"), "does not parse"),
}


@pytest.mark.parametrize("case", sorted(BAD_CARDS))
def test_bad_card_is_one_sentence_naming_card_and_fix(tmp_path, case):
    text, expected = BAD_CARDS[case]
    card = write_card(tmp_path, card=text)
    with pytest.raises(DataCardError) as err:
        load_card_data(card, tmp_path / "data")
    message = str(err.value)
    assert expected in message
    assert message.startswith("data card card")  # names the card
    assert "\n" not in message


def test_malformed_line_names_file_and_line(tmp_path):
    events = EVENTS + "u3\ta\t40\n"  # line 6 has three fields
    card = write_card(tmp_path, events=events)
    with pytest.raises(DataCardError, match=r"events.tsv line 6: expected 4 fields .* found 3"):
        load_card_data(card, tmp_path / "data")


def test_bad_timestamp_names_line(tmp_path):
    card = write_card(tmp_path, events=EVENTS.replace("\t30\t", "\tyesterday\t"))
    with pytest.raises(DataCardError, match=r"events.tsv line 2: `timestamp` is 'yesterday'"):
        load_card_data(card, tmp_path / "data")


def test_unknown_item_names_line(tmp_path):
    card = write_card(tmp_path, events=EVENTS + "u2\tzzz\t50\t2\n")
    with pytest.raises(DataCardError, match=r"line 6: item `zzz` is not in the catalogue"):
        load_card_data(card, tmp_path / "data")


def test_wrong_encoding_names_line(tmp_path):
    card = write_card(tmp_path)
    (tmp_path / "data" / "items.tsv").write_bytes(ITEMS.replace("Cheese", "Fromage").encode() + b"d\tCr\xe8me\tdairy\n")
    with pytest.raises(DataCardError, match=r"items.tsv line 5 is not valid utf-8"):
        load_card_data(card, tmp_path / "data")


def test_gzip_and_multichar_separator(tmp_path):
    card = GOOD_CARD.replace(
        'path: events.tsv\n    separator: "\\t"',
        'path: events.dat.gz\n    separator: "::"\n    header: false\n    names: [user, item, ts, rating]',
    )
    folder = write_card(tmp_path, card=card)
    body = "".join(line.replace("\t", "::") + "\n" for line in EVENTS.splitlines()[1:])
    with gzip.open(tmp_path / "data" / "events.dat.gz", "wt") as f:
        f.write(body)
    assert load_card_data(folder, tmp_path / "data").stats["events"] == 4


# ------------------------------------------------------------------------------------------------ the CLI


def test_cli_validate_prints_counts(tmp_path, capsys):
    assert main(["cards", "validate", str(write_card(tmp_path)), "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "users      2" in out and "events     4" in out and "time span" in out


def test_cli_validate_ml1m_counts(capsys):
    assert main(["cards", "validate", "movielens-1m", "--data-dir", str(shared_data_dir("movielens-1m"))]) == 0
    out = capsys.readouterr().out
    assert "2,999" in out and "487,650" in out and "3,883 in catalogue" in out


@pytest.mark.parametrize("case", ["misspelt key", "path leaves data dir", "template attribute trick"])
def test_cli_bad_card_exits_2_with_one_line_and_no_output(tmp_path, capsys, case):
    card = write_card(tmp_path, card=BAD_CARDS[case][0])
    out_dir = tmp_path / "out"
    code = main(["encode", "--card", str(card), "--data-dir", str(tmp_path / "data"), "--output", str(out_dir)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: data card card") and err.count("\n") == 1
    assert "Traceback" not in err
    assert not out_dir.exists()


def test_cli_malformed_line_exits_2(tmp_path, capsys):
    card = write_card(tmp_path, events=EVENTS + "u3\ta\n")
    assert main(["cards", "validate", str(card), "--data-dir", str(tmp_path / "data")]) == 2
    assert "events.tsv line 6" in capsys.readouterr().err


def test_cli_unknown_card_lists_shipped_cards(capsys):
    assert main(["cards", "validate", "movielens-2m"]) == 2
    err = capsys.readouterr().err
    assert "movielens-1m" in err and "not found" in err


def test_shipped_card_can_be_copied_and_used_from_a_path(tmp_path):
    shutil.copytree(Path(load_card("movielens-100k").path).parent, tmp_path / "ml")
    assert load_card(tmp_path / "ml").name == "ml"


def test_the_docs_schema_table_is_the_schema():
    import re

    from conftest import REPO

    from interestbert.encoder.cards.schema import SECTIONS, schema_markdown

    page = (REPO / "docs" / "pages" / "cards.md").read_text(encoding="utf-8")
    table = re.search(r"<!-- card schema: begin -->\n(.*?)<!-- card schema: end -->", page, re.S)
    assert table, "docs/pages/cards.md has the generated card schema table"
    assert table.group(1) == schema_markdown()
    for key in (
        "`interestbert.events.separator` | `','`",
        "`interestbert.items.text` | required",
        "`interestbert.generator.name` | required",
    ):
        assert key in table.group(1)
    assert len(SECTIONS) == 7


def test_a_value_outside_its_choices_names_them(tmp_path):
    folder = tmp_path / "card"
    folder.mkdir()
    (folder / "README.md").write_text(
        GOOD_CARD.replace("    columns: {user_id", "    compression: zip\n    columns: {user_id", 1)
    )
    with pytest.raises(
        DataCardError, match=r"`interestbert.events.compression` is 'zip'; use one of infer, gzip, none"
    ):
        load_card(folder)


def test_parquet_events_and_jsonl_items_read_like_delimited_text(tmp_path):
    assert COLUMNAR_CARD != GOOD_CARD and "events.parquet" in COLUMNAR_CARD and "items.jsonl.gz" in COLUMNAR_CARD
    text = load_card_data(write_card(tmp_path / "tsv"), tmp_path / "tsv" / "data")
    card = write_card(tmp_path / "col", card=COLUMNAR_CARD)
    columnar_files(tmp_path / "col")
    columnar = load_card_data(card, tmp_path / "col" / "data")
    assert columnar.events.to_list() == text.events.to_list()
    assert columnar.items.to_list() == text.items.to_list()
    assert columnar.stats == text.stats


@pytest.mark.parametrize(
    "events, expected",
    [
        (
            {"user": ["u1", None], "item": ["a", "b"], "ts": [1, 2], "rating": [4.0, 5.0]},
            "file events.parquet line 2: `user_id` (column `user`) is missing",
        ),
        ({"user": ["u1"], "item": ["a"], "when": [1], "rating": [4.0]}, "column `ts` (for `timestamp`) not found"),
        ({"user": ["u1"], "item": ["a"], "ts": [1.5], "rating": [4.0]}, "line 1: `timestamp` is '1.5', not an integer"),
    ],
)
def test_badcolumnar_files_are_one_sentence(tmp_path, events, expected):
    card = write_card(tmp_path, card=COLUMNAR_CARD)
    columnar_files(tmp_path, events)
    with pytest.raises(DataCardError, match=re.escape(expected)):
        load_card_data(card, tmp_path / "data")


def test_a_corrupt_parquet_file_is_one_sentence(tmp_path):
    card = write_card(tmp_path, card=COLUMNAR_CARD)
    columnar_files(tmp_path)
    (tmp_path / "data" / "events.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataCardError, match="cannot be read as Parquet"):
        load_card_data(card, tmp_path / "data")


def test_a_card_is_parsed_once_into_typed_sections(tmp_path):
    from interestbert.encoder.cards import EventsSection, GeneratorSection, IdMapSection, ItemsSection

    card = load_card(write_card(tmp_path))
    assert type(card.events) is EventsSection and type(card.items) is ItemsSection
    assert card.events.columns == {"user_id": "user", "item_id": "item", "timestamp": "ts", "stars": "rating"}
    assert card.events.fields == ["stars"] and card.items.fields == ["title", "kind"]
    assert card.id_map is None and card.switches is None and card.data_folder is None
    shop = load_card("synthetic-shop")
    assert type(shop.generator) is GeneratorSection and shop.generator.options() == {
        "seed": 0,
        "n_users": 2000,
        "n_items": 1500,
    }
    assert load_card("movielens-1m").data_folder == "ml-1m"
    mapped = GOOD_CARD.replace("    text:", "    id_map: {path: map.tsv, columns: {item_id: a, key: b}}\n    text:", 1)
    assert type(load_card(write_card(tmp_path / "mapped", card=mapped)).id_map) is IdMapSection


@pytest.mark.parametrize(
    "section, expected",
    [
        (
            dict(path="e.tsv", columns={"user_id": "u", "item_id": "i"}),
            "data card x: key `interestbert.events.columns.timestamp` is missing; name the file column that holds it.",
        ),
        (
            dict(path="e.tsv", columns={"user_id": "u", "item_id": "i", "timestamp": "t"}, header=False),
            "data card x: key `interestbert.events.names` is missing; a file without a header line needs its column "
            "names listed under `names`.",
        ),
        (
            dict(path="e.tsv", columns={"user_id": "u", "item_id": "i", "timestamp": "t", "action": "a"}),
            "data card x: key `interestbert.events.columns.action` is reserved",
        ),
    ],
)
def test_a_section_checks_itself_when_built(section, expected):
    """The checks live in the sections' ``__post_init__``: built in code, a section says what the card loader says."""
    from interestbert.encoder.cards import EventsSection

    with pytest.raises(DataCardError, match=re.escape(expected)):
        EventsSection(**section, where="data card x")
    with pytest.raises(DataCardError, match=re.escape(expected)):
        EventsSection.parse(section, "data card x")
