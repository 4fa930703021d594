"""The JSON bodies of the HTTP API: what a request may hold and what an answer holds (pydantic), with
their OpenAPI descriptions.

Types are strict and each bad value is one problem named by its place in the body: an id is a string
or an integer of 64 bits (2.0 counts as 2; never 1.5, true or a list), a count an integer (never
"5"), an event's `ts` epoch seconds or an ISO-8601 time with its offset, a `label` a number (0 or 1:
`freshrec.events.live.check_event` checks the value) or null.

>>> PredictRequest.model_validate_json('{"user": 7, "candidates": ["a", 2.0]}').candidates
['a', 2]
>>> parse(PredictRequest, b'{"user": true, "candidates": ["a"]}')
Invalid(detail='body.user: must be a string or an integer id, not True', errors=1)
>>> EVENTS.validate_json('{"user": 1, "item": 2, "ts": "2024-01-02T03:04:05Z"}').ts
1704164645.0
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

__all__ = ["EVENTS", "Accepted", "ArmsAnswer", "Candidate", "EventIn", "EventsRequest", "Health", "Id", "Invalid",
           "Pinned", "PredictRequest", "Problem", "RecommendRequest", "Scores", "SwapRequest", "body_schema", "invalid",
           "parse"]

INT64 = (-(1 << 63), (1 << 63) - 1)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]")
_TIME = TypeAdapter(AwareDatetime)


def _refused(kind: str, what: str, value: Any) -> PydanticCustomError:
    """The one problem of a value: `what` it must be, and the value (its repr, cut at 80 characters)."""
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return PydanticCustomError(kind, f"{what}, not {{value}}", {"value": shown})


def _integer(value: Any) -> int:
    """An integer of 64 bits (an integral float, 2.0, is one; a bool or a string is not)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _refused("integer", "must be an integer", value)
    if not INT64[0] <= value <= INT64[1]:
        raise _refused("integer", "must fit in 64 bits", value)
    return value


def _id(value: Any) -> str | int:
    kind = type(value)   # the common cases first: every candidate of every request comes here
    if kind is str or (kind is int and INT64[0] <= value <= INT64[1]):
        return value
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (isinstance(value, float) and not value.is_integer()):
        raise _refused("id", "must be a string or an integer id", value)
    return _integer(value)


def _value(value: Any) -> Any:
    """A field's value: a string, a number (an integer past 64 bits as a float), a list of ids or
    null; its column checks its kind."""
    if value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, list):
        return [_id(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return value if INT64[0] <= value <= INT64[1] else _float(value)
    raise _refused("value", "must be a string, a number, a list of ids or null", value)


def _float(value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        raise _refused("number", "must be a number a float can hold", value) from None


def _time(value: Any) -> float:
    """Epoch seconds from a number or an ISO-8601 time with an offset (`2024-01-02T03:04:05Z`)."""
    if isinstance(value, str) and _ISO_DATE.match(value):
        try:
            return _TIME.validate_python(value).timestamp()
        except (ValidationError, OverflowError):
            pass
    elif isinstance(value, float):
        return value
    elif isinstance(value, int) and not isinstance(value, bool):
        return _float(value)
    raise _refused("time", "must be epoch seconds or an ISO-8601 time with its offset (2024-01-02T03:04:05Z)", value)


def _label(value: Any) -> float | None:
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    raise _refused("label", "must be 0, 1 or null", value)


_INT64 = {"type": "integer", "minimum": INT64[0], "maximum": INT64[1]}
_ID = {"anyOf": [{"type": "string"}, _INT64]}


def _integers(low: int, high: int) -> Any:
    """The type of an integer in [low, high] (`_integer`: 2.0 is one, "2" is not)."""
    return Annotated[int, BeforeValidator(_integer), Field(ge=low, le=high),
                     WithJsonSchema({"type": "integer", "minimum": low, "maximum": high})]


Integer = _integers(*INT64)
TopK = _integers(1, 1000)
Id = Annotated[str | int, BeforeValidator(_id), WithJsonSchema(_ID)]
EventId = Annotated[str | int, BeforeValidator(_id), WithJsonSchema({"anyOf": [{"type": "string", "pattern": r"\S"},
                                                                              _INT64]})]
Value = Annotated[str | int | float | list[Id] | None, BeforeValidator(_value), WithJsonSchema(
    {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "array", "items": _ID}, {"type": "null"}]})]
Time = Annotated[float, BeforeValidator(_time), WithJsonSchema(
    {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "format": "date-time"}]})]
Label = Annotated[float | None, BeforeValidator(_label), WithJsonSchema({"enum": [0, 1, None]})]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Candidate(_Strict):
    item: Id
    fields: dict[str, Value] = Field({}, description="This candidate's own item fields (they win over the context)")


def _plain_ids(value: Any, handler: Any) -> Any:
    """Candidates that are all strings or 64-bit integers (the common request) as they are, checked in one
    pass; any other list through the full validation, which names each bad one by its place."""
    if type(value) is list and value and all(
            (kind := type(c)) is str or (kind is int and INT64[0] <= c <= INT64[1]) for c in value):
        return value
    return handler(value)


