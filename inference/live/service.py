"""``interestbert serve``: the live recommender over HTTP (FastAPI under uvicorn).

FastAPI, because it gives the typed request bodies, their checks and the OpenAPI page (``/docs``, ``/openapi.json``)
for free, on Starlette, whose own cost per request is small next to the model's; uvicorn is the ASGI server both
are made for. The endpoints are plain functions (FastAPI runs them in its thread pool); the model work is done under
the recommender's lock.

- ``POST /v1/events``: one or many events (``{"events": [...]}``), applied per person atomically with their stored
  state; answers the drift events they fired, and with ``?k=`` the new top-k of each person in the same round trip;
- ``GET /v1/users/{user_id}/recommendations?k=&drift_aware=&explain=``: items, scores and why;
- ``GET /v1/users/{user_id}/interest``: the interest vector (``interestbert encode``'s);
- ``DELETE /v1/users/{user_id}``: erases everything held about the person;
- ``POST /v1/items``: adds or updates items from their text, recommendable at once (and on every replica);
- ``GET /healthz``, ``GET /metrics`` (Prometheus).

Every refusal is a 4xx with one sentence in ``{"error": ...}``: a missing or wrong key (401), a body over
``max_body`` bytes (413), malformed JSON or fields (400), an unknown user (404), an out-of-order timestamp (409),
an unknown item (422); more than ``max_pending`` requests at once get 503 at once instead of a queue. User ids,
event texts and keys are never logged at info level: requests are logged at debug level by their route template.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections import defaultdict

from pydantic import BaseModel, ConfigDict, Field

from interestbert.encoder.errors import InterestBertError, excerpt

from .recommender import LiveError, LiveRecommender
from .state import LiveEvent, UserState
from .store import StateStore

logger = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # bytes of a request body
MAX_PENDING = 64  # requests in flight before 503
MAX_EVENTS = 10_000  # events in one POST


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(max_length=256)
    item_id: str = Field(max_length=256)
    timestamp: int
    action: str = Field("", max_length=200)


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(max_length=MAX_EVENTS)


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    item_id: str = Field(max_length=256)
    text: str = Field(max_length=10_000)


class ItemsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[ItemIn]


class Guard:
    """Pure ASGI middleware in front of the app: the key, the body's size, the number of requests in flight, and
    the metrics and debug log of every request (by route template, never by path)."""

    def __init__(self, app, service: Service):
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        service, started = self.service, time.perf_counter()
        route = service.route_of(scope)
        status = {"code": 500}

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            refusal = service.admit(scope)
            if refusal is not None:
                return await _send_error(sending, *refusal)
            service.in_flight += 1
            try:
                if b"content-length" not in dict(scope["headers"]) and scope["method"] in ("POST", "PUT", "PATCH"):
                    receive = await self._buffered(receive)  # a body without its length: read it up to the limit
                    if receive is None:
                        limit = service.max_body
                        return await _send_error(
                            sending, 413, f"the request body is larger than {limit:,} bytes; send fewer events at once."
                        )
                await self.app(scope, receive, sending)
            finally:
                service.in_flight -= 1
        finally:
            service.observe(route, status["code"], time.perf_counter() - started)
            logger.debug("%s %s -> %d", scope["method"], route, status["code"])

    async def _buffered(self, receive):
        """The whole body read ahead (None when it grows past ``max_body``), replayed to the app as one message."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return receive
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.service.max_body:
                return None
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay


