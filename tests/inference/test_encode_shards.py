"""Sharded, resumable batch encoding: the folder layout, its manifest and metadata, readers (ours, DuckDB, Polars),
kill -9 and resume, two processes under accelerate launch, and every refusal as one sentence."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from interestbert.encoder.errors import InterestBertError
from interestbert.inference import embedding_files
from interestbert.inference.cli import main
from interestbert.inference.encode import read_embeddings, run_metadata, shard_plan


@pytest.fixture()
def encode_args(tiny_bert, synthetic_dir):
    def args(out, *extra):
        return [
            "encode",
            "--card",
            "synthetic-shop",
            "--data-dir",
            str(synthetic_dir),
            "--model",
            str(tiny_bert),
            "--max-seq-length",
            "40",
            "--batch-size",
            "4",
            "--precision",
            "fp32",
            "--output",
            str(out),
            *map(str, extra),
        ]  # fp32 on every CPU: the shard layouts are compared to 1e-5

    return args


def names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_shards_manifest_and_metadata(encode_args, tmp_path, tiny_bert):
    one, three = tmp_path / "one", tmp_path / "three"
    assert main(encode_args(one, "--limit-users", 50)) == 0
    assert main(encode_args(three, "--limit-users", 50, "--num-shards", 3, "--chunk-users", 7)) == 0
    assert names(three) == [
        "_manifest.json",
        "part-00000-of-00003.parquet",
        "part-00001-of-00003.parquet",
        "part-00002-of-00003.parquet",
    ]
    manifest = json.loads((three / "_manifest.json").read_text())
    assert [s["rows"] for s in manifest["shards"]] == [16, 17, 17] and manifest["rows"] == 50
    for shard in manifest["shards"]:
        file = three / shard["file"]
        assert embedding_files.file_sha256(file) == shard["sha256"]
        assert pq.ParquetFile(file).metadata.num_row_groups == -(-shard["rows"] // 7)  # one per chunk
        meta = run_metadata(file)
        assert meta["model_hash"] == manifest["model_hash"] and meta["card"] == "synthetic-shop"
        assert meta["model"] == str(tiny_bert) and meta["shard"] == shard["shard"] and meta["max_seq_length"] == 40
    assert manifest["precision"] == "fp32" and manifest["interest_horizons"] == "all:1"
    (u1, a), (u3, b) = read_embeddings(one), read_embeddings(three)
    assert u1 == u3 and len(set(u3)) == 50
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_duckdb_and_polars_read_the_folder_as_it_is(encode_args, tmp_path):
    duckdb = pytest.importorskip("duckdb", reason="duckdb is in the test extra")
    polars = pytest.importorskip("polars", reason="polars is in the test extra")
    out = tmp_path / "emb"
    assert main(encode_args(out, "--limit-users", 30, "--num-shards", 2)) == 0
    users, vectors = read_embeddings(out)
    glob = str(out / "*.parquet")
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*) FROM '{glob}'").fetchone()[0] == 30
    # Parquet has no fixed-size list: DuckDB reads FLOAT[] and the cast to its ARRAY type holds for every row
    typ, sizes, self_sim = con.execute(
        f"SELECT any_value(typeof(embedding::FLOAT[32])), list(DISTINCT len(embedding)), "
        f"min(array_cosine_similarity(embedding::FLOAT[32], embedding::FLOAT[32])) FROM '{glob}'"
    ).fetchone()
    assert typ == "FLOAT[32]" and sizes == [32] and self_sim == pytest.approx(1.0, abs=1e-5)
    first = con.execute(f"SELECT user_id, embedding FROM '{glob}' ORDER BY filename, file_row_number LIMIT 1")
    row = first.fetchone()
    assert row[0] == users[0]
    np.testing.assert_array_equal(np.asarray(row[1], dtype=np.float32), vectors[0])
    frame = polars.read_parquet(glob)
    assert frame.height == 30 and frame["user_id"].to_list() == users
    np.testing.assert_array_equal(np.stack(frame["embedding"].to_numpy()).astype(np.float32), vectors)


def test_shards_by_index_then_manifest_when_the_last_is_done(encode_args, tmp_path, capsys):
    out, whole = tmp_path / "split", tmp_path / "whole"
    assert main(encode_args(out, "--limit-users", 20, "--num-shards", 2, "--shard-index", 1)) == 0
    assert "other shards unfinished" in capsys.readouterr().out
    assert names(out) == ["_work", "part-00001-of-00002.parquet"]
    with pytest.raises(InterestBertError, match="has not finished"):
        read_embeddings(out)
    assert main(encode_args(out, "--limit-users", 20, "--num-shards", 2, "--shard-index", 0)) == 0
    assert "complete: _manifest.json written" in capsys.readouterr().out
    assert "_work" not in names(out)
    assert main(encode_args(whole, "--limit-users", 20, "--num-shards", 2)) == 0
    (ua, a), (ub, b) = read_embeddings(out), read_embeddings(whole)
    assert ua == ub
    np.testing.assert_array_equal(a, b)
    # the same command again: nothing to do
    assert main(encode_args(out, "--limit-users", 20, "--num-shards", 2, "--shard-index", 0)) == 0
    assert "nothing to encode" in capsys.readouterr().out


def test_finishing_keeps_a_live_process_temporary_manifest(encode_args, tmp_path):
    """Two processes that finish together both write `_manifest.json`; neither may delete the other's temporary
    (it did: a 2-process run failed in CI with "writing _manifest.json failed (No such file or directory)")."""
    from interestbert.encoder.files import _HOST

    out = tmp_path / "emb"
    assert main(encode_args(out, "--limit-users", 10, "--num-shards", 2, "--shard-index", 0)) == 0
    live = out / f".{embedding_files.MANIFEST_FILE}.{_HOST}~{os.getppid()}~aaaaaaaa.tmp"  # a process still writing
    dead = out / f".{embedding_files.MANIFEST_FILE}.{_HOST}~{2**22 + 12345}~bbbbbbbb.tmp"  # no such process
    live.write_text("{}")
    dead.write_text("{}")
    assert main(encode_args(out, "--limit-users", 10, "--num-shards", 2, "--shard-index", 1)) == 0
    assert (out / embedding_files.MANIFEST_FILE).is_file() and live.is_file() and not dead.exists()


def one_sentence(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_other_options_are_refused_naming_the_difference(encode_args, tmp_path, capsys):
    out = tmp_path / "emb"
    assert main(encode_args(out, "--limit-users", 10, "--num-shards", 2, "--shard-index", 0)) == 0
    before = names(out)
    capsys.readouterr()
    bad = [a if a != "40" else "48" for a in encode_args(out, "--limit-users", 10, "--num-shards", 2)]
    assert main(bad) == 2
    err = one_sentence(capsys)
    assert "max_seq_length 40 there, 48 now" in err and "--overwrite" in err
    assert main(encode_args(out, "--limit-users", 12, "--num-shards", 2)) == 2
    assert "users 10 there, 12 now" in one_sentence(capsys)
    assert names(out) == before
    assert main([*bad, "--overwrite"]) == 0
    assert run_metadata(out / "part-00000-of-00002.parquet")["max_seq_length"] == 48
    capsys.readouterr()
    # a complete folder of other options is refused too, and replaced with --overwrite
    assert main(encode_args(out, "--limit-users", 10)) == 2
    assert "num_shards 2 there, 1 now" in one_sentence(capsys)
    assert main(encode_args(out, "--limit-users", 10, "--overwrite")) == 0
    assert names(out) == ["_manifest.json", "part-00000-of-00001.parquet"]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--num-shards", "2", "--shard-index", "2"], "--shard-index is 2; with --num-shards 2 it must be 0 to 1"),
        (["--num-shards", "0"], "--num-shards is 0"),
        (["--chunk-users", "0"], "--chunk-users is 0"),
    ],
)
def test_bad_shard_options_fail_before_loading(encode_args, tmp_path, capsys, extra, expected):
    assert main(encode_args(tmp_path / "o", *extra)) == 2
    assert expected in one_sentence(capsys)
    assert not (tmp_path / "o").exists()


def test_output_that_is_a_file_or_holds_an_old_encode(encode_args, tmp_path, capsys):
    file = tmp_path / "f"
    file.write_text("x")
    assert main(encode_args(file, "--limit-users", 3)) == 2
    assert "is a file" in one_sentence(capsys) and file.read_text() == "x"
    old = tmp_path / "old"
    old.mkdir()
    pq.write_table(pq.read_table(_encoded(encode_args, tmp_path / "tmp")), old / "part-00000-of-00001.parquet")
    with pytest.raises(InterestBertError, match="it is not a folder written by `interestbert encode`"):
        read_embeddings(old)  # a shard without its manifest is no finished encode
    capsys.readouterr()
    assert main(encode_args(old, "--limit-users", 3)) == 2
    assert "already holds part-00000-of-00001.parquet" in one_sentence(capsys)
    assert main(encode_args(old, "--limit-users", 3, "--overwrite")) == 0
    assert names(old) == ["_manifest.json", "part-00000-of-00001.parquet"]


def _encoded(encode_args, out):
    assert main(encode_args(out, "--limit-users", 3)) == 0
    return out / "part-00000-of-00001.parquet"


def test_a_changed_shard_is_caught_by_the_manifest(encode_args, tmp_path):
    out = tmp_path / "emb"
    assert main(encode_args(out, "--limit-users", 8)) == 0
    part = out / "part-00000-of-00001.parquet"
    pq.write_table(pq.read_table(part).slice(0, 5), part)
    with pytest.raises(InterestBertError, match="does not match"):
        read_embeddings(out)


def test_disk_full_is_one_sentence_and_the_rerun_completes(encode_args, tmp_path, capsys, monkeypatch):
    out = tmp_path / "emb"
    written = []
    real = pq.write_table

    def fill_up(table, where, *a, **k):
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        written.append(where)
        return real(table, where, *a, **k)

    monkeypatch.setattr(embedding_files.pq, "write_table", fill_up)
    assert main(encode_args(out, "--limit-users", 20, "--chunk-users", 4)) == 2
    err = capsys.readouterr().err.split("\n")  # the progress bar's line, then the sentence
    assert err[-1] == "" and err[-2].startswith("error: ") and not any(e.startswith("error") for e in err[:-2])
    err = err[-2]
    assert "No space left on device" in err and "run the same command again" in err
    assert not list(out.glob("*.parquet")) and not list(out.rglob(".*.tmp"))
    assert len(list((out / "_work" / "part-00000").glob("chunk-*.parquet"))) == 2
    monkeypatch.setattr(embedding_files.pq, "write_table", real)
    assert main(encode_args(out, "--limit-users", 20, "--chunk-users", 4)) == 0
    assert "8 found done by an earlier run" in capsys.readouterr().out
    assert len(read_embeddings(out)[0]) == 20


def test_shard_plan_follows_the_launcher():
    assert shard_plan(environ={}) == (1, [0])
    assert shard_plan(environ={"WORLD_SIZE": "4", "RANK": "2"}) == (4, [2])
    assert shard_plan(8, environ={"WORLD_SIZE": "3", "RANK": "1"}) == (8, [1, 4, 7])
    assert shard_plan(4, environ={}) == (4, [0, 1, 2, 3])
    assert shard_plan(4, 3, environ={"WORLD_SIZE": "2", "RANK": "0"}) == (4, [3])
    assert shard_plan(2, environ={"WORLD_SIZE": "3", "RANK": "2"}) == (2, [])  # more processes than shards
    with pytest.raises(InterestBertError, match="RANK=5 is outside WORLD_SIZE=2"):
        shard_plan(environ={"WORLD_SIZE": "2", "RANK": "5"})


# a subprocess whose encoding is slowed down, so that kill -9 lands in the middle of the run
_SLOW = (
    "import sys, time\n"
    "from interestbert.encoder import model\n"
    "real = model.InterestEncoder.encode_histories\n"
    "def slow(self, *a, **k):\n"
    "    time.sleep(0.15)\n"
    "    return real(self, *a, **k)\n"
    "model.InterestEncoder.encode_histories = slow\n"
    "from interestbert.inference.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _kill_after(cmd, chunks_dir, n_chunks: int, timeout: float = 120) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW, *cmd], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if chunks_dir.is_dir() and len(list(chunks_dir.glob("chunk-*.parquet"))) >= n_chunks:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_kill_9_then_the_same_command_continues_to_equal_embeddings(encode_args, tmp_path):
    out, reference = tmp_path / "killed", tmp_path / "reference"
    args = encode_args(out, "--limit-users", 60, "--num-shards", 2, "--chunk-users", 4)[1:]
    _kill_after(["encode", *args], out / "_work" / "part-00000", 2)
    # what a killed writer leaves: a temporary part file and chunk (the next run removes them)
    (out / ".part-00000-of-00002.parquet.999999-deadbeef.tmp").write_bytes(b"half")
    (out / "_work" / "part-00000" / ".chunk-000005.parquet.999999-deadbeef.tmp").write_bytes(b"half")
    _kill_after(["encode", *args], out / "_work" / "part-00001", 1)
    done = subprocess.run(
        [sys.executable, "-m", "interestbert.inference.cli", "encode", *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "found done by an earlier run" in done.stdout
    ref = subprocess.run(
        [
            sys.executable,
            "-m",
            "interestbert.inference.cli",
            *encode_args(reference, "--limit-users", 60, "--num-shards", 2, "--chunk-users", 4),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ref.returncode == 0, ref.stderr[-2000:]
    assert (
        names(out)
        == names(reference)
        == ["_manifest.json", "part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    )
    (ua, a), (ub, b) = read_embeddings(out), read_embeddings(reference)
    assert ua == ub and len(set(ua)) == 60  # no user missing, none twice
    np.testing.assert_array_equal(a, b)
    for shard in ("part-00000-of-00002.parquet", "part-00001-of-00002.parquet"):
        assert pq.read_table(out / shard).equals(pq.read_table(reference / shard))


def test_two_processes_under_accelerate_launch_equal_one(encode_args, tmp_path):
    """Each process takes its shard by rank (no process group); the union equals the 1-process output."""
    two, one = tmp_path / "two", tmp_path / "one"
    env = {**_env(), "ACCELERATE_USE_CPU": "1"}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "0",
        "-m",
        "interestbert.inference.cli",
        *encode_args(two, "--limit-users", 40, "--chunk-users", 8),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("encoded 20 users") == 2, proc.stdout
    assert names(two) == ["_manifest.json", "part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    assert main(encode_args(one, "--limit-users", 40, "--chunk-users", 8)) == 0
    (ua, a), (ub, b) = read_embeddings(two), read_embeddings(one)
    assert ua == ub and len(set(ua)) == 40
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_three_chunk_encode_checks_its_options_once_and_resolves_them_once(encode_args, tmp_path, monkeypatch):
    """`EncodeOptions` is checked before anything loads and resolved once on the encoder, however many chunks run;
    `--model` is checked once too."""
    from interestbert.encoder.backends import EncodeOptions
    from interestbert.inference import loading

    calls = {"resolve": [], "check_model": 0}
    resolve, check_model = EncodeOptions.resolve, loading.check_model

    def counted_resolve(self, device=None):
        calls["resolve"].append(self)
        return resolve(self, device)

    def counted_check_model(*args, **kwargs):
        calls["check_model"] += 1
        return check_model(*args, **kwargs)

    monkeypatch.setattr(EncodeOptions, "resolve", counted_resolve)
    monkeypatch.setattr(loading, "check_model", counted_check_model)
    args = [a if a != "fp32" else "auto" for a in encode_args(tmp_path / "emb", "--limit-users", 9, "--chunk-users", 3)]
    assert main(args) == 0
    assert len(calls["resolve"]) == 2, calls  # the flags' check before loading, then the encoder's resolution
    assert {(o.precision, o.backend, o.batch_size) for o in calls["resolve"]} == {("auto", "torch", 4)}
    assert calls["check_model"] == 1
    manifest = json.loads((tmp_path / "emb" / "_manifest.json").read_text())
    assert manifest["run"]["precision"] in ("fp32", "bf16")  # auto, resolved and recorded


@pytest.mark.parametrize(
    "options, expected",
    [
        (dict(precision="fp16"), "precision 'fp16' is not one of auto, fp32, bf16, int8."),
        (dict(backend="tensorrt"), "backend 'tensorrt' is not one of torch, openvino, onnx."),
        (dict(batch_size=0), "batch_size is 0; it must be a positive integer."),
        (dict(batch_size=True), "batch_size is True; it must be a positive integer."),
    ],
)
def test_encode_options_refuse_a_bad_value_naming_it(options, expected):
    from interestbert.encoder.backends import EncodeOptions

    with pytest.raises(ValueError, match=re.escape(expected)):
        EncodeOptions(**options)


def test_the_cli_offers_exactly_the_encode_options_choices():
    from interestbert.encoder.backends import BACKENDS, PRECISIONS
    from interestbert.inference.cli import build_parser

    encode = build_parser()._subparsers._group_actions[0].choices["encode"]
    choices = {a.dest: tuple(a.choices) for a in encode._actions if a.dest in ("precision", "backend")}
    assert choices == {"precision": PRECISIONS, "backend": BACKENDS}
