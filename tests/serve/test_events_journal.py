"""POST /events with a journaled live sink: 202 only once durable, a bad event a 422 that writes
nothing, a journal that cannot write a 503 (Retry-After) that accepts nothing."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from freshrec.events.journal import LiveJournal
from freshrec.events.live import LiveQueue
from freshrec.events.simulator import FIELDS
from freshrec.serve import ModelService, create_app
from freshrec.snapshot import ModelRegistry


def _rows_on_disk(folder: Path, queue: LiveQueue) -> int:
    return LiveJournal.open(folder, queue.empty().table.schema).rows


def test_accepted_events_are_in_the_journal_and_refused_ones_are_not(tmp_path: Path) -> None:
    queue = LiveQueue(FIELDS, journal=tmp_path / "live")
    with TestClient(create_app(ModelService(ModelRegistry(tmp_path / "registry"), sink=queue))) as client:
        answer = client.post("/events", json={"events": [{"user": "u1", "item": "i1", "label": 1},
                                                         {"user": "u2", "item": "i1", "label": 0}]})
        assert answer.status_code == 202 and answer.json() == {"accepted": 2}
        assert _rows_on_disk(tmp_path / "live", queue) == 2      # durable when the 202 came
        bad = client.post("/events", json={"events": [{"user": "u3", "item": "i1", "label": 1},
                                                      {"user": "u4", "item": "i1", "label": 2}]})
        assert bad.status_code == 422 and "label must be 0 or 1" in bad.json()["detail"]
        assert _rows_on_disk(tmp_path / "live", queue) == 2 and len(queue) == 2


def test_a_journal_that_cannot_write_answers_503_and_accepts_nothing(tmp_path: Path) -> None:
    queue = LiveQueue(FIELDS, journal=tmp_path / "live")
    queue.journal.close()                                        # as if its file were gone
    with TestClient(create_app(ModelService(ModelRegistry(tmp_path / "registry"), sink=queue))) as client:
        answer = client.post("/events", json={"user": "u1", "item": "i1", "label": 1})
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert "journal" in answer.json()["detail"] and len(queue) == 0