class PredictRequest(_Strict):
    user: Id
    context: dict[str, Value] = Field({}, description="Request fields: the model's columns (unknown ones: 422)")
    candidates: Annotated[list[Annotated[Annotated[Id, Tag("id")] | Annotated[Candidate, Tag("candidate")],
                                         Discriminator(lambda c: "candidate" if isinstance(c, (dict, Candidate))
                                                       else "id")]], WrapValidator(_plain_ids)] = \
        Field(min_length=1, description="Item ids, or {item, fields} objects")


class RecommendRequest(_Strict):
    user: Id
    context: dict[str, Value] = Field({}, description="Request fields: the model's columns (unknown ones: 422)")
    k: TopK = 10


class EventIn(_Strict):
    user: EventId
    item: EventId
    ts: Time | None = Field(None, description="Event time: epoch seconds or ISO-8601 with an offset (default: now)")
    kind: str = Field("click", min_length=1, pattern=r"\S")
    label: Label = Field(None, description="0 or 1; null: unlabelled")
    fields: dict[str, Value] = Field({}, description="The live source's fields (unknown ones: 422)")
    event_id: str | None = Field(None, min_length=1)
    arm: str | None = Field(None, description="The experiment's arm that showed the item (as /predict or /recommend "
                                              "answered); none: the user's arm")


class EventsRequest(_Strict):
    events: list[EventIn] = Field(min_length=1)


EVENTS = TypeAdapter(Annotated[Annotated[EventsRequest, Tag("batch")] | Annotated[EventIn, Tag("one")],
                               Discriminator(lambda body: "batch" if isinstance(body, dict) and "events" in body
                                             else "one")])
"""POST /events' body: `{"events": [...]}`, or one event (told apart by the `events` key)."""


class SwapRequest(_Strict):
    version: Integer | None = Field(None, description="A full snapshot to pin; none: follow the newest")


class Problem(BaseModel):
    """A refused request: what is wrong with it."""

    detail: str


class Invalid(Problem):
    """A request that does not hold what it should: its first problems by their place in the body."""

    errors: int | None = Field(None, description="How many problems the body has (the detail names up to 5)")


class Scores(BaseModel):
    """Scores of items for a user by one model `version`. `cold_user`: the model has no learned row for
    the user; `cold_items`: the items it has none for (cold starts, scored from their other features)."""

    version: int
    items: list[Id]
    scores: list[float]
    cold_user: bool
    cold_items: list[Id]
    arm: str | None = Field(description="The experiment's arm that answered (null: no experiment)")


class ArmsAnswer(BaseModel):
    """The live experiment's arms: figures per arm (CTR with its 95% interval, lift over the first arm,
    latency, CPU per request) and the raw tallies they come from (empty without an experiment)."""

    salt: str | None
    arms: dict[str, dict[str, Any]]
    tallies: dict[str, dict[str, Any]]


class Accepted(BaseModel):
    accepted: int = Field(description="Events queued for the trainer")


class Health(BaseModel):
    status: Literal["ok", "starting", "degraded"] = Field(description=(
        "degraded: serving, but behind the registry (a refused version) until a full snapshot comes"))
    ready: bool = Field(description="A model is loaded: /predict and /recommend answer (503 until then)")
    version: int | None
    detail: str | None = Field(None, description="Why the server is degraded, or still starting (a refused version)")


class Pinned(BaseModel):
    version: int | None = Field(description="The version served now")
    pinned: int | None = Field(description="The full snapshot pinned; null: following the newest")


def parse(kind: type[BaseModel] | TypeAdapter, body: bytes) -> Any:
    """The JSON `body` as `kind`, or the `Invalid` answer that names its first problems."""
    try:
        return kind.validate_json(body) if isinstance(kind, TypeAdapter) else kind.model_validate_json(body)
    except ValidationError as error:
        return invalid([{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)])


def invalid(errors: list[dict], tags: frozenset[str] = frozenset({"batch", "one", "id", "candidate"})) -> Invalid:
    """A 422's body from pydantic's `errors`: the first five by their place (a union's `tags` left
    out of it) and how many there are."""
    named = [f"{'.'.join(str(p) for p in e['loc'] if p not in tags)}: {e['msg']}" for e in errors[:5]]
    return Invalid(detail="; ".join(named), errors=len(errors))


def body_schema(kind: type[BaseModel] | TypeAdapter, required: bool = True, **limits: dict) -> dict:
    """The OpenAPI request body of a JSON `kind` (for a route that parses it itself), its
    definitions inlined (a `$ref` into its own `$defs` would not resolve in the document);
    `limits`: more keywords for some properties (e.g. `candidates={"maxItems": 100}`).

    >>> schema = body_schema(PredictRequest, candidates={"maxItems": 100})
    >>> body = schema["requestBody"]["content"]["application/json"]["schema"]
    >>> body["required"], body["properties"]["candidates"]["maxItems"]
    (['user', 'candidates'], 100)
    """
    schema = kind.json_schema() if isinstance(kind, TypeAdapter) else kind.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[1]])
            return {key: inline(value) for key, value in node.items()}
        return [inline(value) for value in node] if isinstance(node, list) else node

    schema = inline(schema)
    for form in schema.get("oneOf", [schema]):   # EVENTS: each of its forms
        for name, extra in limits.items():
            if name in form.get("properties", {}):
                form["properties"][name].update(extra)
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}
