"""Out-of-core card reading (DuckDB): the events it groups on disk equal `load_card_data`'s, on every shipped card
and in every file format, its refusals name the file and line as the in-memory reader's do, and
`encode --out-of-core` writes the embeddings the in-memory encode writes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REAL_CARDS, shared_data_dir
from helpers import COLUMNAR_CARD, EVENTS, columnar_files, write_card

from interestbert.encoder import DataCardError, load_card_data
from interestbert.encoder.cards.stream import StreamedCard
from interestbert.inference.cli import main
from interestbert.inference.encode import read_embeddings


def same_events(streamed: StreamedCard, data, lo: int = 0, hi: int | None = None) -> None:
    hi = streamed.n_users if hi is None else hi
    chunk = streamed.chunk(lo, hi).events.data
    full = data.events.data
    offsets = np.r_[
        0,
        np.flatnonzero(
            np.r_[
                np.asarray(full.column("user_id").to_pylist()[1:])
                != np.asarray(full.column("user_id").to_pylist()[:-1]),
                True,
            ]
        )
        + 1,
    ]
    rows = slice(int(offsets[lo]), int(offsets[hi]))
    for column in ("user_id", "item_id", "timestamp", "action"):
        assert chunk.column(column).to_pylist() == full.column(column).to_pylist()[rows], column


@pytest.mark.parametrize("name", sorted(REAL_CARDS))
def test_real_cards_group_like_the_in_memory_loader(name, tmp_path):
    data_dir = shared_data_dir(name)
    data = load_card_data(name, data_dir)
    with StreamedCard(name, data_dir, work_dir=tmp_path / "work") as streamed:
        assert streamed.stats == data.stats
        assert streamed.n_users == REAL_CARDS[name][0]
        same_events(streamed, data)
        same_events(streamed, data, 5, 17)  # a chunk from the middle
        assert streamed.user_ids(5, 8) == data.events.unique("user_id")[5:8]
    assert not (tmp_path / "work" / "events.duckdb").exists()


def test_synthetic_tsv_parquet_and_jsonl(synthetic_dir, synthetic_data, tmp_path):
    with StreamedCard("synthetic-shop", synthetic_dir) as streamed:
        assert streamed.stats == synthetic_data.stats
        same_events(streamed, synthetic_data)
        work = streamed.work_dir
    assert not work.exists(), "its own temporary folder is removed"
    card = write_card(tmp_path / "tsv")
    text = load_card_data(card, tmp_path / "tsv" / "data")
    with StreamedCard(card, tmp_path / "tsv" / "data") as streamed:
        same_events(streamed, text)
    card = write_card(tmp_path / "col", card=COLUMNAR_CARD)
    columnar_files(tmp_path / "col")
    with StreamedCard(card, tmp_path / "col" / "data") as streamed:
        same_events(streamed, text)  # Parquet events read like the delimited ones
        assert streamed.stats == text.stats


@pytest.mark.parametrize(
    "events",
    [
        EVENTS.replace("u2\ta\t20", "u2\tzz\t20"),  # an item outside the catalogue
        EVENTS.replace("u1\tb\t10", "u1\tb\tnoon"),  # a timestamp that is no integer
        EVENTS.replace("u2\ta", "\ta"),  # an empty user id
        EVENTS.replace("", "", 1) + "u3\ta\t40\t2\textra\n",  # a line with a field too many
    ],
)
def test_bad_events_name_the_file_and_line_as_in_memory(tmp_path, events):
    card = write_card(tmp_path, events=events)
    with pytest.raises(DataCardError) as in_memory:
        load_card_data(card, tmp_path / "data")
    with pytest.raises(DataCardError) as streamed:
        StreamedCard(card, tmp_path / "data", work_dir=tmp_path / "work")
    message = str(streamed.value)
    assert message.startswith("data card card: file events.tsv") and "\n" not in message
    if "field" not in str(in_memory.value):  # DuckDB words a malformed line its own way
        assert message == str(in_memory.value)
    else:
        assert "cannot be read out of core" in message and "line" in message.lower()


def test_encode_out_of_core_equals_in_memory_and_resumes(tiny_bert, synthetic_dir, tmp_path, capsys):
    args = [
        "encode",
        "--card",
        "synthetic-shop",
        "--data-dir",
        str(synthetic_dir),
        "--model",
        str(tiny_bert),
        "--max-seq-length",
        "40",
        "--limit-users",
        "50",
        "--chunk-users",
        "8",
        "--num-shards",
        "2",
    ]
    assert main([*args, "--output", str(tmp_path / "mem")]) == 0
    assert main([*args, "--output", str(tmp_path / "ooc"), "--out-of-core", "--shard-index", "1"]) == 0
    assert main([*args, "--output", str(tmp_path / "ooc"), "--out-of-core", "--memory-limit", "200MB"]) == 0
    assert "25 found done by an earlier run" in capsys.readouterr().out
    (ua, a), (ub, b) = read_embeddings(tmp_path / "mem"), read_embeddings(tmp_path / "ooc")
    assert ua == ub
    np.testing.assert_allclose(a, b, atol=1e-6)
    for name in ("part-00000-of-00002.parquet", "part-00001-of-00002.parquet"):
        import pyarrow.parquet as pq

        assert (
            pq.read_table(tmp_path / "mem" / name)
            .select(["user_id", "n_events", "last_timestamp"])
            .equals(pq.read_table(tmp_path / "ooc" / name).select(["user_id", "n_events", "last_timestamp"]))
        )
