"""Helpers several test files share: a small data card and its files, stand-in encoders and planted histories for
the drift monitor, and the tiny fine-tuning run's arguments."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from interestbert.encoder.drift import DriftMonitor, Event, History
from interestbert.finetune.args import FinetuneArguments

GOOD_CARD = """\
---
pretty_name: tiny test shop
license: apache-2.0
interestbert:
  events:
    path: events.tsv
    separator: "\\t"
    columns: {user_id: user, item_id: item, timestamp: ts, stars: rating}
    action: "rated {{ stars | int }}/5"
  items:
    path: items.tsv
    separator: "\\t"
    columns: {item_id: id, title: name, kind: category}
    text: "{{ title }} ({{ kind }})"
  verbalisation:
    event: "{{ item }}: {{ action }}"
    separator: "\\n"
---
# tiny test shop
"""


EVENTS = "user\titem\tts\trating\nu1\ta\t30\t4.0\nu1\tb\t10\t5\nu2\ta\t20\t3\nu1\tc\t20\t1\n"


ITEMS = "id\tname\tcategory\na\tApple\tfruit\nb\tBread\tbakery\nc\tCheese\tdairy\n"


def write_card(folder: Path, card: str = GOOD_CARD, events: str = EVENTS, items: str = ITEMS) -> Path:
    (folder / "card").mkdir(parents=True, exist_ok=True)
    (folder / "card" / "README.md").write_text(card, encoding="utf-8")
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "events.tsv").write_text(events, encoding="utf-8")
    (folder / "data" / "items.tsv").write_text(items, encoding="utf-8")
    return folder / "card"


COLUMNAR_CARD = GOOD_CARD.replace('path: events.tsv\n    separator: "\\t"', "path: events.parquet").replace(
    'path: items.tsv\n    separator: "\\t"', "path: items.jsonl.gz"
)


def columnar_files(folder: Path, events: dict | None = None) -> None:
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    events = events or {
        "user": ["u1", "u1", "u2", "u1"],
        "item": ["a", "b", "a", "c"],
        "ts": pa.array([30, 10, 20, 20], pa.int64()),
        "rating": [4.0, 5.0, 3.0, 1.0],
    }
    pq.write_table(pa.table(events), folder / "data" / "events.parquet")
    rows = [
        {"id": "a", "name": "Apple", "category": "fruit"},
        {"id": "b", "name": "Bread", "category": "bakery"},
        {"id": "c", "name": "Cheese", "category": "dairy"},
    ]
    with gzip.open(folder / "data" / "items.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))


GARDEN = [
    "watering can",
    "pruning shears",
    "seed tray",
    "garden trowel",
    "hose reel",
    "plant labels",
    "compost bin",
    "hedge trimmer",
    "flower pots",
    "rake",
]


JAZZ = [
    "jazz vinyl record",
    "saxophone album",
    "bebop box set",
    "jazz piano record",
    "swing album",
    "trumpet solo record",
    "blue note album",
    "jazz quartet record",
    "big band album",
    "cool jazz record",
]


def bag_of_words(texts, **_):
    """A deterministic stand-in encoder: the normalised mean of a fixed random vector per word."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            out[row] += np.random.default_rng(zlib.crc32(word.encode())).standard_normal(64)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def planted(
    user: str, n_before: int, n_after: int, seed: int, first=GARDEN, then=JAZZ, category=("Gardening", "Jazz")
) -> History:
    rng = np.random.default_rng(seed)
    events = []
    for k in range(n_before + n_after):
        group, cat = (first, category[0]) if k < n_before else (then, category[1])
        title = group[rng.integers(len(group))]
        item = f"{title} ({cat})"
        events.append(Event(f"viewed: {item}", item, 1000 + 10 * k))
    return History(user, events)


def tiny_args(tmp_path, tiny_bert, synthetic_dir, **overrides) -> FinetuneArguments:
    options = dict(
        card="synthetic-shop",
        data_dir=str(synthetic_dir),
        output_dir=str(tmp_path / "out"),
        model_name_or_path=str(tiny_bert),
        max_seq_length=48,
        max_item_length=24,
        max_train_prefixes_per_user=6,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        learning_rate=2e-3,
        head_learning_rate=2e-2,
        max_steps=12,
        eval_steps=4,
        save_steps=6,
        max_eval_users=None,
        early_stopping_patience=None,
        disable_tqdm=True,
        seed=7,
        lora_dropout=0.1,
        head_warmup_epochs=0,
    )
    options.update(overrides)
    return FinetuneArguments(**options)


TASTES = 8  # the first 8 dims say which taste a user has; the other 56 are per-event noise that swamps them


def taste_and_noise(texts, **_):
    """A stand-in encoder whose vectors carry a user's taste (``t3`` in the text: dim 3) weakly and an event's
    own noise (``n1234``: a seeded random vector in the other dims) strongly."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for row, text in enumerate(texts):
        taste, noise = text.split()
        out[row, int(taste[1:])] = 1.0
        out[row, TASTES:] = 8.0 * np.random.default_rng(int(noise[1:])).standard_normal(64 - TASTES) / np.sqrt(56)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def taste_history(user: str, tastes: list[int], lengths: list[int], seed: int) -> History:
    rng = np.random.default_rng(seed)
    events = [
        Event(f"t{taste} n{rng.integers(10**6)}", f"item of taste {taste}", k)
        for k, taste in enumerate(t for t, n in zip(tastes, lengths) for _ in range(n))
    ]
    return History(user, events)


def recall_at_rate(monitor: DriftMonitor, seed: int) -> float:
    """Calibrated on users of one taste at 20 alarms per 1,000 events, the share of taste changes (at event 40 of
    a held-out user) alarmed within 8 events."""
    rng = np.random.default_rng(seed)
    monitor.calibrate([taste_history(f"c{i}", [int(rng.integers(TASTES))], [60], seed + i) for i in range(60)], 20)
    hits = 0
    for i in range(40):
        a, b = rng.choice(TASTES, 2, replace=False)
        found = monitor.scan(taste_history(f"s{i}", [int(a), int(b)], [40, 30], seed + 100 + i)).events
        hits += any(40 <= d.index <= 48 for d in found)
    return hits / 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(service):
    """The service on a free loopback port, in a thread, for the block; yields its base URL."""
    from interestbert.inference.live.service import make_server

    port = free_port()
    server = make_server(service, "127.0.0.1", port, log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the test service did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def call(method: str, url: str, body=None, headers: dict | None = None, raw: bytes | None = None):
    """``(status, parsed JSON or text)`` of one HTTP request."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text
