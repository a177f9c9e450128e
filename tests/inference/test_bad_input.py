"""Hostile and careless input, as a user would try it: every case ends with one sentence and exit status 2, before
any expensive work, leaving nothing behind; a hypothesis fuzz target writes random malformed cards and files.

The table `CASES` is the hardening issue's reproductions: silent wrong values, resource exhaustion from a card,
tracebacks, unclear messages. Each row builds its card, data and command line in a fresh folder.
"""

from __future__ import annotations

import errno
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import EVENTS, GOOD_CARD, ITEMS, write_card

from interestbert.encoder import DataCardError, load_card_data
from interestbert.encoder.drift import DriftMonitor, Event
from interestbert.inference import loading
from interestbert.inference.cli import main

CSV_CARD = GOOD_CARD.replace('separator: "\\t"', 'separator: ","')


def _events(ts: str = "30", rating: str = "4.0") -> str:
    return EVENTS.replace("u1\ta\t30\t4.0", f"u1\ta\t{ts}\t{rating}")


def _validate(card: Path, root: Path) -> list[str]:
    return ["cards", "validate", str(card), "--data-dir", str(root / "data")]


def _encode(card: Path, root: Path, model: str, *extra: str) -> list[str]:
    return [
        "encode",
        "--card",
        str(card),
        "--data-dir",
        str(root / "data"),
        "--model",
        model,
        "--output",
        str(root / "out"),
        *extra,
    ]


def bomb(levels: int = 9, width: int = 9) -> str:
    """A YAML "billion laughs": ``width ** levels`` strings through aliases."""
    lines = ['  a0: &a0 ["lol"]']
    for i in range(1, levels):
        lines.append(f"  a{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(width))}]")
    return "\n".join(lines)


def case(card: str = GOOD_CARD, events: str = EVENTS, items: str = ITEMS, command=_validate, setup=None):
    """A table row's builder: writes the card and data under ``root``; returns the argv."""

    def build(root: Path, tiny_bert: Path, monkeypatch) -> list[str]:
        card_path = write_card(root, card=card, events=events, items=items)
        if setup is not None:
            setup(root, monkeypatch)
        if command is _validate:
            return command(card_path, root)
        return command(card_path, root, str(tiny_bert))

    return build


def _card_bytes(raw: bytes):
    def setup(root, monkeypatch):
        (root / "card" / "README.md").write_bytes(raw)

    return setup


