"""HTTP paths: answers, 4xx with messages, 401 on admin (and /events with a token), 503 before a
model, live events (off the event loop), cold starts, the ids as given."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pytest
from conftest import HeldQueue
from fastapi.testclient import TestClient

from freshrec.events.live import LiveQueue
from freshrec.events.simulator import FIELDS
from freshrec.serve import CandidateIndex, ModelService, ServeConfig, create_app
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
        test_client.queue, test_client.service = queue, service
        yield test_client


def test_predict_and_recommend_answer_with_the_version(client) -> None:
    user = client.post("/recommend", json={"user": "u0", "k": 3}).json()
    assert user["version"] == 5 and len(user["items"]) == 3
    assert user["scores"] == sorted(user["scores"], reverse=True)
    assert all(isinstance(item, int) for item in user["items"])     # the simulator's ids are integers, as given
    body = {"user": "u0", "context": {"hour": 3}, "candidates": ["i1", 2, {"item": "i3", "fields": {"price": 9.5}}]}
    answer = client.post("/predict", json=body).json()
    assert answer["version"] == 5 and answer["items"] == ["i1", 2, "i3"] and len(answer["scores"]) == 3
    assert all(0.0 < s < 1.0 for s in answer["scores"])
    assert client.get("/model").json()["version"] == 5
    assert b"freshrec_model_version 5.0" in client.get("/metrics").content


def test_recommend_before_any_interaction_is_known_answers_no_items(client) -> None:
    """(An attached server serves the shared tables before the registry's first interactions come.)"""
    client.service.candidates = CandidateIndex()
    answer = client.post("/recommend", json={"user": "u0", "k": 3})
    assert answer.status_code == 200, answer.text
    assert answer.json() | {"version": 5, "items": [], "scores": []} == answer.json()


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
    blank = client.post("/admin/swap", content=b" ", headers={**TOKEN, "content-type": "application/json"})
    assert blank.status_code == 422   # not JSON (no body at all: the newest version)


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


def test_a_server_started_beside_a_published_model_answers_its_first_request(trained) -> None:
    trained.learn(trained.chunks[0])
    trained.publisher.publish_full()
    config = ServeConfig(poll_interval=3600.0)   # no sync but the first until the end of the test
    with TestClient(create_app(ModelService(trained.registry), config)) as client:   # what a new worker does
        answer = client.post("/predict", json={"user": "u0", "candidates": ["i1"]})
        assert answer.status_code == 200, answer.text


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


def test_strict_types_are_one_problem_each_named_by_its_place(client) -> None:
    cases = [("/recommend", {"user": "u", "k": "5"}, "body.k: must be an integer, not '5'"),
             ("/recommend", {"user": "u", "k": True}, "body.k: must be an integer, not True"),
             ("/predict", {"user": "u", "candidates": ["i", 1.5]}, "body.candidates.1: must be a string or an "
                                                                 "integer id, not 1.5"),
             ("/predict", {"user": "u", "candidates": [{"item": []}]}, "body.candidates.0.item: must be a string or "
                                                                     "an integer id, not []"),
             ("/events", {"user": "u1"}, "body.item: Field required"),
             ("/events", {"user": "u1", "item": "i", "label": True}, "body.label: must be 0, 1 or null, not True"),
             ("/events", {"events": [{"user": "u1", "item": "i", "fields": {"price": {}}}]},
              "body.events.0.fields.price: must be a string, a number, a list of ids or null, not {}")]
    for path, body, message in cases:
        answer = client.post(path, json=body)
        assert answer.status_code == 422 and answer.json() == {"detail": message, "errors": 1}, (body, answer.json())
    assert client.post("/recommend", json={"user": "u", "k": 5.0}).status_code == 200     # 5.0 is the integer 5


def test_numbers_too_large_for_any_type_are_a_422(client) -> None:
    huge, past_floats = b"1" + b"0" * 4000, b"1" + b"0" * 400
    for path, body in [("/events", b'{"user": %s, "item": 1}' % huge),
                       ("/predict", b'{"user": 1, "candidates": [1], "context": {"price": %s}}' % past_floats),
                       ("/events", b'{"user": 1, "item": 1, "ts": %s}' % past_floats)]:
        answer = client.post(path, content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 422, answer.text


def test_a_non_ascii_token_is_a_401_and_a_non_ascii_admin_token_works(client, tmp_path) -> None:
    assert client.post("/admin/rollback", headers={"Authorization": "Bearer sécret".encode()}).status_code == 401
    service = ModelService(ModelRegistry(tmp_path))
    with TestClient(create_app(service, ServeConfig(admin_token="sécret"))) as other:
        assert other.post("/admin/rollback", headers={"Authorization": "Bearer sécret".encode()}).status_code == 409
        assert other.post("/admin/rollback", headers={"Authorization": "Bearer s3cret"}).status_code == 401


def test_events_need_their_token_when_one_is_set(trained) -> None:
    queue = LiveQueue(FIELDS)
    app = create_app(ModelService(trained.registry, sink=queue), ServeConfig(events_token="ev", admin_token="ad"))
    event = {"user": "u1", "item": "i1", "label": 1}
    with TestClient(app) as client:
        for headers in ({}, {"Authorization": "Bearer ad"}, {"Authorization": "Basic ev"}):
            answer = client.post("/events", json=event, headers=headers)
            assert answer.status_code == 401 and "POST /events needs" in answer.json()["detail"]
        assert client.post("/events", json=event, headers={"Authorization": "Bearer ev"}).status_code == 202
        security = client.get("/openapi.json").json()["paths"]["/events"]["post"]["security"]
    assert len(queue) == 1 and security == [{"events": []}]


def test_event_times_may_be_iso_8601_with_an_offset(client) -> None:
    event = {"user": "u1", "item": "i1", "ts": "2024-01-02T03:04:05+01:00"}
    assert client.post("/events", json=event).status_code == 202
    assert client.queue.poll(timeout=0).table.column("ts").to_pylist() == [1704161045.0]
    naive = client.post("/events", json={**event, "ts": "2024-01-02T03:04:05"})
    assert naive.status_code == 422 and naive.json()["detail"].startswith("body.ts: must be epoch seconds or an ISO")


def test_unknown_users_and_items_are_flagged_as_cold_starts(client, trained) -> None:
    seen = trained.chunks[0].table.slice(0, 1).to_pylist()[0]
    known = client.post("/predict", json={"user": seen["user_id"], "candidates": [seen["item_id"], "never-seen"]})
    assert known.json()["cold_user"] is False and known.json()["cold_items"] == ["never-seen"]
    stranger = client.post("/recommend", json={"user": "never-seen", "k": 2}).json()
    assert stranger["cold_user"] is True and stranger["cold_items"] == []


def test_recommended_ids_are_integers_where_they_are_integers(client) -> None:
    index = CandidateIndex()
    index.observe(pa.table({"ts": [1.0, 2.0, 3.0], "user_id": ["7", "7", "7"], "item_id": ["42", "042", "i9"],
                            "label": [1.0, 1.0, 1.0]}))
    client.service.candidates = index
    assert sorted(client.post("/recommend", json={"user": 8, "k": 5}).json()["items"], key=str) == ["042", 42, "i9"]


def test_healthz_says_when_the_server_is_ready_and_readyz_answers_503_until_then(client, tmp_path) -> None:
    for path in ("/healthz", "/readyz"):
        answer = client.get(path)
        assert answer.status_code == 200 and answer.json() == {"status": "ok", "ready": True, "version": 5}
    with TestClient(create_app(ModelService(ModelRegistry(tmp_path)))) as starting:
        starting_answer = {"status": "starting", "ready": False, "version": None}
        assert starting.get("/healthz").status_code == 200 and starting.get("/healthz").json() == starting_answer
        assert starting.get("/readyz").status_code == 503 and starting.get("/readyz").json() == starting_answer


def test_healthz_says_degraded_while_the_server_is_behind_the_registry(client) -> None:
    client.service.behind = "serving version 5: version 6 was refused; waiting for a full snapshot"
    degraded = {"status": "degraded", "ready": True, "version": 5, "detail": client.service.behind}
    assert client.get("/healthz").json() == degraded
    assert client.get("/readyz").status_code == 200 and client.get("/readyz").json() == degraded   # stale, serving
    assert client.post("/predict", json={"user": 1, "candidates": [1]}).json()["version"] == 5   # still serving


def test_a_big_batch_of_events_is_taken_off_the_event_loop(trained) -> None:
    trained.learn(trained.chunks[0])
    queue = HeldQueue()
    service = ModelService(trained.registry, sink=queue)
    batch = {"events": [{"user": f"u{n}", "item": n % 50, "label": n % 2} for n in range(10_000)]}
    with TestClient(create_app(service, ServeConfig())) as client, ThreadPoolExecutor(1) as pool:
        service.sync()
        posting = pool.submit(client.post, "/events", json=batch)
        assert queue.entered.wait(30)                            # the batch is being queued...
        answer = client.post("/predict", json={"user": "u1", "candidates": [1, 2]})
        assert answer.status_code == 200                         # ...and the loop answers meanwhile
        queue.go.set()
        assert posting.result(30).json() == {"accepted": 10_000}


def test_events_bringing_too_many_new_ids_are_refused_whole(trained) -> None:
    trained.learn(trained.chunks[0])
    trained.publisher.publish_full()
    queue = LiveQueue(FIELDS)
    service = ModelService(trained.registry, sink=queue)
    known = trained.chunks[0].table.slice(0, 50).to_pydict()
    with TestClient(create_app(service, ServeConfig(max_new_ids=1.0))) as client:   # bursts of 10 new ids
        service.sync()
        learned = [{"user": u, "item": i} for u, i in zip(known["user_id"], known["item_id"])]
        assert client.post("/events", json={"events": learned}).status_code == 202   # rows the model has
        new = [{"user": f"new-{n}", "item": known["item_id"][0]} for n in range(11)]
        too_many = client.post("/events", json={"events": new})
        assert too_many.status_code == 422 and "at most 10 (serve.max_new_ids x 10 s): split it" in \
            too_many.json()["detail"]
        assert client.post("/events", json={"events": new[:8]}).status_code == 202
        later = client.post("/events", json={"events": new[8:]})
        assert later.status_code == 429 and int(later.headers["Retry-After"]) >= 1
        assert "3 ids the model has no row for" in later.json()["detail"]
        assert len(queue) == 58   # the refused batches: none of their events


def test_a_client_past_its_rate_gets_a_429_on_every_path(trained) -> None:
    trained.publisher.publish_full()
    service = ModelService(trained.registry)
    with TestClient(create_app(service, ServeConfig(max_client_rate=1.0))) as client:   # bursts of 2
        service.sync()
        assert client.post("/predict", json={"user": 1, "candidates": [1]}).status_code == 200   # the hot lane
        assert client.get("/healthz").status_code == 200                                         # the app
        refused = client.post("/predict", json={"user": 1, "candidates": [1]})
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        assert refused.json()["detail"] == "more than 1 requests a second from testclient (serve.max_client_rate)"
        assert client.get("/model").status_code == 429
        assert "429" in client.app.openapi()["paths"]["/predict"]["post"]["responses"]