async def _send_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Service:
    """The state of one running service: the recommender, the store, the key, the limits and the metrics."""

    def __init__(
        self,
        live: LiveRecommender,
        store: StateStore,
        api_key: str | None = None,
        max_body: int = MAX_BODY,
        max_pending: int = MAX_PENDING,
        model_name: str = "",
    ):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.live, self.store, self.model_name = live, store, model_name
        self.api_key = None if api_key is None else api_key.encode()
        self.max_body, self.max_pending = max_body, max_pending
        self.in_flight = 0
        self.items_synced = 0  # entries of the store's item log applied here
        self._sync_lock = threading.Lock()
        self.routes: list = []
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "interestbert_requests", "Requests by route and status.", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "interestbert_request_seconds",
            "Time to answer, by route.",
            ["route"],
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        self.events = Counter("interestbert_events", "Events accepted.", registry=self.registry)
        self.drift_events = Counter("interestbert_drift_events", "Drift detections fired.", registry=self.registry)
        Gauge("interestbert_in_flight", "Requests being answered.", registry=self.registry).set_function(
            lambda: self.in_flight
        )
        Gauge("interestbert_items", "Items in the catalogue.", registry=self.registry).set_function(
            lambda: len(live.verbaliser.item_ids)
        )
        cache = live.encoder.text_cache
        Gauge("interestbert_text_vectors", "Text vectors cached.", registry=self.registry).set_function(
            lambda: cache.stats()["texts"]
        )

    # ------------------------------------------------------------------------------------------------ guard

    def admit(self, scope) -> tuple[int, str] | None:
        headers = dict(scope["headers"])
        if self.api_key is not None and not self._key_ok(headers):
            return 401, "this service needs its API key: send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'."
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return 413, f"the request body is larger than {self.max_body:,} bytes; send fewer events at once."
        if self.in_flight >= self.max_pending:
            return 503, f"the service is busy ({self.in_flight} requests in flight); retry in a moment."
        return None

    def _key_ok(self, headers: dict) -> bool:
        given = headers.get(b"x-api-key")
        auth = headers.get(b"authorization", b"")
        if given is None and auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        return given is not None and hmac.compare_digest(given, self.api_key)

    def route_of(self, scope) -> str:
        from starlette.routing import Match

        for route in self.routes:
            if route.matches(scope)[0] == Match.FULL:
                return route.path
        return "other"

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    # ------------------------------------------------------------------------------------------------ work

    def sync_items(self) -> None:
        """Applies the items other replicas (or an earlier run) logged in the store."""
        with self._sync_lock:
            if self.store.items_logged() > self.items_synced:
                records = self.store.items_since(self.items_synced)
                self.live.add_items(records)
                self.items_synced += len(records)

    def post_events(self, events: list[dict], k: int | None, drift_aware: bool) -> dict:
        if not events:
            raise LiveError("events is empty; send at least one event.")
        if len(events) > MAX_EVENTS:
            raise LiveError(f"{len(events):,} events in one request; send at most {MAX_EVENTS:,}.")
        parsed = [LiveEvent.parse(e, f"events[{i}]") for i, e in enumerate(events)]
        by_user: dict[str, list[LiveEvent]] = defaultdict(list)
        for event in parsed:
            by_user[event.user_id].append(event)
        self.sync_items()
        updates = {}

        def change(stored: dict) -> dict:
            updates.clear()
            for user, raw in stored.items():
                state = UserState(user) if raw is None else UserState.from_json(raw)
                updates[user] = self.live.update(state, by_user[user])
            return {user: u.state.to_json() for user, u in updates.items()}

        self.store.update(list(by_user), change)
        fired = [e for u in updates.values() for e in u.drift_events]
        self.events.inc(len(parsed))
        self.drift_events.inc(len(fired))
        out = {"accepted": len(parsed), "users": len(by_user), "drift_events": fired}
        if k is not None:
            out["recommendations"] = [self.live.recommend(u.state, k, drift_aware).to_dict() for u in updates.values()]
        return out

    def state(self, user_id: str) -> UserState:
        raw = self.store.get(user_id)
        if raw is None:
            raise LiveError(f"user {excerpt(user_id)} is unknown here; post their events first.", 404)
        self.sync_items()
        return UserState.from_json(raw)

    def add_items(self, items: list[dict]) -> dict:
        records = [self.live.check_item(value, f"items[{k}]") for k, value in enumerate(items)]
        if not records:
            raise LiveError("items is empty; send at least one item.")
        self.sync_items()
        counts = self.live.add_items(records)  # checks everything before the log is written
        with self._sync_lock:
            logged = self.store.add_items(records)
            if logged == self.items_synced + len(records):
                self.items_synced = logged  # nothing else was logged meanwhile: ours are applied
        return counts


