"""schemathesis against the app's own OpenAPI document, in process (ASGI), on a small trained model
served in two arms:
every operation gets requests valid by the document and requests that are not; no answer may be a
5xx (but the 503 of a full event queue), a status the document does not list, or a body or header it
does not describe, and a request the document calls invalid must be refused (4xx), as must one
without the bearer token where one is required.

Not checked: that every request valid by the document is accepted. It cannot say which fields the
served model reads (unknown ones are a 422) nor how far ahead of the clock an event's time may be.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from freshrec.config import ExperimentSection
from freshrec.events.live import LiveQueue
from freshrec.events.simulator import FIELDS
from freshrec.serve import ModelService, ServeConfig, create_app

WITH_BODY = ["POST /predict", "POST /recommend", "POST /events", "POST /admin/swap"]
OPERATIONS = [*WITH_BODY, "GET /healthz", "GET /readyz", "GET /metrics", "GET /model", "GET /arms",
              "POST /admin/rollback"]
MODES = [(operation, GenerationMode.POSITIVE) for operation in OPERATIONS] + \
        [(operation, GenerationMode.NEGATIVE) for operation in WITH_BODY]   # the others hold nothing to make invalid
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, negative_data_rejection, ignored_auth]
REFUSED = [401, 404, 408, 409, 413, 422]
"""How the app may answer a request the document calls invalid (negative_data_rejection): never a 5xx."""
OVERLOADED = 503
"""Not a server error: the documented answer of a full event queue (Retry-After), which the fuzzing fills."""
TOKENS = {"admin": "s3cret", "events": "ev3nts"}
EXAMPLES = 100   # per operation and mode: the file runs in about 15 s (2 cores)


@pytest.fixture
def schema(trained):
    for chunk in trained.chunks[:2]:
        trained.learn(chunk)
    trained.publisher.publish_full()
    service = ModelService(trained.registry, sink=LiveQueue(FIELDS, capacity=200))   # full soon: 503s too
    service.sync()
    arms = ExperimentSection(arms=[{"name": "online", "traffic": 0.5}, {"name": "frozen", "traffic": 0.5,
                                                                        "follow": "frozen"}])
    app = create_app(service, ServeConfig(admin_token=TOKENS["admin"], events_token=TOKENS["events"],
                                          max_candidates=50, max_events=20, max_body_bytes=4096, experiment=arms))
    for arm in app.experiment.followers():
        arm.sync()
    config = SchemathesisConfig.from_dict({"checks": {
        "negative_data_rejection": {"expected-statuses": REFUSED},
        "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", OVERLOADED]}}})
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


def test_the_operations_tested_are_the_documents(schema) -> None:
    operations = [result.ok() for result in schema.get_all_operations()]
    assert sorted(operation.label for operation in operations) == sorted(OPERATIONS)
    assert sorted(operation.label for operation in operations if operation.body) == sorted(WITH_BODY)


@pytest.mark.parametrize(("operation", "mode"), MODES, ids=[f"{o} {m.value}" for o, m in MODES])
def test_every_answer_is_one_the_document_gives(schema, operation: str, mode: GenerationMode) -> None:
    found = schema.find_operation_by_label(operation)
    token = TOKENS["events" if operation == "POST /events" else "admin"]

    @given(case=found.as_strategy(mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=True)   # the same examples on every run: CI fails only on a change
    def answered_as_documented(case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)

    answered_as_documented()
