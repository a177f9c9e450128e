"""``interestbert serve`` over HTTP on loopback: the answers equal the library call's, people are erased, items
are added live, every bad input is a 4xx with one sentence, overload is a 503, and nothing personal is logged."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
from helpers import call, serving

from interestbert.inference.live import card_histories
from interestbert.inference.live.service import Service
from interestbert.inference.live.store import MemoryStore


def _events(user, history):
    return [{"user_id": user, "item_id": i, "action": a, "timestamp": t} for i, a, t in history]


def test_posted_events_give_the_library_answer_and_the_interest_vector(live, synthetic_data):
    users = [live.verbaliser.users[u] for u in range(4)]
    histories = card_histories(synthetic_data, users)
    with serving(Service(live, MemoryStore())) as url:
        for user in users:  # in three requests: the state carries over
            history = histories[user]
            for part in (history[:5], history[5:9], history[9:]):
                status, body = call("POST", f"{url}/v1/events", {"events": _events(user, part)})
                assert status == 200 and body["accepted"] == len(part), body
        for user in users:
            expected = live.recommend(live.state_from_events(user, histories[user]), 5)
            status, body = call("GET", f"{url}/v1/users/{user}/recommendations?k=5")
            assert status == 200 and [i["item_id"] for i in body["items"]] == expected.items
            np.testing.assert_allclose([i["score"] for i in body["items"]], expected.scores, rtol=1e-5)
            assert body["scorer"] == "sequence head" and body["why"]["text"].startswith("driven most by")
            assert {b["item_id"] for b in body["why"]["because"]} == set(expected.items)
        status, body = call("GET", f"{url}/v1/users/{users[0]}/interest")
        vector = live.interest(live.state_from_events(users[0], histories[users[0]]))
        assert status == 200 and body["dim"] == len(vector) and body["n_events"] == len(histories[users[0]])
        np.testing.assert_allclose(body["vector"], vector, atol=1e-6)
        # one round trip: post an event, get the new top-k
        item = live.verbaliser.item_ids[3]
        event = {"user_id": users[1], "item_id": item, "action": "viewed", "timestamp": 10**10}
        status, body = call("POST", f"{url}/v1/events?k=4", {"events": [event]})
        now = live.recommend(live.state_from_events(users[1], [*histories[users[1]], (item, "viewed", 10**10)]), 4)
        assert status == 200 and [i["item_id"] for i in body["recommendations"][0]["items"]] == now.items
        status, metrics = call("GET", f"{url}/metrics")
        assert status == 200 and 'interestbert_requests_total{route="/v1/events",status="200"}' in metrics
        status, spec = call("GET", f"{url}/openapi.json")
        assert status == 200 and {"/v1/events", "/v1/items", "/v1/users/{user_id}/recommendations"} <= set(
            spec["paths"]
        )
        status, health = call("GET", f"{url}/healthz")
        assert status == 200 and health["status"] == "ok" and health["items"] == len(live.verbaliser.item_ids)


def test_erase_forgets_a_person_and_added_items_are_recommended_at_once(live):
    from interestbert.encoder.scoring import scorer_for

    live.scorer = scorer_for(live.encoder, live.verbaliser, "text")
    items = live.verbaliser.item_ids
    history = [(items[i], "viewed", i) for i in range(6)]
    store = MemoryStore()
    with serving(Service(live, store)) as url:
        assert call("POST", f"{url}/v1/events", {"events": _events("ann", history)})[0] == 200
        top = call("GET", f"{url}/v1/users/ann/recommendations?k=1")[1]["items"][0]["item_id"]
        text = live.verbaliser.item_texts[live.verbaliser.item_index[top]]
        status, body = call("POST", f"{url}/v1/items", {"items": [{"item_id": "fresh", "text": text}]})
        assert status == 200 and body == {"added": 1, "updated": 0}
        recs = call("GET", f"{url}/v1/users/ann/recommendations?k=2")[1]
        assert "fresh" in [i["item_id"] for i in recs["items"]]
        assert store.items_logged() == 1  # for other replicas and restarts
        assert call("DELETE", f"{url}/v1/users/ann")[0] == 200
        assert store.users() == 0
        status, body = call("GET", f"{url}/v1/users/ann/recommendations")
        assert status == 404 and "unknown" in body["error"]
        assert call("DELETE", f"{url}/v1/users/ann")[0] == 404


BAD = [
    # (method, path, body or raw bytes, extra headers, status, words in the one sentence)
    ("POST", "/v1/events", b"{not json", {}, 400, "not valid JSON"),
    ("POST", "/v1/events", {"events": [{"user_id": "u", "item_id": "I00001"}]}, {}, 400, "timestamp is missing"),
    ("POST", "/v1/events", {"events": [{"user_id": "u", "item_id": "I00001", "timestamp": "x"}]}, {}, 400, "integer"),
    ("POST", "/v1/events", {"events": [{"user_id": "u", "item_id": "nope", "timestamp": 5}]}, {}, 422, "catalogue"),
    ("POST", "/v1/events", {"events": [{"user_id": "u", "item_id": "I00001", "timestamp": 1}]}, {}, 409, "older"),
    ("POST", "/v1/events", {"events": []}, {}, 400, "at least one"),
    ("POST", "/v1/events", {"events": [], "extra": 1}, {}, 400, "extra"),
    ("POST", "/v1/events", b"x" * 3000, {}, 413, "larger than"),
    ("GET", "/v1/users/ghost/recommendations", None, {}, 404, "unknown"),
    ("GET", "/v1/users/u/recommendations?k=0", None, {}, 400, "k"),
    ("GET", "/v1/users/u/recommendations?drift_aware=maybe", None, {}, 400, "drift_aware"),
    ("POST", "/v1/items", {"items": [{"item_id": "x"}]}, {}, 400, "text is missing"),
    ("POST", "/v1/items", {"items": [{"item_id": "x", "text": " "}]}, {}, 400, "non-empty"),
]


@pytest.mark.parametrize("method,path,body,headers,status,words", BAD, ids=[f"{b[4]}-{b[5]}" for b in BAD])
def test_each_bad_request_gets_its_4xx_and_one_sentence(live, method, path, body, headers, status, words):
    service = Service(live, MemoryStore(), max_body=2000)
    with serving(service) as url:
        first = {"user_id": "u", "item_id": "I00001", "timestamp": 10}
        assert call("POST", f"{url}/v1/events", {"events": [first]})[0] == 200
        raw = body if isinstance(body, bytes) else None
        got, answer = call(method, url + path, None if raw else body, headers, raw=raw)
    assert got == status, answer
    message = answer["error"]
    assert words in message, message
    assert message.count("\n") == 0 and message.endswith((".", ")")) and len(message) < 400


def test_the_key_is_required_and_never_logged(live, caplog):
    key = "s3cret-key-value"
    with serving(Service(live, MemoryStore(), api_key=key)) as url, caplog.at_level(logging.DEBUG, "interestbert"):
        event = {"user_id": "private-person-7", "item_id": "I00002", "timestamp": 3, "action": "viewed"}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}):
            status, body = call("POST", f"{url}/v1/events", {"events": [event]}, headers)
            assert status == 401 and "API key" in body["error"]
        assert call("GET", f"{url}/healthz")[0] == 401
        assert call("POST", f"{url}/v1/events", {"events": [event]}, {"Authorization": f"Bearer {key}"})[0] == 200
        status, _ = call("GET", f"{url}/v1/users/private-person-7/recommendations", headers={"X-API-Key": key})
        assert status == 200
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "private-person-7" not in text and key not in text and "I00002" not in text
    assert "/v1/users/{user_id}/recommendations" in text  # requests are logged at debug, by route template


def test_an_overloaded_service_answers_503_at_once(live):
    service = Service(live, MemoryStore(), max_pending=1)
    with serving(service) as url:
        event = {"user_id": "u", "item_id": "I00001", "timestamp": 10}
        with live._lock:  # the model is busy: the first request waits in flight
            slow = threading.Thread(target=call, args=("POST", f"{url}/v1/events", {"events": [event]}))
            slow.start()
            while service.in_flight < 1:
                pass
            status, body = call("GET", f"{url}/v1/users/u/recommendations")
        slow.join(30)
        assert status == 503 and "busy" in body["error"]
        assert call("GET", f"{url}/v1/users/u/recommendations")[0] == 200  # and answers again once it is free


def test_a_file_store_keeps_people_across_a_restart_and_forgets_the_erased_at_once(live, tmp_path):
    path = tmp_path / "states.json"
    event = {"user_id": "bob", "item_id": "I00004", "timestamp": 1, "action": "viewed"}
    store = MemoryStore(path)
    with serving(Service(live, store)) as url:
        assert call("POST", f"{url}/v1/events", {"events": [event, dict(event, user_id="eve")]})[0] == 200
        before = call("GET", f"{url}/v1/users/bob/recommendations")[1]
    store.close()
    again = MemoryStore(path)
    with serving(Service(live, again)) as url:
        assert call("GET", f"{url}/v1/users/bob/recommendations")[1]["items"] == before["items"]
        assert call("DELETE", f"{url}/v1/users/bob")[0] == 200
        saved = path.read_text()
        assert "bob" not in saved and "eve" in saved  # written at once, not at the next flush


def test_the_serve_command_starts_on_a_saved_model_and_answers(live, tiny_bert, synthetic_dir, tmp_path):
    """``interestbert serve`` as a user starts it: a saved model folder, a card, the card's histories stored."""
    import os
    import subprocess
    import sys
    import time

    from helpers import free_port

    model = tmp_path / "model"
    live.encoder.save_pretrained(model)
    port = free_port()
    env = dict(os.environ, INTERESTBERT_TEST_KEY="k-123")
    command = [sys.executable, "-m", "interestbert.inference.cli", "serve", "--model", str(model), "--card"]
    command += ["synthetic-shop", "--data-dir", str(synthetic_dir), "--port", str(port), "--seed-from-card"]
    command += ["--api-key-env", "INTERESTBERT_TEST_KEY", "--max-seq-length", "64"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url, key = f"http://127.0.0.1:{port}", {"X-API-Key": "k-123"}
    try:
        deadline = time.time() + 120
        while not (_up(port) and call("GET", f"{url}/healthz", headers=key)[0] == 200):
            assert process.poll() is None and time.time() < deadline, process.stdout.read()
            time.sleep(0.2)
        user = live.verbaliser.users[2]
        status, body = call("GET", f"{url}/v1/users/{user}/recommendations?k=3", headers=key)
        assert status == 200 and body["scorer"] == "sequence head" and len(body["items"]) == 3
        assert call("GET", f"{url}/v1/users/{user}/recommendations", headers={})[0] == 401
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert "serving" in output and user not in output and "k-123" not in output


def _up(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_body_sent_without_its_length_is_cut_off_at_the_limit(live):
    """Chunked bodies have no Content-Length to refuse up front: the service stops reading at ``max_body``."""
    import http.client
    import json as json_module

    with serving(Service(live, MemoryStore(), max_body=2000)) as url:
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        chunks = (b'{"events": [' + b" " * 1000 for _ in range(5))
        connection.request("POST", "/v1/events", body=chunks, encode_chunked=True, headers={"content-type": "a/json"})
        response = connection.getresponse()
        body = json_module.loads(response.read())
    assert response.status == 413 and "larger than 2,000 bytes" in body["error"]
