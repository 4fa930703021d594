"""The HTTP face of a `ModelService` (FastAPI; uvicorn runs it).

- `POST /predict` {user, context?, candidates: [id | {item, fields}]} -> {version, items, scores}
- `POST /recommend` {user, context?, k?} -> {version, items, scores}
- `POST /events` {events: [...]} or one event -> 202 {accepted}: handed to the live sink (durable first
  where the sink has a journal, as `freshrec run`'s has; 503 when it is full or cannot write)
- `GET /healthz`, `GET /metrics` (Prometheus), `GET /model`
- `POST /admin/swap` {version?}, `POST /admin/rollback`: bearer token required (401 without)

Bad requests get a 4xx with a message that names the field: unknown fields (422), wrong types
(422: ids are strings or integers, never floats or booleans), too many candidates (422), bodies over
`max_body_bytes` (413), nothing served yet (503). Each posted event is checked by the live queue
(`freshrec.events.live.check_event`) before any is accepted: a label other than 0 or 1, a `ts` that
is not finite, negative or far in the future, an empty id... make the whole request a 422.

>>> from fastapi.testclient import TestClient
>>> import tempfile
>>> from freshrec.snapshot import ModelRegistry
>>> with TestClient(create_app(ModelService(ModelRegistry(tempfile.mkdtemp())))) as client:
...     client.get("/healthz").json(), client.post("/admin/rollback").status_code
({'status': 'starting', 'version': None}, 401)
"""

from __future__ import annotations

import secrets
import threading
import time
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError

from freshrec.events.event import Event
from freshrec.events.journal import JournalError
from freshrec.events.live import QueueFull
from freshrec.metrics.prometheus import ServingMetrics
from freshrec.serve.service import ModelService

__all__ = ["ServeConfig", "create_app"]

Id = StrictStr | StrictInt
Value = str | int | float | list[str | int] | None


