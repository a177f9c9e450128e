"""The Redis store against a real redis-server: state survives a restart of the service, two replicas answer the
same (items added on one are recommended by the other), an erase leaves no key of the person, idle people expire."""

from __future__ import annotations

import time

from helpers import call, serving

from interestbert.inference.live.service import Service
from interestbert.inference.live.store import RedisStore, open_store, user_key


def _post(url, user, items, start=0):
    events = [{"user_id": user, "item_id": i, "action": "viewed", "timestamp": start + t} for t, i in enumerate(items)]
    status, body = call("POST", f"{url}/v1/events", {"events": events})
    assert status == 200, body
    return body


def test_state_survives_a_restart_and_two_replicas_answer_the_same(live, redis_url):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    items = live.verbaliser.item_ids
    first = Service(live, open_store(redis_url))
    with serving(first) as url:
        _post(url, "carol", items[:9])
        before = call("GET", f"{url}/v1/users/carol/recommendations?k=5")[1]
    first.store.close()
    # a restart: a new service and a new connection, the same Redis
    with serving(Service(live, open_store(redis_url))) as a, serving(Service(live, open_store(redis_url))) as b:
        assert call("GET", f"{a}/v1/users/carol/recommendations?k=5")[1]["items"] == before["items"]
        _post(a, "dave", items[20:24])
        _post(b, "dave", items[24:28], start=10)  # the other replica carries on the same person
        answers = [call("GET", f"{u}/v1/users/dave/recommendations?k=5")[1] for u in (a, b)]
        assert answers[0]["items"] == answers[1]["items"]
        assert call("GET", f"{b}/v1/users/dave/interest")[1]["n_events"] == 8
        # an item added on one replica is known to the other at once
        status, _ = call("POST", f"{a}/v1/items", {"items": [{"item_id": "shared-new", "text": "jazz vinyl record"}]})
        assert status == 200
        status, body = call(
            "POST", f"{b}/v1/events", {"events": [{"user_id": "dave", "item_id": "shared-new", "timestamp": 99}]}
        )
        assert status == 200, body
        assert call("GET", f"{a}/v1/users/dave/interest")[1]["n_events"] == 9


def test_an_erase_leaves_no_key_and_no_trace_of_the_person(live, redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    items = live.verbaliser.item_ids
    with serving(Service(live, open_store(redis_url))) as url:
        _post(url, "erin-4242", items[:6])
        _post(url, "frank", items[6:12])
        keys = set(client.keys("*"))
        assert f"interestbert:user:{user_key('erin-4242')}".encode() in keys
        assert not any(b"erin-4242" in k for k in keys)  # the id is not in the key
        assert call("DELETE", f"{url}/v1/users/erin-4242")[0] == 200
        remaining = {k: client.get(k) for k in client.keys("interestbert:user:*")}
        assert len(remaining) == 1 and not any(b"erin-4242" in v for v in remaining.values())
        assert call("GET", f"{url}/v1/users/erin-4242/recommendations")[0] == 404
        assert call("GET", f"{url}/v1/users/frank/recommendations")[0] == 200


def test_an_idle_person_expires_after_the_ttl(live, redis_url):
    store = RedisStore(redis_url, ttl=1)
    with serving(Service(live, store)) as url:
        _post(url, "gina", live.verbaliser.item_ids[:3])
        assert 0 < store.client.ttl(f"interestbert:user:{user_key('gina')}") <= 1
        time.sleep(2.1)
        assert call("GET", f"{url}/v1/users/gina/recommendations")[0] == 404


def test_a_wrong_store_url_is_one_sentence():
    import pytest

    from interestbert.encoder.errors import InterestBertError

    with pytest.raises(InterestBertError, match="does not answer") as err:
        open_store("redis://:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in str(err.value) and ":***@" in str(err.value)
    with pytest.raises(InterestBertError, match="not a store interestbert knows") as err:
        open_store("postgres://x")
    assert "hunter2" not in str(err.value)