def _pickle_model(root, monkeypatch):
    (root / "pickled").mkdir()
    (root / "pickled" / "config.json").write_text('{"model_type": "bert"}')
    (root / "pickled" / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")


def _output_file(root, monkeypatch):
    (root / "out").write_text("an old file")


def _read_only(root, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(loading.tempfile, "mkstemp", refuse)


def _disk_full(root, monkeypatch):
    from interestbert.inference import encode

    def full(*args, **kwargs):
        os.makedirs(root / "out" / "_work", exist_ok=True)  # what a run had made before the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device", str(root / "out" / "part-00000-of-00001.parquet"))

    monkeypatch.setattr(encode, "encode_users", full)


def _with(command, *extra):
    return lambda card, root, model: command(card, root, model, *extra)


def _drift(card, root, model, *extra):
    return [
        "drift",
        "--card",
        str(card),
        "--data-dir",
        str(root / "data"),
        "--model",
        model,
        "--output",
        str(root / "out"),
        *extra,
    ]


def _model(path):
    return lambda card, root, model: _encode(card, root, str(root / path) if not path.startswith("/") else path)


CASES = {
    # 2. silent wrong values
    "timestamp 1e23": (
        case(events=_events(ts="99999999999999999999999")),
        "outside the range of integers read exactly",
    ),
    "timestamp int64 max": (case(events=_events(ts="9223372036854775807")), "line 2: `timestamp` is"),
    "timestamp 1e300 (encode)": (case(events=_events(ts="1e300"), command=_encode), "outside the range"),
    "rating nan": (case(events=_events(rating="nan")), "line 2: `stars` is 'nan' in a column of numbers"),
    "rating inf": (case(events=_events(rating="inf")), "`stars` is 'inf' in a column of numbers"),
    "rating not a number": (
        case(events=_events(rating="four")),
        "line 2: the template stopped: the `int` filter got 'four'",
    ),
    # 3. resource exhaustion from a card
    "nested range loops": (
        case(
            card=GOOD_CARD.replace(
                'text: "{{ title }} ({{ kind }})"',
                'text: "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ title }}"',
            )
        ),
        "more than 100,000 steps",
    ),
    "string times 500000": (
        case(card=GOOD_CARD.replace('text: "{{ title }} ({{ kind }})"', 'text: "{{ title * 500000 }}"')),
        "a repeated string or list would be",
    ),
    "YAML alias bomb": (
        case(card=GOOD_CARD.replace("license: apache-2.0", "license: apache-2.0\nlaughs:\n" + bomb())),
        "expands to more than 20,000 values",
    ),
    "huge center width": (
        case(card=GOOD_CARD.replace('text: "{{ title }} ({{ kind }})"', 'text: "{{ title | center(1000000000) }}"')),
        "the argument of `center` is 1000000000",
    ),
    # 4. tracebacks before
    "path: 12": (
        case(card=GOOD_CARD.replace("path: events.tsv", "path: 12")),
        "key `interestbert.events.path` must be a string, got int 12",
    ),
    "card not UTF-8": (
        case(setup=_card_bytes(GOOD_CARD.encode().replace(b"tiny test shop", b"caf\xe9 shop"))),
        "line 2 is not valid UTF-8",
    ),
    "--output is a file": (case(command=_encode, setup=_output_file), "is a file; the command writes a folder"),
    "--output under /proc": (
        case(command=lambda c, r, m: _encode(c, r, m)[:-1] + ["/proc/interestbert-out"]),
        "cannot be written",
    ),
    "--output read-only": (case(command=_encode, setup=_read_only), "Read-only file system"),
    "--max-seq-length 100000": (
        case(command=_with(_encode, "--max-seq-length", "100000")),
        "more than the 512 token positions",
    ),
    "disk full": (case(command=_encode, setup=_disk_full), "No space left on device; free space there"),
    "model folder of pickles": (case(command=_model("pickled"), setup=_pickle_model), "only pickled weights"),
    # 5. unclear messages before
    "BOM with latin-1": (
        case(
            card=GOOD_CARD.replace(
                'separator: "\\t"\n    columns: {user_id',
                'separator: "\\t"\n    encoding: latin-1\n    columns: {user_id',
            ),
            setup=lambda root, mp: (root / "data" / "events.tsv").write_bytes(b"\xef\xbb\xbf" + EVENTS.encode()),
        ),
        "byte-order mark",
    ),
    "unbalanced quote": (
        case(card=CSV_CARD, events=EVENTS.replace("\t", ",").replace("u2,a", 'u2,"a'), items=ITEMS.replace("\t", ",")),
        'line 4: a quote `"` opened there is not closed',
    ),
    "--model /nonexistent": (case(command=_model("/nonexistent/model")), "/nonexistent/model: no such folder"),
    "drift --users NOPE": (
        case(command=_with(_drift, "--users", "NOPE")),
        "--users: 1 of the given users have no events",
    ),
    "encode --users NOPE": (case(command=_with(_encode, "--users", "u1", "NOPE")), "(first: 'NOPE')"),
    "recommend --users NOPE": (
        case(
            command=lambda c, r, m: [
                "recommend",
                "--card",
                str(c),
                "--data-dir",
                str(r / "data"),
                "--model",
                m,
                "--output",
                str(r / "recs.parquet"),
                "--users",
                "NOPE",
            ]
        ),
        "--users: 1 of the given users",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_sentence_and_exit_2(name, tmp_path, tiny_bert, monkeypatch, capsys):
    build, expected = CASES[name]
    argv = build(tmp_path, tiny_bert, monkeypatch)
    if "--users" in name:  # refused before the model loads
        monkeypatch.setattr(loading, "load_encoder", lambda *a, **k: pytest.fail("the model was loaded"))
    started = time.perf_counter()
    code = main([*argv, "-q"])
    elapsed = time.perf_counter() - started
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err
    assert not (tmp_path / "out").is_dir(), "a failed command left its output folder behind"
    assert elapsed < 60, f"{name} took {elapsed:.0f} s to be refused"


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    card = write_card(tmp_path, events=_events(ts="1e300"))
    from interestbert.encoder.errors import InterestBertError

    with pytest.raises(InterestBertError, match="outside the range"):
        main(_validate(card, tmp_path) + ["--debug"])


def test_errors_of_other_kinds_become_sentences_at_the_boundary(tmp_path, monkeypatch, capsys):
    from interestbert.inference import commands

    for raised, fragment in (
        (MemoryError(), "ran out of memory"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "decoded as utf-8"),
        (ValueError("bad value\nsecond line"), "ValueError: bad value (run again with --debug"),
        (PermissionError(errno.EACCES, "Permission denied", "/x/y"), "/x/y: Permission denied"),
    ):

        def fail(args, raised=raised):
            raise raised

        monkeypatch.setattr(commands, "cmd_cards_list", fail)
        assert main(["cards", "list"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and fragment in err and err.count("\n") == 1, err
    monkeypatch.setattr(commands, "cmd_cards_list", lambda args: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # a bug is not dressed up as bad input
        main(["cards", "list"])


def test_a_utf8_bom_is_read_as_no_data(tmp_path):
    card = write_card(tmp_path)
    (tmp_path / "data" / "events.tsv").write_bytes(b"\xef\xbb\xbf" + EVENTS.encode())
    assert load_card_data(card, tmp_path / "data").stats["events"] == 4


def test_a_template_default_keeps_a_non_number(tmp_path):
    card = write_card(tmp_path, card=GOOD_CARD.replace("stars | int", "stars | int(0)"), events=_events(rating="x"))
    assert load_card_data(card, tmp_path / "data").events["action"][:].count("rated 0/5") == 1


def test_out_of_core_refuses_the_same_values(tmp_path):
    from interestbert.encoder.cards.stream import StreamedCard

    for events, fragment in (
        (_events(ts="1e300"), "line 2: `timestamp` is '1e300', outside the range"),
        (_events(rating="nan"), "line 2: `stars` is 'nan' in a column of numbers"),
        (_events(rating="four"), "line 2: the template stopped: the `int` filter got 'four'"),
    ):
        card = write_card(tmp_path, events=events)
        with pytest.raises(DataCardError, match=fragment.replace("(", r"\(").replace("`", ".")):
            with StreamedCard(card, tmp_path / "data", work_dir=tmp_path / "work") as streamed:
                streamed.chunk(0, streamed.n_users)


def test_streaming_drift_state_is_bounded_in_users():
    monitor = DriftMonitor(lambda texts: np.ones((len(texts), 4), np.float32) / 2, max_users=50)
    for t in range(4):
        for u in range(200):
            monitor.update(f"u{u}", Event(f"item {t}", f"item {t}", t))
    stats = monitor.stream_stats()
    assert stats["users"] == 50 and stats["evicted"] == 750  # every pass evicts the 150 idle longest again
    monitor.update("u199", Event("x", "x", 5))  # the most recent user is still followed
    assert monitor.stream_stats()["evicted"] == 750
    with pytest.raises(ValueError, match="max_users"):
        DriftMonitor(lambda texts: None, max_users=0)


# ------------------------------------------------------------------------------------------------------- fuzz

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz target needs hypothesis (pip install -e '.[test]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

QUIET_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters='\t\n\r"{}%#'), max_size=12)


def _mutations():
    """Each draws one change that makes the good card or its data invalid, with random content."""
    not_an_int = st.one_of(
        st.floats(allow_nan=True, allow_infinity=True)
        .filter(lambda f: not (f == f and abs(f) < 2**53 and f == int(f)))
        .map(repr),
        st.integers(min_value=2**53, max_value=2**80).map(str),
        QUIET_TEXT.filter(lambda s: not _is_integer(s)),
    )
    wrong_type = st.one_of(
        st.integers(), st.booleans(), st.lists(st.integers(), max_size=3), st.floats(allow_nan=False)
    ).map(lambda v: str(v).lower() if isinstance(v, bool) else str(v))
    return st.one_of(
        st.tuples(st.just("timestamp"), not_an_int),
        st.tuples(st.just("rating"), st.sampled_from(["nan", "inf", "-inf", "NaN", "1e999"])),
        st.tuples(
            st.just("wrong type"), st.tuples(st.sampled_from(["path: events.tsv", "path: items.tsv"]), wrong_type)
        ),
        st.tuples(
            st.just("template"),
            st.tuples(
                QUIET_TEXT,
                st.sampled_from(["{{ nope }}", "{{ title", "{% for %}", "{{ title * 10**7 }}", "{{ ''.__class__ }}"]),
            ),
        ),
        st.tuples(
            st.just("header"),
            st.lists(
                QUIET_TEXT.filter(lambda s: s.strip() not in ("user", "item", "ts", "rating")), min_size=4, max_size=4
            ),
        ),
        st.tuples(st.just("extra field"), st.tuples(st.integers(1, 4), QUIET_TEXT)),
        st.tuples(
            st.just("bytes"),
            st.tuples(st.integers(0, 60), st.binary(min_size=1, max_size=8).map(lambda b: b"\xff" + b)),
        ),
        st.tuples(st.just("quote"), st.integers(1, 4)),
        st.tuples(st.just("bom"), st.just(None)),
        st.tuples(st.just("alias bomb"), st.tuples(st.integers(6, 12), st.integers(6, 12))),
    )


def _is_integer(s: str) -> bool:
    try:
        f = float(s)
    except ValueError:
        return False
    return f == f and abs(f) <= 2**53 and f == int(f)


def _apply(kind: str, value, root: Path) -> None:
    card, events = GOOD_CARD, EVENTS
    raw_events = None
    lines = events.splitlines()
    if kind == "timestamp":
        events = _events(ts=value)
    elif kind == "rating":
        events = _events(rating=value)
    elif kind == "wrong type":
        key, wrong = value
        card = card.replace(key, f"{key.split(':')[0]}: {wrong}")
    elif kind == "template":
        prefix, bad = value
        card = card.replace('text: "{{ title }} ({{ kind }})"', "text: '" + prefix.replace("'", "") + bad + "'")
    elif kind == "header":
        lines[0] = "\t".join(value)
        events = "\n".join(lines) + "\n"
    elif kind == "extra field":
        row, text = value
        lines[row] += "\t" + text
        events = "\n".join(lines) + "\n"
    elif kind == "bytes":
        at, blob = value
        raw = events.encode()
        at = max(len(lines[0]) + 1, min(at, len(raw)))  # in a data line, after the header
        raw_events = raw[:at] + blob + raw[at:]
    elif kind == "quote":
        parts = lines[value].split("\t")
        parts[1] = '"' + parts[1]
        lines[value] = "\t".join(parts)
        events = "\n".join(lines) + "\n"
    elif kind == "bom":
        card = card.replace(
            'separator: "\\t"\n    columns: {user_id', 'separator: "\\t"\n    encoding: latin-1\n    columns: {user_id'
        )
        raw_events = b"\xef\xbb\xbf" + events.encode()
    elif kind == "alias bomb":
        card = card.replace("license: apache-2.0", "license: apache-2.0\nlaughs:\n" + bomb(*value))
    write_card(root, card=card, events=events)
    if raw_events is not None:
        (root / "data" / "events.tsv").write_bytes(raw_events)


@settings(max_examples=80, deadline=10_000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=_mutations())
def test_fuzz_malformed_cards_and_files_end_in_one_sentence(mutation, tiny_bert, capsys):
    kind, value = mutation
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _apply(kind, value, root)
        for argv in (_validate(root / "card", root), _encode(root / "card", root, str(tiny_bert))):
            capsys.readouterr()
            code = main([*argv, "-q"])
            out, err = capsys.readouterr()
            assert code == 2, (kind, value, out, err)
            assert out == "" and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
            assert not (root / "out").exists(), (kind, value, "left an output folder")


def test_temporaries_of_dead_processes_are_removed_by_the_next_write(tmp_path):
    import subprocess
    import sys

    from interestbert.encoder.files import _HOST, atomic_folder, atomic_write_text

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    stale_file = tmp_path / f".recs.parquet.{_HOST}~{dead}~0000abcd.tmp"
    stale_dir = tmp_path / f".model.{_HOST}~{dead}~0000abcd.tmp"
    live = tmp_path / f".recs.parquet.{_HOST}~{os.getpid()}~0000abcd.tmp"
    elsewhere = tmp_path / f".recs.parquet.otherhost~{dead}~0000abcd.tmp"
    for path in (stale_file, live, elsewhere):
        path.write_text("half")
    stale_dir.mkdir()
    (stale_dir / "weights.safetensors").write_text("half")
    atomic_write_text(tmp_path / "recs.parquet", "done")
    with atomic_folder(tmp_path / "model") as folder:
        (folder / "config.json").write_text("{}")
    assert not stale_file.exists() and not stale_dir.exists()
    assert live.exists() and elsewhere.exists()  # a live writer's, and another machine's (it cannot be told dead)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["model", "recs.parquet"]