def create_app(service: Service):
    """The FastAPI app of a `Service` (module docstring)."""
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse

    from interestbert.inference import version

    app = FastAPI(
        title="interestbert",
        version=version(),
        description="Recommendations and interest vectors that change with every event.",
    )

    @app.exception_handler(LiveError)
    async def live_error(request: Request, err: LiveError):
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.exception_handler(InterestBertError)
    async def bad_input(request: Request, err: InterestBertError):
        return JSONResponse({"error": str(err)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        return JSONResponse({"error": _one_sentence(err.errors())}, status_code=400)

    @app.post("/v1/events")
    def post_events(
        body: EventsIn,
        k: int | None = Query(None, ge=1, le=1000, description="also answer each person's new top-k"),
        drift_aware: bool = False,
    ):
        """Appends events (per person, oldest first) and answers the drift events they fired."""
        return _json(service.post_events([e.model_dump() for e in body.events], k, drift_aware))

    @app.get("/v1/users/{user_id}/recommendations")
    def recommendations(
        user_id: str, k: int = Query(10, ge=1, le=1000), drift_aware: bool = False, explain: bool = True
    ):
        """The person's top-k unseen items now, with scores and why."""
        return _json(service.live.recommend(service.state(user_id), k, drift_aware, explain).to_dict())

    @app.get("/v1/users/{user_id}/interest")
    def interest(user_id: str):
        """The person's interest vector (unit norm): what ``interestbert encode`` writes for their history."""
        state = service.state(user_id)
        vector = service.live.interest(state)
        return _json({"user_id": user_id, "n_events": state.n_events, "dim": len(vector), "vector": vector.tolist()})

    @app.delete("/v1/users/{user_id}")
    def erase(user_id: str) -> dict:
        """Erases everything held about the person."""
        if not service.store.delete(user_id):
            raise LiveError(f"user {excerpt(user_id)} is unknown here; nothing to erase.", 404)
        return {"erased": True}

    @app.post("/v1/items")
    def items(body: ItemsIn) -> dict:
        """Adds or updates items from their text: recommendable at once, no retraining."""
        return service.add_items([item.model_dump() for item in body.items])

    @app.get("/healthz")
    def healthz():
        ok = service.store.ping()
        return JSONResponse(
            {
                "status": "ok" if ok else "store unreachable",
                "store": service.store.kind,
                "model": service.model_name,
                "items": len(service.live.verbaliser.item_ids),
            },
            status_code=200 if ok else 503,
        )

    @app.get("/metrics")
    def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    service.routes = list(app.routes)
    return Guard(app, service)


def _json(value: dict):
    """The answer as JSON at once: FastAPI's own path (jsonable_encoder, then the response model) costs more than
    the model's work on the answers that come with every event."""
    from starlette.responses import Response

    return Response(json.dumps(value, separators=(",", ":")), media_type="application/json")


def _one_sentence(errors) -> str:
    """The first validation error as one sentence: where, what, how to fix."""
    if not errors:
        return "the request is not valid; see /docs for its form."
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "the body"
    if first.get("type") == "json_invalid":
        return f"the body is not valid JSON ({first.get('msg', '')}); send a JSON object (see /docs)."
    if first.get("type") == "missing":
        return f"{where} is missing; see /docs for the request's form."
    return f"{where}: {first.get('msg', 'invalid')} (got {excerpt(first.get('input'), 60)}); see /docs for the form."


def make_server(service: Service, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"):
    """The uvicorn server of a `Service` (no access log: its lines hold the paths, and the paths hold user ids)."""
    import uvicorn

    config = uvicorn.Config(
        create_app(service), host=host, port=port, log_level=log_level, access_log=False, lifespan="off"
    )
    return uvicorn.Server(config)


def run(service: Service, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", flush_every: float = 5):
    """Serves until interrupted; the store is flushed every ``flush_every`` seconds (a file store) and closed."""
    stop = threading.Event()
    flush = getattr(service.store, "flush", None)

    def flusher():
        while not stop.wait(flush_every):
            flush()

    if flush is not None:
        threading.Thread(target=flusher, name="interestbert-flush", daemon=True).start()
    try:
        make_server(service, host, port, log_level).run()
    finally:
        stop.set()
        service.store.close()
