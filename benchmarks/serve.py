"""The live service's latency: "post one event, get the top-10" over loopback HTTP, and the cost of one event as
the history grows, against the naive wrapper a user would write (re-encoding the history on every request).

Model: the packaged all-MiniLM-L6-v2 with the default interest horizons (``1:0.5,4:0.3,all:0.2``), a token
budget of 128, and both heads at the shape training gives them on the card (the sequence head reads the newest
``sequence_events`` events), built here from the item texts. The heads are untrained: what one answer costs
depends on their shapes, not on their values. The drift monitor is calibrated here on the card's first 300
users (2 alarms per 1,000 events, no projection).

1. **Per-event cost** (in process, no HTTP): for a person with 10, 100 and 1,000 events of history, one event is
   applied and the top-10 answered (`LiveRecommender.update` + `recommend`), ``--repeats`` times, on each path:
   the sequence head, the strategy head (no drift monitor, as the naive wrapper has none), and both drift-aware
   (the monitor scans every event). Events are drawn from the card's own (item, action) pairs, whose texts the
   service encodes at start (``--warm``). The naive wrapper answers the same from the whole history each time: the
   card's template over every event, the token-budget cut, one encoder call for the horizons' texts, the head's
   scores (the sequence head's catalogue rows recomputed), seen items masked.
2. **Load** (HTTP on loopback): ``interestbert serve`` in its own process (the embedded memory store, then Redis
   when ``redis-server`` is installed), and the naive wrapper as a FastAPI app of its own; a bounded open-loop
   generator in this process sends a fixed number of requests at each fixed rate (each a card user's next event
   with ``?k=10``), times each from its scheduled start (a late send counts against the server), then stops. The
   generator shares the 2 cores with the server.

    python benchmarks/serve.py --data-dir ../shared/data --card movielens-1m --out benchmarks/results/serve
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from common import MAX_SEQ_LENGTH, data_dir_of, hardware, sequence_events
from results_io import write_report

HORIZONS = "1:0.5,4:0.3,all:0.2"
LENGTHS = (10, 100, 1000)


# ------------------------------------------------------------------------------------------------- the model


def build_model(card: str, data_dir: Path | None, folder: Path) -> Path:
    """The benchmark's model folder (module docstring), made once."""
    from interestbert.encoder import StrategyHead
    from interestbert.encoder.cards import load_card_data
    from interestbert.encoder.drift import DriftMonitor, histories_from_verbaliser
    from interestbert.encoder.model import InterestEncoder
    from interestbert.encoder.options import parse_horizons
    from interestbert.encoder.sequence import SequenceHead, SequenceOptions
    from interestbert.encoder.verbalise import Verbaliser

    if (folder / "adapter_config.json").is_file():
        return folder
    data = load_card_data(card, data_dir)
    encoder = InterestEncoder.from_pretrained(max_seq_length=MAX_SEQ_LENGTH).merge_adapter()
    encoder.horizons = parse_horizons(HORIZONS)
    verbaliser = Verbaliser(data, encoder.tokenizer, MAX_SEQ_LENGTH)
    vectors = encoder.encode(verbaliser.item_texts, batch_size=128)
    counts = np.bincount(verbaliser.event_items, minlength=len(verbaliser.item_ids))
    encoder.head = StrategyHead(verbaliser.item_ids, vectors, popularity=counts)
    options = SequenceOptions(max_events=sequence_events(card))
    encoder.sequence_head = SequenceHead(verbaliser.item_ids, vectors, counts, options).eval()
    encoder.save_pretrained(folder)
    monitor = DriftMonitor(encoder.encode, separator=verbaliser.separator)
    monitor.calibrate(histories_from_verbaliser(verbaliser, np.arange(300)), 2.0)
    monitor.save_pretrained(folder)
    return folder


# -------------------------------------------------------------------------------------------- per-event cost


