"""The HTTP face of a `ModelService` (FastAPI; uvicorn runs it: `freshrec.serve.server`).

- `POST /predict` {user, context?, candidates: [id | {item, fields}]} -> {version, items, scores,
  cold_user, cold_items}: the items as sent; `cold_*`: the user and items the model has no learned
  row for (cold starts)
- `POST /recommend` {user, context?, k?} -> the same, the items ranked (integer ids as integers)
- `POST /events` {events: [...]} or one event -> 202 {accepted}: checked and handed to the live sink in
  a worker thread (durable first where the sink has a journal, as `freshrec run`'s has; 503 when it
  is full or cannot write); a bearer token when `events_token` is set (401 without); 429 past
  `max_new_ids` (ids the served model has no row for, per second: `freshrec.serve.budget`)
- `GET /healthz` {status, ready, version}: `ready` once a model is loaded; status "degraded" (with a
  `detail`) while it cannot follow the registry (a refused version: it asked for a full snapshot);
  `GET /readyz`: the same answer, with 503 until `ready` (a load balancer's readiness probe);
  `GET /metrics`
  (Prometheus), `GET /model`
- `POST /admin/swap` {version?}, `POST /admin/rollback`: bearer token required (401 without)

Bad requests get a 4xx with a message that names the field (`freshrec.serve.bodies`): unknown fields,
wrong types, too many candidates or events (422), bodies over `max_body_bytes` (413), or not in
within `read_timeout` (408), nothing served yet (503). Each posted event is checked by the live
queue (`freshrec.events.live.check_event`) before any is accepted: a label other than 0 or 1, a `ts`
that is not finite, negative or far in the future, an empty id... make the whole request a 422. The
OpenAPI document (`/openapi.json`) describes every body and status (tests/serve/test_api_fuzz.py
holds the app to it with schemathesis).

>>> from fastapi.testclient import TestClient
>>> import tempfile
>>> from freshrec.snapshot import ModelRegistry
>>> with TestClient(create_app(ModelService(ModelRegistry(tempfile.mkdtemp())))) as client:
...     client.get("/healthz").json(), client.post("/admin/rollback").status_code
({'status': 'starting', 'ready': False, 'version': None}, 401)
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from freshrec.config import ExperimentSection
from freshrec.events.event import Event
from freshrec.events.journal import JournalError
from freshrec.events.live import QueueFull
from freshrec.metrics.alerts import Alerts, Reading
from freshrec.serve.arms import ArmsLog, Experiment, arm_figures
from freshrec.serve.bodies import (
    EVENTS,
    Accepted,
    ArmsAnswer,
    Candidate,
    EventsRequest,
    Health,
    Invalid,
    Pinned,
    PredictRequest,
    Problem,
    RecommendRequest,
    Scores,
    SwapRequest,
    body_schema,
    parse,
)
from freshrec.serve.budget import ClientRates, TokenBucket
from freshrec.serve.dashboard import add_dashboard
from freshrec.serve.guard import Guard
from freshrec.serve.service import ModelService

__all__ = ["ServeConfig", "create_app"]


class ServeConfig(BaseModel):
    """Server settings (pydantic: they come from the command line or the YAML config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_candidates: int = Field(1000, ge=1, description="Most candidates one /predict may score")
    max_events: int = Field(10_000, ge=1, description="Most events one POST /events may carry")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest request body accepted (413 above)")
    recommend_candidates: int = Field(200, ge=1, description="Candidates /recommend ranks")
    max_new_ids: float | None = Field(10_000, gt=0, description="New ids (no row in the served model) POST /events "
                                                                "may bring per second, in bursts of ten seconds' "
                                                                "worth (429 past it; none: no cap)")
    admin_token: str | None = Field(None, description="Bearer token of the admin endpoints (none: disabled)")
    events_token: str | None = Field(None, description="Bearer token POST /events requires (none: open)")
    poll_interval: float = Field(0.05, gt=0, description="Seconds between registry polls for new versions")
    retrieval_reindex: float = Field(1.0, ge=0, description=(
        "Seconds between two re-indexes of every item's vector by a new two-tower version (new items are added "
        "at once)"))
    read_timeout: float = Field(30.0, gt=0, description="Seconds a client has to send a request's headers, and as "
                                                        "long again for its body (408 after)")
    keep_alive_timeout: float = Field(5.0, gt=0, description="Seconds an idle keep-alive connection stays open")
    max_connections: int = Field(1000, ge=1, description="Connections (or requests in progress) one server process "
                                                         "holds; a request beyond them gets a 503")
    max_client_rate: float | None = Field(None, gt=0, description="Requests a second one client address may make, "
                                                                  "in bursts of two seconds' worth (429 past it; "
                                                                  "none: no limit)")
    shutdown_timeout: float = Field(10.0, ge=0, description="On SIGTERM, seconds the requests in flight have to "
                                                            "finish before they are cancelled")
    experiment: ExperimentSection | None = Field(None, description="Live A/B arms (none: one model for all users)")
    staleness_alert: float | None = Field(None, gt=0, description=(
        "Raise the staleness alert when the served model is older than this many seconds (a server alone: "
        "`freshrec run` watches its own server)"))
    alert_webhook: str | None = Field(None, description="POST the staleness alert's changes here")
    tls_certfile: str | None = Field(None, description="HTTPS: the PEM certificate (chain) file")
    tls_keyfile: str | None = Field(None, description="HTTPS: the certificate's PEM private key file")


ANY_REQUEST = {
    408: {"model": Problem, "description": "The headers or the body did not come within serve.read_timeout"},
    413: {"model": Problem, "description": "A body over serve.max_body_bytes"},
    503: {"model": Problem, "description": "No model loaded yet or no event sink (JSON), or the server holds "
                                           "serve.max_connections (uvicorn's text/plain)",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
}
"""What any request may be answered, besides its own statuses."""
UNAUTHORIZED = {401: {"model": Problem, "description": "No or a wrong bearer token"}}
RATE_LIMITED = {429: {"model": Problem, "description": "Past serve.max_client_rate (or, on /events, serve.max_new_ids):"
                                                       " retry after Retry-After seconds",
                      "headers": {"Retry-After": {"schema": {"type": "integer"}}}}}


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json")


class _Bearer(HTTPBearer):
    """A dependency (and its OpenAPI security scheme `name`) that answers 401 with `refusal` unless
    the request carries `Authorization: Bearer <token>`, compared as bytes: any header is a 401 or a
    pass, never an error."""

    def __init__(self, token: str | None, name: str, refusal: str) -> None:
        super().__init__(auto_error=False, scheme_name=name)
        self.token, self.refusal = token, refusal

    async def __call__(self, request: Request) -> None:
        credentials = await super().__call__(request)
        given = credentials.credentials.encode("latin-1") if credentials else b""   # the header's own bytes
        if self.token is None or not given or not secrets.compare_digest(given, self.token.encode()):
            raise HTTPException(401, self.refusal, headers={"WWW-Authenticate": "Bearer"})


def create_app(service: ModelService, config: ServeConfig | None = None) -> FastAPI:
    """The app; its lifespan syncs the service and each arm of its own once before the first request, then runs
    a registry follower thread for each, for its retriever (if any), and, where configured, the staleness alert
    and the arms log."""
    config = config or ServeConfig()
    experiment = Experiment.open(config.experiment, service) if config.experiment and config.experiment.arms else None
    followers = list({id(s): s for s in (service, *(experiment.followers() if experiment else ()))}.values())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for follower in followers:   # before the first request: a worker started beside others (or in place of
            await run_in_threadpool(follower.sync_safely)   # one that died) never answers 503 for a model they serve
        stop = threading.Event()
        threads = [threading.Thread(target=s.follow, args=(stop, config.poll_interval), name="freshrec-sync",
                                    daemon=True) for s in followers]
        if service.retriever is not None:
            threads.append(threading.Thread(target=service.retriever.follow,
                                            args=(stop, config.poll_interval, config.retrieval_reindex),
                                            name="freshrec-retrieval-sync", daemon=True))
        if config.staleness_alert is not None:
            threads.append(threading.Thread(target=_watch_staleness, args=(service, config, stop),
                                            name="freshrec-staleness", daemon=True))
        if experiment is not None and experiment.config.log is not None:
            threads.append(threading.Thread(target=_write_arms, args=(experiment, stop), name="freshrec-arms-log",
                                            daemon=True))
        for thread in threads:
            thread.start()
        yield
        stop.set()
        for thread in threads:
            thread.join()

    app = _App(title="freshrec", lifespan=lifespan, responses=ANY_REQUEST | (RATE_LIMITED if config.max_client_rate
                                                                             else {}))
    app.serve_config, app.experiment = config, experiment
    metrics = service.metrics
    admin = Depends(_Bearer(config.admin_token, "admin", "admin endpoints need 'Authorization: Bearer <token>'"
                            + ("" if config.admin_token else " and a server started with an admin token")))
    scored = {200: {"model": Scores}, 422: {"model": Invalid}}

    # /predict and /recommend validate the raw body in one pass (pydantic-core parses the JSON
    # itself): no FastAPI body parsing or dependency solving on the hot path.
    @app.post("/predict", openapi_extra=body_schema(PredictRequest, candidates={"maxItems": config.max_candidates}),
              responses=scored)
    async def predict(request: Request) -> Response:
        body = await _parsed(request, PredictRequest)
        if isinstance(body, Invalid):
            return _json(body.model_dump(), 422)
        if len(body.candidates) > config.max_candidates:
            raise HTTPException(422, f"{len(body.candidates)} candidates; at most {config.max_candidates}")
        items = [(c, {}) if not isinstance(c, Candidate) else (c.item, c.fields) for c in body.candidates]
        return _scored(body.user, lambda chosen, arm: chosen.score(body.user, body.context, items, arm))

    @app.post("/recommend", openapi_extra=body_schema(RecommendRequest), responses=scored)
    async def recommend(request: Request) -> Response:
        body = await _parsed(request, RecommendRequest)
        if isinstance(body, Invalid):
            return _json(body.model_dump(), 422)
        return _scored(body.user, lambda chosen, arm: chosen.recommend(body.user, body.context, body.k,
                                                                       config.recommend_candidates, arm))

    def _scored(user, score) -> Response:
        """`score(service, arm)`'s answer: by the server's model, or by the arm of `user` (timed and
        counted in its tally); a ValueError is a 422."""
        try:
            if experiment is None:
                return _json(score(service, None))
            arm, chosen, tally = experiment.route(user)
            if chosen.version is None:
                raise HTTPException(503, f"arm {arm!r} has no model version loaded yet")
            started, cpu = time.perf_counter(), time.thread_time()
            answer = score(chosen, arm)
            tally.record_request(time.perf_counter() - started, time.thread_time() - cpu, len(answer.items))
            return _json(answer)
        except ValueError as error:
            raise HTTPException(422, str(error)) from None

    async def _parsed(request: Request, kind: type[BaseModel]) -> Any:
        """The request's body as `kind`, or its `Invalid` answer (a 503 before a model is loaded)."""
        if service.version is None:
            raise HTTPException(503, "no model version is loaded yet")
        return parse(kind, await request.body())

    @app.post("/events", status_code=202, response_model=None,
              dependencies=[Depends(_Bearer(config.events_token, "events", "POST /events needs 'Authorization: "
                                            "Bearer <token>'"))] if config.events_token else [],
              openapi_extra=body_schema(EVENTS, events={"maxItems": config.max_events}) | {"description": (
                  "One event, or {events: [...]}. ts: epoch seconds or ISO-8601 with an offset.")},
              responses={202: {"model": Accepted}, 422: {"model": Invalid},
                         **RATE_LIMITED,
                         **(UNAUTHORIZED if config.events_token else {})})
    async def events(request: Request) -> Response:
        return await run_in_threadpool(take_events, await request.body())

    def take_events(raw: bytes) -> Response:
        """Parse, check and queue a POST /events body, in a worker thread: a batch of thousands of
        events takes milliseconds (more with a journal's fsync) that the loop goes on serving in."""
        body = parse(EVENTS, raw)
        if isinstance(body, Invalid):
            return _json(body.model_dump(), 422)
        batch = body.events if isinstance(body, EventsRequest) else [body]
        if len(batch) > config.max_events:
            raise HTTPException(422, f"{len(batch)} events; at most {config.max_events} per request")
        unknown = experiment.unknown_arm(e.arm for e in batch) if experiment else next(
            (e.arm for e in batch if e.arm is not None), None)
        if unknown is not None:
            arms = ", ".join(experiment.services) if experiment else "none (no experiment)"
            raise HTTPException(422, f"unknown arm {unknown!r}; this server's arms: {arms}")
        if budget is not None:
            spend(service.new_ids([e.user for e in batch], [e.item for e in batch]))
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
        if experiment is not None:
            experiment.attribute((e.user, e.arm, e.label) for e in batch if e.label is not None)
        return _json({"accepted": accepted}, 202)

    budget = TokenBucket(config.max_new_ids, int(10 * config.max_new_ids)) if config.max_new_ids else None

    def spend(new: int) -> None:
        """Take `new` ids from the budget, or refuse the whole batch: 422 when no wait would do, 429 with
        Retry-After when a later one will."""
        if budget.take(new):
            return
        if new > budget.burst:
            raise HTTPException(422, f"the events bring {new:,} ids the model has no row for; one request may bring "
                                     f"at most {budget.burst:,} (serve.max_new_ids x 10 s): split it")
        raise HTTPException(429, f"the events bring {new:,} ids the model has no row for, past serve.max_new_ids "
                                 f"({budget.rate:g} a second): retry later", headers={"Retry-After": str(
                                     max(1, math.ceil(budget.wait(new))))})

    def health() -> dict:
        version = service.version
        ready = version is not None and (experiment is None or experiment.ready)
        behind = next((s.behind for s in followers if s.behind), None)
        if ready and behind:
            return {"status": "degraded", "ready": True, "version": version, "detail": behind}
        answer = {"status": "ok" if ready else "starting", "ready": ready, "version": version}
        return answer | {"detail": behind} if behind else answer   # e.g. the only version was refused

    @app.get("/healthz", responses={200: {"model": Health}})
    async def healthz() -> Response:
        return _json(health())

    @app.get("/readyz", responses={200: {"model": Health}, 503: {"model": Health}})
    async def readyz() -> Response:
        answer = health()
        return _json(answer, 200 if answer["ready"] else 503)

    @app.get("/arms", responses={200: {"model": ArmsAnswer}})
    async def arms() -> Response:
        if experiment is None:
            return _json({"salt": None, "arms": {}, "tallies": {}})
        tallies = experiment.current()
        return _json({"salt": experiment.config.salt, "arms": arm_figures(tallies),
                      "tallies": {name: t.to_dict() for name, t in tallies.items()}})

    @app.get("/metrics", response_class=Response, responses={200: {
        "content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus' text format"}})
    async def prometheus() -> Response:
        current = service.switcher.current
        if current is not None:
            metrics.model_age.set(time.time() - current.created_at)
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4")

    @app.get("/model", responses={200: {"content": {"application/json": {"schema": {
        "type": "object", "required": ["version", "swaps"], "properties": {"version": {"type": ["integer", "null"]}}}}},
        "description": "The version served, its age, the events it learned, freshness percentiles"}})
    async def model() -> Response:
        return _json(service.describe())

    @app.post("/admin/swap", dependencies=[admin], openapi_extra=body_schema(SwapRequest, required=False),
              responses={200: {"model": Pinned}, 404: {"model": Problem}, 409: {"model": Problem},
                         422: {"model": Invalid}, **UNAUTHORIZED})
    async def swap(request: Request) -> Response:
        raw = await request.body()
        body = parse(SwapRequest, raw) if raw else SwapRequest()   # no body: the newest version
        if isinstance(body, Invalid):
            return _json(body.model_dump(), 422)
        return await run_in_threadpool(pin, body.version)

    def pin(version: int | None) -> Response:
        pinnable()
        try:
            service.registry.promote(version) if version is not None else service.registry.unpin()
        except (FileNotFoundError, ValueError) as error:
            raise HTTPException(404, f"no valid full snapshot {version}: {error}") from None
        return _json({"version": service.sync(), "pinned": version})

    @app.post("/admin/rollback", dependencies=[admin],
              responses={200: {"model": Pinned}, 409: {"model": Problem}, **UNAUTHORIZED})
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

    add_dashboard(app, service, experiment)
    if experiment is not None:
        metrics.registry.register(experiment)
    paths = frozenset(route.path for route in app.routes)  # metric labels: known paths only
    rates = ClientRates(config.max_client_rate) if config.max_client_rate else None   # one per client, all paths
    app.add_middleware(Guard, limit=config.max_body_bytes, read_timeout=config.read_timeout, metrics=metrics,
                       paths=paths, rates=rates)
    hot = {"/predict": predict, "/recommend": recommend}
    app.lane = Guard(_Lane(hot), config.max_body_bytes, config.read_timeout, metrics, paths, rates)
    app.lane_paths = frozenset(hot)
    return app


def _watch_staleness(service: ModelService, config: ServeConfig, stop: threading.Event, interval: float = 1.0) -> None:
    """Evaluate the staleness alert on the served model's age every `interval` seconds (it fires while
    the trainer is down, and clears once a new version is served)."""
    alerts = Alerts(staleness=config.staleness_alert, stalled=None, auc_drop=None, dead_letter_rate=None,
                    webhook=config.alert_webhook)
    while not stop.wait(interval):
        current = service.switcher.current
        alerts.evaluate(Reading(time.time(), None if current is None else time.time() - current.created_at))


def _write_arms(experiment: Experiment, stop: threading.Event, interval: float = 1.0) -> None:
    """Write the arms' tallies to `experiment.log` every `interval` seconds, and once more at the end."""
    log = ArmsLog(experiment.config.log)
    while not stop.wait(interval):
        log.write(experiment.current())
    log.write(experiment.current())


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
    """FastAPI, with the POSTs to `lane_paths` taken by `lane` first (both set by `create_app`, with
    the `ServeConfig` it was made with: `serve_config`)."""

    lane: Any = None
    lane_paths: frozenset[str] = frozenset()
    serve_config: ServeConfig | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.lane_paths:
            return await self.lane(scope, receive, send)
        return await super().__call__(scope, receive, send)
