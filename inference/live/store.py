"""Where the live service keeps people's states and the items it was given: in process, or in Redis.

A store holds two things: one value per person (their `UserState` as JSON, under a key made from a hash of their
id, so any id is a safe key and nothing else about them is in the key), and the log of items added through the
service (so another replica, or the service after a restart, adds the same items). `open_store` picks one from a
URL:

- ``memory`` (the default): a dict in the process; nothing to install, forgotten on exit;
- ``file:PATH``: the same, written atomically to PATH as JSON every few seconds while it changes, at shutdown
  and at once after an erase, and read back at start;
- ``redis://HOST:PORT/DB`` (or ``rediss://``, ``unix://``): Redis. States survive a restart of the service,
  replicas share them, and each update is one optimistic transaction (WATCH/MULTI) over the keys of the people
  it touches, retried when another replica wrote one of them meanwhile.

With ``ttl`` (seconds), a person not updated for that long is forgotten (Redis expires the key; the memory store
drops it when it is next read or written to disk).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from interestbert.encoder.errors import InterestBertError
from interestbert.encoder.files import atomic_write_text

PREFIX = "interestbert:"
STORE_VERSION = 1


def user_key(user_id: str) -> str:
    """The store's key of a person: a hash of their id (never the id itself)."""
    return hashlib.sha256(user_id.encode()).hexdigest()[:40]


class StateStore:
    """What the service needs from a store (see the module docstring)."""

    kind = "store"

    def get(self, user_id: str) -> bytes | None:
        raise NotImplementedError

    def update(self, user_ids: Sequence[str], change: Callable[[dict], dict]) -> None:
        """Reads the states of ``user_ids`` (``{user: bytes or None}``), calls ``change`` and writes what it
        returns (``{user: bytes}``), as one atomic step; ``change`` may raise to write nothing."""
        raise NotImplementedError

    def delete(self, user_id: str) -> bool:
        """Erases everything held about a person; True when there was something."""
        raise NotImplementedError

    def add_items(self, records: Sequence[dict]) -> int:
        """Appends items to the log; returns its new length."""
        raise NotImplementedError

    def items_since(self, position: int) -> list[dict]:
        """The items logged after the first ``position``."""
        raise NotImplementedError

    def items_logged(self) -> int:
        raise NotImplementedError

    def users(self) -> int:
        """People held now."""
        raise NotImplementedError

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