class ServeConfig(BaseModel):
    """Server settings (pydantic: they come from the command line or the YAML config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_candidates: int = Field(1000, ge=1, description="Most candidates one /predict may score")
    max_events: int = Field(10_000, ge=1, description="Most events one POST /events may carry")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest request body accepted (413 above)")
    recommend_candidates: int = Field(200, ge=1, description="Candidates /recommend ranks")
    admin_token: str | None = Field(None, description="Bearer token of the admin endpoints (none: disabled)")
    poll_interval: float = Field(0.05, gt=0, description="Seconds between registry polls for new versions")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Candidate(Strict):
    item: Id
    fields: dict[str, Value] = {}


class PredictRequest(Strict):
    user: Id
    context: dict[str, Value] = {}
    candidates: list[Id | Candidate] = Field(min_length=1)


class RecommendRequest(Strict):
    user: Id
    context: dict[str, Value] = {}
    k: int = Field(10, ge=1, le=1000)


class EventIn(Strict):
    user: Id
    item: Id
    ts: StrictFloat | None = Field(None, description="Event time, epoch seconds (default: now)")
    kind: StrictStr = Field("click", min_length=1)
    label: StrictFloat | None = Field(None, description="0 or 1; none: unlabelled")
    fields: dict[str, Value] = {}
    event_id: str | None = None


class EventsRequest(Strict):
    events: list[EventIn] = Field(min_length=1)


class SwapRequest(Strict):
    version: int | None = Field(None, description="A full snapshot to pin; none: follow the newest")


def _invalid(errors: list[dict]) -> Response:
    """A 422 naming the first few problems by their path in the request."""
    problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5]]
    return _json({"detail": "; ".join(problems), "errors": len(errors)}, 422)


def _body(model: type[BaseModel]) -> dict:
    """The OpenAPI description of a JSON body of `model` (for a route that validates it itself), its
    sub-models inlined (a `$ref` into the model's own `$defs` would not resolve in the document).

    >>> _body(PredictRequest)["requestBody"]["content"]["application/json"]["schema"]["required"]
    ['user', 'candidates']
    """
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[1]])
            return {key: inline(value) for key, value in node.items()}
        return [inline(value) for value in node] if isinstance(node, list) else node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json")


class _TooLarge(Exception):
    pass


class Guard:
    """ASGI middleware (cheaper than FastAPI's `@app.middleware`): 413 for a body over `limit`
    bytes (declared or streamed), and each request's latency and status into `metrics`."""

    def __init__(self, app, limit: int, metrics: ServingMetrics, paths: frozenset[str]) -> None:
        self.app, self.limit, self.metrics, self.paths = app, limit, metrics, paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def sent(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
        try:
            await self._limited(scope, receive, sent)
        finally:
            path = scope["path"] if scope["path"] in self.paths else "other"
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)
            self.metrics.requests.labels(path, str(status[0])).inc()

    async def _limited(self, scope, receive, send) -> None:
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message
        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = orjson.dumps({"detail": f"request body over {self.limit} bytes"})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(service: ModelService, config: ServeConfig | None = None) -> FastAPI:
    """The app; its lifespan runs the registry follower thread (which syncs at once)."""
    config = config or ServeConfig()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        stop = threading.Event()
        follower = threading.Thread(target=service.follow, args=(stop, config.poll_interval),
                                    name="freshrec-sync", daemon=True)
        follower.start()
        yield
        stop.set()
        follower.join()

    app = _App(title="freshrec", lifespan=lifespan)
    metrics = service.metrics

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        return _invalid(error.errors())

    def admin(authorization: Annotated[str | None, Header()] = None) -> None:
        token = config.admin_token
        given = (authorization or "").removeprefix("Bearer ").strip()
        if token is None or not authorization or not secrets.compare_digest(given, token):
            raise HTTPException(401, "admin endpoints need 'Authorization: Bearer <token>'"
                                + ("" if token else " and a server started with an admin token"),
                                headers={"WWW-Authenticate": "Bearer"})

    # /predict and /recommend validate the raw body in one pass (pydantic-core parses the JSON
    # itself): no FastAPI body parsing or dependency solving on the hot path, the same 422s.
    @app.post("/predict", openapi_extra=_body(PredictRequest))
    async def predict(request: Request) -> Response:
        body = await _parsed(request, PredictRequest)
        if isinstance(body, Response):
            return body
        if len(body.candidates) > config.max_candidates:
            raise HTTPException(422, f"{len(body.candidates)} candidates; at most {config.max_candidates}")
        items = [(c, {}) if not isinstance(c, Candidate) else (c.item, c.fields) for c in body.candidates]
        try:
            version, scores = service.predict(body.user, body.context, items)
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        return _json({"version": version, "items": [item for item, _ in items], "scores": scores})

    @app.post("/recommend", openapi_extra=_body(RecommendRequest))
    async def recommend(request: Request) -> Response:
        body = await _parsed(request, RecommendRequest)
        if isinstance(body, Response):
            return body
        try:
            version, items, scores = service.recommend(body.user, body.context, body.k,
                                                       config.recommend_candidates)
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        return _json({"version": version, "items": items, "scores": scores})

    async def _parsed(request: Request, model: type[BaseModel]) -> BaseModel | Response:
        """The request's body as `model`, or the 422 (or 503 before a model is loaded) to answer."""
        if service.version is None:
            raise HTTPException(503, "no model version is loaded yet")
        try:
            return model.model_validate_json(await request.body())
        except ValidationError as error:
            return _invalid([{**e, "loc": ("body", *e["loc"])} for e in error.errors()])

    @app.post("/events")
    async def events(body: EventsRequest | EventIn) -> Response:
        batch = body.events if isinstance(body, EventsRequest) else [body]
        if len(batch) > config.max_events:
            raise HTTPException(422, f"{len(batch)} events; at most {config.max_events} per request")
        now = time.time()
        try:
            accepted = service.accept([Event(e.event_id or f"api-{now}-{i}", now if e.ts is None else e.ts,
                                             e.user, e.item, e.kind, e.fields, e.label)
                                       for i, e in enumerate(batch)])
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        except (QueueFull, JournalError) as error:   # full, or its journal could not make them durable
            raise HTTPException(503, str(error), headers={"Retry-After": "1"}) from None
        except LookupError as error:
            raise HTTPException(503, str(error)) from None
        return _json({"accepted": accepted}, 202)

    @app.get("/healthz")
    async def healthz() -> Response:
        version = service.version
        return _json({"status": "ok" if version is not None else "starting", "version": version})

    @app.get("/metrics")
    async def prometheus() -> Response:
        current = service.switcher.current
        if current is not None:
            metrics.model_age.set(time.time() - current.created_at)
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4")

    @app.get("/model")
    async def model() -> Response:
        return _json(service.describe())

    @app.post("/admin/swap", dependencies=[Depends(admin)])
    def swap(body: SwapRequest | None = None) -> Response:
        pinnable()
        version = body.version if body else None
        try:
            service.registry.promote(version) if version is not None else service.registry.unpin()
        except (FileNotFoundError, ValueError) as error:
            raise HTTPException(404, f"no valid full snapshot {version}: {error}") from None
        return _json({"version": service.sync(), "pinned": version})

    @app.post("/admin/rollback", dependencies=[Depends(admin)])
    def rollback() -> Response:
        pinnable()
        try:
            pinned = service.registry.rollback()
        except LookupError as error:
            raise HTTPException(409, str(error)) from None
        return _json({"version": service.sync(), "pinned": pinned})

    def pinnable() -> None:
        if not service.pinnable:
            raise HTTPException(409, "this server scores the trainer's shared tables (serve --attach): there are no "
                                     "versions to pin; pin on a server that follows the registry")

    paths = frozenset(route.path for route in app.routes)  # metric labels: known paths only
    app.add_middleware(Guard, limit=config.max_body_bytes, metrics=metrics, paths=paths)
    hot = {"/predict": predict, "/recommend": recommend}
    app.lane, app.lane_paths = Guard(_Lane(hot), config.max_body_bytes, metrics, paths), frozenset(hot)
    return app


class _Lane:
    """The hot endpoints called straight from the server (ASGI): no routing, dependency solving or
    FastAPI middleware (about a quarter of a /predict's time in one server process); the same
    responses, an `HTTPException` answered as FastAPI answers it."""

    def __init__(self, endpoints: dict[str, Any]) -> None:
        self.endpoints = endpoints

    async def __call__(self, scope, receive, send) -> None:
        try:
            response = await self.endpoints[scope["path"]](Request(scope, receive))
        except HTTPException as error:
            response = Response(orjson.dumps({"detail": error.detail}), error.status_code, error.headers,
                                media_type="application/json")
        await response(scope, receive, send)


class _App(FastAPI):
    """FastAPI, with the POSTs to `lane_paths` taken by `lane` (both set by `create_app`) first."""

    lane: Any = None
    lane_paths: frozenset[str] = frozenset()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.lane_paths:
            return await self.lane(scope, receive, send)
        return await super().__call__(scope, receive, send)
