"""HTTP paths: answers, 4xx with messages, 401 on admin, 503 before a model, live events."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from freshrec.events.live import LiveQueue
from freshrec.events.simulator import FIELDS
from freshrec.serve import ModelService, ServeConfig, create_app
from freshrec.snapshot import ModelRegistry

TOKEN = {"Authorization": "Bearer s3cret"}


@pytest.fixture
def client(trained):
    for chunk in trained.chunks[:4]:
        trained.learn(chunk)
    trained.publisher.publish_full()
    queue = LiveQueue(FIELDS)
    service = ModelService(trained.registry, sink=queue)
    config = ServeConfig(admin_token="s3cret", max_candidates=100, max_body_bytes=4096)
    with TestClient(create_app(service, config)) as test_client:
        service.sync()
        test_client.queue = queue
        yield test_client


def test_predict_and_recommend_answer_with_the_version(client) -> None:
    user = client.post("/recommend", json={"user": "u0", "k": 3}).json()
    assert user["version"] == 5 and len(user["items"]) == 3
    assert user["scores"] == sorted(user["scores"], reverse=True)
    body = {"user": "u0", "context": {"hour": 3}, "candidates": ["i1", 2, {"item": "i3", "fields": {"price": 9.5}}]}
    answer = client.post("/predict", json=body).json()
    assert answer["version"] == 5 and answer["items"] == ["i1", 2, "i3"] and len(answer["scores"]) == 3
    assert all(0.0 < s < 1.0 for s in answer["scores"])
    assert client.get("/model").json()["version"] == 5
    assert b"freshrec_model_version 5.0" in client.get("/metrics").content


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"user": "u", "candidates": ["i"], "extra": 1}, 422, "extra: Extra inputs are not permitted"),
    ({"user": "u", "candidates": "i"}, 422, "candidates"),
    ({"user": "u", "candidates": []}, 422, "at least 1 item"),
    ({"user": "u", "candidates": [f"i{n}" for n in range(101)]}, 422, "at most 100"),
    ({"user": "u", "candidates": ["i"], "context": {"colour": "red"}}, 422, "unknown field 'colour'"),
    ({"user": "u", "candidates": ["i"], "context": {"price": "cheap"}}, 422, "price must be a number"),
    ({"user": 1.5, "candidates": ["i"]}, 422, "user"),
    ({"user": "u", "candidates": ["i" * 5000]}, 413, "over 4096 bytes"),
])
def test_bad_predict_requests_get_a_4xx_with_a_message(client, body, status, message) -> None:
    answer = client.post("/predict", json=body)
    assert answer.status_code == status
    assert message in answer.json()["detail"]
    assert client.get("/healthz").json()["status"] == "ok"     # and the server goes on


def test_malformed_json_is_a_422(client) -> None:
    answer = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert answer.status_code == 422 and "JSON" in answer.json()["detail"]


def test_admin_needs_the_bearer_token(client) -> None:
    assert client.post("/admin/rollback").status_code == 401
    assert client.post("/admin/rollback", headers={"Authorization": "Bearer wrong"}).status_code == 401
    answer = client.post("/admin/rollback", headers=TOKEN)
    assert answer.status_code == 200 and answer.json() == {"version": 1, "pinned": 1}
    assert client.post("/admin/swap", json={"version": 99}, headers=TOKEN).status_code == 404
    assert client.post("/admin/swap", json={}, headers=TOKEN).json() == {"version": 5, "pinned": None}


def test_events_reach_the_live_queue_and_bad_ones_are_refused(client) -> None:
    assert client.post("/events", json={"user": "u1", "item": "new", "label": 1.0}).json() == {"accepted": 1}
    batch = {"events": [{"user": "u1", "item": "new", "fields": {"price": 3.0}},
                        {"user": 2, "item": 7, "ts": 10.0, "label": 0}]}
    assert client.post("/events", json=batch).status_code == 202
    assert len(client.queue) == 3
    bad = client.post("/events", json={"user": "u1", "item": "x", "fields": {"colour": "red"}})
    assert bad.status_code == 422 and "unknown field 'colour'" in bad.json()["detail"]
    assert client.post("/events", json={"user": "u1"}).status_code == 422
    assert len(client.queue) == 3               # nothing of a refused request was queued


BAD_EVENTS = [
    ({"label": -1}, "label must be 0 or 1"),
    ({"label": 0.5}, "label must be 0 or 1"),
    ({"label": 7}, "label must be 0 or 1"),
    ({"label": True}, "label"),
    ({"label": "1"}, "label"),
    ({"ts": 1e300}, "ts=1e+300 is more than 300 s after the clock of this host"),
    ({"ts": -5.0}, "ts=-5.0 is negative"),
    ({"ts": "soon"}, "ts"),
    ({"user": 1.5}, "user"),
    ({"user": True}, "user"),
    ({"user": ""}, "user_id is empty"),
    ({"item": None}, "item"),
    ({"item": ["i"]}, "item"),
    ({"kind": ""}, "kind"),
    ({"fields": {"price": "cheap"}}, "field 'price' must be a number"),
    ({"fields": {"colour": "red"}}, "unknown field 'colour'"),
]


@pytest.mark.parametrize(("change", "message"), BAD_EVENTS)
def test_each_kind_of_bad_event_is_a_422_naming_the_field(client, change: dict, message: str) -> None:
    good = {"user": "u1", "item": "i1", "label": 1}
    answer = client.post("/events", json={"events": [good, {**good, **change}]})
    assert answer.status_code == 422 and message in answer.json()["detail"], answer.json()
    assert len(client.queue) == 0                                   # nothing of the request was queued
    assert client.post("/events", json=good).status_code == 202     # and the server goes on
    assert client.get("/healthz").json()["status"] == "ok"


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_times_and_labels_are_a_422(client, literal: bytes) -> None:
    for name in (b"ts", b"label"):
        body = b'{"user": "u", "item": "i", "%s": %s}' % (name, literal)
        answer = client.post("/events", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 422 and name.decode() in answer.json()["detail"], answer.json()
    assert len(client.queue) == 0


def test_no_model_yet_is_a_503_and_no_sink_is_a_503(tmp_path) -> None:
    with TestClient(create_app(ModelService(ModelRegistry(tmp_path)))) as client:
        answer = client.post("/predict", json={"user": "u", "candidates": ["i"]})
        assert answer.status_code == 503 and "no model" in answer.json()["detail"]
        answer = client.post("/events", json={"user": "u", "item": "i"})
        assert answer.status_code == 503 and "no event sink" in answer.json()["detail"]
        assert client.post("/admin/swap", headers=TOKEN).status_code == 401   # no token configured


def test_the_openapi_document_describes_the_bodies_it_validates(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, required in (("/predict", ["user", "candidates"]), ("/recommend", ["user"])):
        schema = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert schema["required"] == required and "$ref" not in str(schema)