class Naive:
    """What a user writes with the public API alone: per request, the whole history verbalised and cut to the
    budget, one encoder call per horizon, the head's scores, seen items masked."""

    def __init__(self, encoder, verbaliser):
        import torch

        self.torch, self.encoder, self.v = torch, encoder, verbaliser
        self.histories: dict[str, list[tuple[str, str, int]]] = {}

    def text(self, events) -> list[str]:
        v = self.v
        texts = [v.card.event_text.render({"item": v.item_texts[v.item_index[i]], "action": a}) for i, a, _ in events]
        counts = [len(ids) + 1 for ids in v.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        out = []
        for n, _ in self.encoder.horizons:
            chosen, used = [], 2  # the user's own budget cut: the newest events while they fit
            for text, count in zip(texts[::-1][:n], counts[::-1][:n]):
                if chosen and used + count > v.max_seq_length:
                    break
                chosen.append(text)
                used += count
            out.append(v.separator.join(chosen[::-1]))
        return out

    def answer(self, user: str, event, k: int = 10, head: str = "sequence") -> list[str]:
        torch = self.torch
        events = self.histories.setdefault(user, [])
        events.append(event)
        seen = [self.v.item_index[i] for i, _, _ in events]
        with torch.no_grad():
            if head == "sequence":
                seq = self.encoder.sequence_head
                rows = seq.project(seq.text) + seq.item  # as the head computes them for every call
                newest = seen[-seq.options.max_events :]
                history = torch.full((1, seq.options.max_events), -1, dtype=torch.long)
                history[0, -len(newest) :] = torch.as_tensor(newest)
                scores = seq.logits(seq.hidden(history, rows)[:, -1], rows)[0]
            else:
                texts = self.text(events)
                vectors = self.encoder.encode(texts)
                weights = np.asarray([w for _, w in self.encoder.horizons], np.float32)[:, None]
                interest = (weights * vectors).sum(0)
                interest /= np.linalg.norm(interest)
                scores = self.encoder.head(torch.as_tensor(interest)[None])[0]
            scores[seen] = float("-inf")
            return [self.v.item_ids[i] for i in torch.topk(scores, k).indices.tolist()]


def per_event_cost(model: Path, card: str, data_dir, repeats: int) -> list[dict]:
    from interestbert.encoder.cards import load_card_data
    from interestbert.encoder.drift import DriftMonitor
    from interestbert.encoder.model import InterestEncoder
    from interestbert.encoder.scoring import scorer_for
    from interestbert.inference.live import LiveEvent, LiveRecommender, card_histories

    data = load_card_data(card, data_dir)
    encoder = InterestEncoder.from_pretrained(str(model)).merge_adapter()
    monitor = DriftMonitor.from_pretrained(model, encoder.encode, separator=data.card.separator)
    live = LiveRecommender.from_card_data(encoder, data, monitor)  # the state keeps what answers read, as serve's
    live.warm()  # as `serve` does at start
    # the naive wrapper's own copy of the model: the live text cache must not answer its encoder calls
    naive = Naive(InterestEncoder.from_pretrained(str(model)).merge_adapter(), live.verbaliser)
    pairs = [(i, a) for h in card_histories(data).values() for i, a, _ in h]  # events shaped like the card's
    rng = np.random.default_rng(0)
    rows = []
    paths = [("sequence", False), ("strategy", False), ("sequence", True), ("strategy", True)]
    for scorer, drift_aware in paths:
        live.scorer = scorer_for(encoder, live.verbaliser, scorer)
        live.monitor = monitor if drift_aware else None  # the naive wrapper has no drift monitor
        for length in LENGTHS:
            history = [(*pairs[j], t) for t, j in enumerate(rng.integers(0, len(pairs), length))]
            state = live.state_from_events(f"u{length}", history)
            naive.histories[state.user_id] = list(history)
            live.recommend(state, 10, drift_aware)  # the history's own texts cached, as for a known person
            ours, theirs = [], []
            for r in range(repeats):
                item, action = pairs[int(rng.integers(len(pairs)))]
                event = LiveEvent(state.user_id, item, length + r, action)
                start = time.perf_counter()
                state = live.update(state, [event]).state
                live.recommend(state, 10, drift_aware)
                ours.append(time.perf_counter() - start)
                if not drift_aware:  # the naive wrapper holds the whole history, growing
                    start = time.perf_counter()
                    naive.answer(state.user_id, (item, action, length + r), 10, scorer)
                    theirs.append(time.perf_counter() - start)
            row = {"path": scorer + (" drift-aware" if drift_aware else ""), "history": length, **_ms(ours, "live")}
            if theirs:
                row.update(_ms(theirs, "naive"))
                row["speedup_p50"] = round(row["naive_p50_ms"] / row["live_p50_ms"], 1)
            rows.append(row)
            print(row, flush=True)
    return rows


def _ms(seconds: list[float], name: str) -> dict:
    s = np.asarray(seconds) * 1000
    return {f"{name}_p50_ms": round(float(np.median(s)), 2), f"{name}_p99_ms": round(float(np.quantile(s, 0.99)), 2)}


# ------------------------------------------------------------------------------------------------------ load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port: int, process: subprocess.Popen, seconds: float = 600) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {process.stdout.read()[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not start")


def load(port: int, requests: list[tuple[str, bytes]], rate: float, workers: int = 32) -> dict:
    """Sends ``requests`` (path, body) open loop at ``rate`` per second; latencies from each scheduled start."""
    start = time.perf_counter() + 0.2
    latencies = [float("nan")] * len(requests)
    errors = [0]
    lock = threading.Lock()
    position = [0]

    def worker():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                i = position[0]
                position[0] += 1
            if i >= len(requests):
                return
            due = start + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            path, body = requests[i]
            try:
                connection.request("POST", path, body, {"content-type": "application/json"})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                ok = False
            latencies[i] = time.perf_counter() - due
            if not ok:
                with lock:
                    errors[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ms = np.asarray(latencies) * 1000
    return {
        "rate": rate,
        "requests": len(requests),
        "errors": errors[0],
        "p50_ms": round(float(np.nanmedian(ms)), 2),
        "p99_ms": round(float(np.nanquantile(ms, 0.99)), 2),
        "max_ms": round(float(np.nanmax(ms)), 2),
    }


_CARD_CACHE: dict = {}
_CLOCK = [1]


def event_requests(card, data_dir, n: int, query: str, seed: int) -> list[tuple[str, bytes]]:
    """``n`` requests, each one new event of a card user, each user at most once per call (so no two requests of one
    person race each other): the item and action of a random event of the card (traffic shaped like the card's),
    timed after the user's last event."""
    from interestbert.encoder.cards import load_card_data
    from interestbert.inference.live import card_histories

    if card not in _CARD_CACHE:
        histories = card_histories(load_card_data(card, data_dir))
        _CARD_CACHE[card] = (histories, [(i, a) for h in histories.values() for i, a, _ in h])
    histories, events = _CARD_CACHE[card]
    users = list(histories)
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(users))[: min(n, len(users))]
    out, offset = [], _CLOCK[0]
    _CLOCK[0] += n  # later calls send later events, whichever users they pick
    for k in range(n):
        user = users[chosen[k % len(chosen)]]
        item, action = events[int(rng.integers(len(events)))]
        event = {"user_id": user, "item_id": item, "action": action, "timestamp": histories[user][-1][2] + offset + k}
        out.append((f"/v1/events?{query}", json.dumps({"events": [event]}).encode()))
    return out


def start_server(command: list[str], port: int, env: dict) -> subprocess.Popen:
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_up(port, process)
    return process


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def run_load(model: Path, card: str, data_dir, rates: dict, seconds: float, store: str, threads: int) -> list[dict]:
    """Each path's rates against ``interestbert serve`` with ``store`` (the card's histories stored first)."""
    rows = []
    for path, (query, path_rates) in rates.items():
        port = free_port()
        command = [sys.executable, "-m", "interestbert.inference.cli", "serve", "--model", str(model), "--card", card]
        command += ["--port", str(port), "--store", store, "--seed-from-card", "--log-level", "warning"]
        command += ["--scorer", path.split()[0], "--threads", str(threads)]
        if data_dir is not None:
            command += ["--data-dir", str(data_dir)]
        server = start_server(command, port, dict(os.environ))
        try:
            load(port, event_requests(card, data_dir, 200, query, seed=99), 50)  # warm up
            for rate in path_rates:
                n = int(min(max(rate * seconds, 100), 3000))
                row = {"server": "interestbert serve", "store": store.split(":")[0], "path": path}
                row.update(load(port, event_requests(card, data_dir, n, query, seed=int(rate)), rate))
                rows.append(row)
                print(row, flush=True)
                if row["p99_ms"] > 2000:
                    break  # past saturation: higher rates only queue
        finally:
            stop(server)
    return rows


NAIVE_APP = """
import json, sys, numpy as np
sys.path.insert(0, {bench!r})
from fastapi import FastAPI, Request
from serve import Naive
from interestbert.encoder.cards import load_card_data
from interestbert.encoder.model import InterestEncoder
from interestbert.encoder.verbalise import Verbaliser
from interestbert.inference.live import card_histories
import uvicorn
data = load_card_data({card!r}, {data_dir!r})
encoder = InterestEncoder.from_pretrained({model!r}).merge_adapter()
naive = Naive(encoder, Verbaliser(data, encoder.tokenizer, encoder.max_seq_length))
naive.histories.update(card_histories(data))
app = FastAPI()
@app.get("/healthz")
def health():
    return {{"ok": True}}
@app.post("/v1/events")
async def events(request: Request, k: int = 10):
    body = json.loads(await request.body())
    e = body["events"][0]
    return {{"items": naive.answer(e["user_id"], (e["item_id"], e["action"], e["timestamp"]), k, {head!r})}}
import torch
torch.set_num_threads({threads})
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning", access_log=False)
"""


def run_naive(model: Path, card: str, data_dir, rates: dict, seconds: float, threads: int) -> list[dict]:
    rows = []
    for path, (query, path_rates) in rates.items():
        if "drift" in path:
            continue
        port = free_port()
        script = NAIVE_APP.format(
            bench=str(Path(__file__).parent),
            card=card,
            data_dir=None if data_dir is None else str(data_dir),
            model=str(model),
            head=path.split()[0],
            port=port,
            threads=threads,
        )
        server = start_server([sys.executable, "-c", script], port, dict(os.environ))
        try:
            load(port, event_requests(card, data_dir, 50, query, seed=99), 10)
            for rate in path_rates:
                n = int(min(max(rate * seconds, 100), 3000))
                row = {"server": "naive wrapper", "store": "memory", "path": path}
                row.update(load(port, event_requests(card, data_dir, n, query, seed=int(rate)), rate))
                rows.append(row)
                print(row, flush=True)
                if row["p99_ms"] > 2000:
                    break
        finally:
            stop(server)
    return rows


def redis_server() -> tuple[str | None, subprocess.Popen | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        return None, None
    port = free_port()
    folder = tempfile.mkdtemp(prefix="bench-redis-")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return f"redis://127.0.0.1:{port}/0", process


# ---------------------------------------------------------------------------------------------------- report


def markdown(result: dict) -> str:
    lines = [
        f"# Live service latency: {result['card']}",
        "",
        f"Machine: {result['machine']}; {result['date']}. Command: `{result['command']}`.",
        "",
        "The model: packaged all-MiniLM-L6-v2, horizons `1:0.5,4:0.3,all:0.2`, token budget 128, both heads at "
        "their trained shape (untrained weights: the cost depends on the shapes); torch threads "
        f"{result['threads']} in the servers and in process. The load generator runs on the same 2 cores as the "
        "server.",
        "",
        "## Post one event, get the top-10 (HTTP on loopback, open loop)",
        "",
        "| server | store | path | rate (req/s) | requests | errors | p50 ms | p99 ms | max ms |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["load"]:
        lines.append(
            f"| {r['server']} | {r['store']} | {r['path']} | {r['rate']:g} | {r['requests']} | {r['errors']} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} |"
        )
    lines += ["", "Highest rate holding p99 <= 50 ms:", ""]
    for key, rate in result["highest_rate_p99_50ms"].items():
        lines.append(f"- {key}: {rate if rate is not None else 'none of the rates tried'} req/s")
    lines += [
        "",
        "## One event applied and the top-10 answered, by history length (in process)",
        "",
        "| path | history (events) | live p50 ms | live p99 ms | naive p50 ms | naive p99 ms | naive / live (p50) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["cost"]:
        naive = (
            f"{r['naive_p50_ms']:.2f} | {r['naive_p99_ms']:.2f} | {r['speedup_p50']:.1f}x"
            if "naive_p50_ms" in r
            else "- | - | -"
        )
        lines.append(f"| {r['path']} | {r['history']:,} | {r['live_p50_ms']:.2f} | {r['live_p99_ms']:.2f} | {naive} |")
    return "\n".join(lines) + "\n"


def highest_rates(rows: list[dict]) -> dict:
    out = {}
    for r in rows:
        key = f"{r['server']}, {r['store']}, {r['path']}"
        best = out.get(key)
        if r["p99_ms"] <= 50 and r["errors"] == 0:
            out[key] = max(best or 0, r["rate"])
        else:
            out.setdefault(key, None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--card", default="movielens-1m")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve"))
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "interestbert-serve-bench")
    parser.add_argument("--repeats", type=int, default=200, help="Events per path and history length (cost).")
    parser.add_argument("--seconds", type=float, default=10, help="Seconds of load per rate.")
    parser.add_argument("--parts", nargs="+", default=["cost", "load", "naive"], choices=["cost", "load", "naive"])
    parser.add_argument("--paths", nargs="+", default=None, help="Only these load paths (default: all).")
    parser.add_argument("--threads", type=int, default=1, help="The server's torch threads (serve --threads).")
    args = parser.parse_args()
    data_dir = data_dir_of(args.card, args.data_dir)
    model = build_model(args.card, data_dir, args.work / f"model-{args.card}")
    rates = {
        "sequence": ("k=10", (50, 100, 150, 200)),
        "strategy": ("k=10", (10, 25, 50, 100)),
        "sequence drift-aware": ("k=10&drift_aware=true", (25, 50, 100, 200)),
    }
    if args.paths:
        rates = {k: v for k, v in rates.items() if k in args.paths}
    result = {
        "card": args.card,
        "machine": hardware(),
        "date": dt.date.today().isoformat(),
        "command": "python benchmarks/serve.py " + " ".join(sys.argv[1:]),
        "threads": args.threads,
        "cost": [],
        "load": [],
    }

    def save() -> None:  # after each part: a failure later loses nothing measured
        result["highest_rate_p99_50ms"] = highest_rates(result["load"])
        write_report(args.out, args.card, result, markdown(result))

    if "cost" in args.parts:
        import torch

        torch.set_num_threads(args.threads)  # the same as the servers'
        result["cost"] = per_event_cost(model, args.card, data_dir, args.repeats)
    if "load" in args.parts:
        save()
        result["load"] += run_load(model, args.card, data_dir, rates, args.seconds, "memory", args.threads)
        save()
        url, redis = redis_server()
        if url is not None:
            try:
                sequence = {"sequence": rates["sequence"]} if "sequence" in rates else {}
                result["load"] += run_load(model, args.card, data_dir, sequence, args.seconds, url, args.threads)
            finally:
                redis.terminate()
    if "naive" in args.parts:
        naive_rates = {"sequence": ("k=10", (25, 50, 100)), "strategy": ("k=10", (5, 10, 25))}
        save()
        result["load"] += run_naive(model, args.card, data_dir, naive_rates, args.seconds, args.threads)
    save()


if __name__ == "__main__":
    main()
