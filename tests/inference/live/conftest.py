"""Fixtures of the live tests: a small model with both heads over the synthetic shop, a service on a free
loopback port, and a real ``redis-server`` (skipped with a reason where it is not installed; required in CI)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest


@pytest.fixture()
def live(tiny_encoder, synthetic_data):
    """A model with both heads and two interest horizons on the synthetic shop, its drift monitor on the encoder."""
    import torch

    from interestbert.encoder import StrategyHead, Verbaliser
    from interestbert.encoder.drift import DriftConfig, DriftMonitor
    from interestbert.encoder.sequence import SequenceHead, SequenceOptions
    from interestbert.inference.live import LiveRecommender

    verbaliser = Verbaliser(synthetic_data, tiny_encoder.tokenizer, 64)
    vectors = tiny_encoder.encode(verbaliser.item_texts)
    rng = np.random.default_rng(0)
    tiny_encoder.head = StrategyHead(verbaliser.item_ids, vectors, popularity=rng.integers(0, 50, len(vectors)))
    torch.manual_seed(0)
    head = SequenceHead(
        verbaliser.item_ids,
        vectors,
        popularity=rng.integers(0, 50, len(vectors)),
        options=SequenceOptions(dim=8, layers=1, heads=2, dropout=0.0, max_events=12),
    ).eval()
    with torch.no_grad():
        head.item.normal_(0, 0.5)
    tiny_encoder.sequence_head = head
    tiny_encoder.horizons = ((3, 0.4), (None, 0.6))
    monitor = DriftMonitor(
        tiny_encoder.encode,
        DriftConfig(window=4, stride=2, threshold=0.02, alpha_max=0.6, centre=False),
        separator=verbaliser.separator,
    )
    return LiveRecommender.from_card_data(tiny_encoder, synthetic_data, monitor, verbaliser=verbaliser)


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


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server on a free loopback port (no persistence), for the session."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have redis-server (.ci/run installs it with apt-get).")
        pytest.skip("needs redis-server (apt-get install redis-server), absent here")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    deadline = time.time() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.time() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)
