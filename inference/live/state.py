"""A person's state as the live service holds it: their newest events, the items they have seen, their last drift.

The state is all the service knows about a person, and all it stores: `UserState.to_json` is the value kept under
the person's key (`interestbert.inference.live.store`), and erasing the key erases the person. It is bounded:

- ``events``: the newest ``max_events`` events as ``(item_id, action, timestamp)``, oldest first. The default
  (`LiveRecommender.max_events`) is the longest stretch any answer reads: the sequence head's ``max_events``, the
  drift tail (``TAIL + 2 * window``), the longest interest horizon, and the token budget's worth of events (an event
  costs at least one token), so an answer from the state equals the batch answer from the whole history;
- ``seen``: the newest ``max_seen`` distinct items, never recommended again (older ones may be);
- ``n_events`` (every event accepted), ``last_timestamp`` and ``last_drift`` (the newest detection, for the
  explanation of a recommendation).

At 256 events of short ids a state is about 10 KB of JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from interestbert.encoder.errors import InterestBertError, excerpt

MAX_ID = 256  # characters of a user or item id
MAX_ACTION = 200  # characters of an action
STATE_VERSION = 1


@dataclass
class LiveEvent:
    """One incoming event: who, which item, what they did (as the card's data writes it: "rated 4/5", "viewed"),
    when (an integer timestamp in the card's unit)."""

    user_id: str
    item_id: str
    timestamp: int
    action: str = ""

    @classmethod
    def parse(cls, value: object, where: str) -> LiveEvent:
        """An event from a JSON object, checked; a bad one raises `InterestBertError` naming ``where``."""
        if not isinstance(value, dict):
            raise InterestBertError(f"{where}: an event should be an object with user_id, item_id and timestamp.")
        unknown = sorted(set(value) - {"user_id", "item_id", "timestamp", "action"})
        if unknown:
            raise InterestBertError(
                f"{where}: unknown field {excerpt(unknown[0])}; an event has user_id, item_id, timestamp and action."
            )
        for name in ("user_id", "item_id"):
            check_id(value.get(name), f"{where}.{name}")
        timestamp = value.get("timestamp")
        if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)) or not math.isfinite(timestamp):
            raise InterestBertError(
                f"{where}.timestamp is {excerpt(timestamp)}; it should be an integer time (seconds since 1970, "
                "or the card's own unit)."
            )
        if timestamp != int(timestamp) or abs(timestamp) > 2**62:
            raise InterestBertError(f"{where}.timestamp is {timestamp}; it should be a whole number in range.")
        action = value.get("action", "")
        if not isinstance(action, str) or len(action) > MAX_ACTION:
            raise InterestBertError(
                f"{where}.action should be a string of at most {MAX_ACTION} characters (as the card's data "
                f"writes it, e.g. 'rated 4/5'), got {excerpt(action)}."
            )
        return cls(value["user_id"], value["item_id"], int(timestamp), action)


def check_id(value: object, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID or not value.isprintable():
        raise InterestBertError(
            f"{where} should be a non-empty printable string of at most {MAX_ID} characters, got {excerpt(value)}."
        )
    return value


@dataclass
class UserState:
    """What the service holds about one person (module docstring)."""

    user_id: str
    events: list[tuple[str, str, int]] = field(default_factory=list)  # (item_id, action, timestamp), oldest first
    seen: list[str] = field(default_factory=list)  # distinct item ids, newest last
    n_events: int = 0
    last_drift: dict | None = None  # `DriftEvent` fields, ``index`` counted over all ``n_events``

    @property
    def last_timestamp(self) -> int | None:
        return self.events[-1][2] if self.events else None

    def add(self, item_id: str, action: str, timestamp: int, max_events: int, max_seen: int) -> None:
        """Appends one event, dropping the oldest beyond ``max_events`` and the oldest seen items beyond
        ``max_seen``."""
        self.events.append((item_id, action, int(timestamp)))
        if len(self.events) > max_events:
            del self.events[: len(self.events) - max_events]
        if item_id in self.seen:
            self.seen.remove(item_id)
        self.seen.append(item_id)
        if len(self.seen) > max_seen:
            del self.seen[: len(self.seen) - max_seen]
        self.n_events += 1

    def to_json(self) -> bytes:
        value = {
            "user_id": self.user_id,
            "events": self.events,
            "seen": self.seen,
            "n_events": self.n_events,
            "last_drift": self.last_drift,
            "v": STATE_VERSION,
        }
        return json.dumps(value, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> UserState:
        value = json.loads(raw)
        if value.pop("v", None) != STATE_VERSION:
            raise InterestBertError("a stored user state has another format version; erase it or migrate the store.")
        value["events"] = [tuple(e) for e in value["events"]]
        return cls(**value)