class MemoryStore(StateStore):
    """States in a dict, optionally mirrored to a JSON file (``path``) by `flush`."""

    kind = "memory"

    def __init__(self, path: str | os.PathLike | None = None, ttl: float | None = None):
        self.path = None if path is None else Path(path)
        self.ttl = ttl
        self._states: dict[str, tuple[bytes, float]] = {}  # key -> (state, last write time)
        self._items: list[dict] = []
        self._lock = threading.Lock()
        self._dirty = False
        if self.path is not None and self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            if saved.get("v") != STORE_VERSION:
                raise ValueError("another format version")
            self._states = {k: (v.encode(), float(t)) for k, (v, t) in saved["users"].items()}
            self._items = list(saved["items"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InterestBertError(
                f"--store file:{self.path} is not a state file written by interestbert serve ({err}); pass "
                "another path, or move that file away."
            ) from None

    def _alive(self, key: str, now: float) -> bytes | None:
        found = self._states.get(key)
        if found is None:
            return None
        if self.ttl is not None and now - found[1] > self.ttl:
            del self._states[key]
            self._dirty = True
            return None
        return found[0]

    def get(self, user_id: str) -> bytes | None:
        with self._lock:
            return self._alive(user_key(user_id), time.time())

    def update(self, user_ids, change) -> None:
        with self._lock:
            now = time.time()
            new = change({u: self._alive(user_key(u), now) for u in user_ids})
            for user, value in new.items():
                self._states[user_key(user)] = (value, now)
            self._dirty = True

    def delete(self, user_id: str) -> bool:
        with self._lock:
            found = self._states.pop(user_key(user_id), None) is not None
            self._dirty |= found
        if found:
            self.flush()  # an erased person must not stay in the file either
        return found

    def add_items(self, records) -> int:
        with self._lock:
            self._items.extend(records)
            self._dirty = True
            return len(self._items)

    def items_since(self, position: int) -> list[dict]:
        with self._lock:
            return list(self._items[position:])

    def items_logged(self) -> int:
        return len(self._items)

    def users(self) -> int:
        return len(self._states)

    def flush(self) -> None:
        """Writes the states and items to ``path`` (atomically) when they changed since the last flush."""
        if self.path is None:
            return
        with self._lock:
            if not self._dirty:
                return
            now = time.time()
            for key in list(self._states):
                self._alive(key, now)
            text = json.dumps(
                {
                    "v": STORE_VERSION,
                    "users": {k: [v.decode(), t] for k, (v, t) in self._states.items()},
                    "items": self._items,
                }
            )
            self._dirty = False
        atomic_write_text(self.path, text)

    def close(self) -> None:
        self.flush()


class RedisStore(StateStore):
    """States in Redis under ``{prefix}user:{hash}``, the item log in the list ``{prefix}items``."""

    kind = "redis"

    def __init__(self, url: str, ttl: float | None = None, prefix: str = PREFIX, timeout: float = 5.0):
        try:
            import redis
        except ImportError:
            raise InterestBertError(
                "--store redis://... needs the redis package; pip install 'interestbert[redis]'."
            ) from None
        self.redis = redis
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.ttl = None if ttl is None else int(max(1, round(ttl)))
        self.prefix = prefix
        try:
            self.client.ping()
        except redis.RedisError as err:
            raise InterestBertError(
                f"--store {redact(url)}: Redis does not answer ({err}); start it, or check the host, port and password."
            ) from None

    def _key(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_key(user_id)}"

    def get(self, user_id: str) -> bytes | None:
        return self.client.get(self._key(user_id))

    def update(self, user_ids, change) -> None:
        keys = {u: self._key(u) for u in user_ids}

        def step(pipe):
            values = pipe.mget(list(keys.values()))
            new = change(dict(zip(keys, values)))
            pipe.multi()
            for user, value in new.items():
                pipe.set(keys[user], value, ex=self.ttl)

        self.client.transaction(step, *keys.values())

    def delete(self, user_id: str) -> bool:
        return bool(self.client.delete(self._key(user_id)))

    def add_items(self, records) -> int:
        return int(self.client.rpush(f"{self.prefix}items", *[json.dumps(r) for r in records]))

    def items_since(self, position: int) -> list[dict]:
        return [json.loads(r) for r in self.client.lrange(f"{self.prefix}items", position, -1)]

    def items_logged(self) -> int:
        return int(self.client.llen(f"{self.prefix}items"))

    def users(self) -> int:
        return sum(1 for _ in self.client.scan_iter(match=f"{self.prefix}user:*", count=1000))

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except self.redis.RedisError:
            return False

    def close(self) -> None:
        self.client.close()


def redact(url: str) -> str:
    """A store URL without its password (for messages and logs)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def open_store(url: str | None = "memory", ttl: float | None = None) -> StateStore:
    """``memory``, ``file:PATH`` or a Redis URL (module docstring)."""
    if ttl is not None and not ttl > 0:
        raise InterestBertError(f"--ttl is {ttl}; it must be a positive number of seconds (or left out: no expiry).")
    url = url or "memory"
    if url == "memory":
        return MemoryStore(ttl=ttl)
    if url.startswith("file:"):
        path = Path(url[len("file:") :])
        if not path.name or path.is_dir():
            raise InterestBertError(f"--store {url}: pass a file's path after file:, e.g. file:states.json.")
        return MemoryStore(path, ttl)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url, ttl)
    raise InterestBertError(
        f"--store {redact(url)} is not a store interestbert knows; pass memory, file:PATH or redis://HOST:PORT/DB."
    )
