"""The live queue: checked values, all-or-nothing puts, capacity, close; a stream followed by it."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pytest

from freshrec.events.event import Event, Field, FieldKind
from freshrec.events.live import BadEvent, LiveQueue, QueueFull, check_event, conform
from freshrec.events.source import TableReplay
from freshrec.events.with_live import WithLive

FIELDS = (Field("genres", FieldKind.MULTI_CATEGORICAL, "item"), Field("age", FieldKind.CATEGORICAL, "user"),
          Field("price", FieldKind.DENSE, "item"))


@pytest.mark.parametrize(("fields", "message"), [
    ({"price": "cheap"}, "field 'price' must be a number"),
    ({"genres": "drama"}, "field 'genres' must be a list"),
    ({"age": 25.5}, "field 'age' must be a string or an integer"),
    ({"age": True}, "field 'age' must be a string or an integer"),
])
def test_bad_values_name_the_event_and_field(fields: dict, message: str) -> None:
    queue = LiveQueue(FIELDS)
    good = Event("ok", 1.0, "u", "i", fields={"age": 30})
    with pytest.raises(ValueError, match=message):
        queue.put([good, Event("bad", 2.0, "u", "i", fields=fields)])
    assert len(queue) == 0                       # all or nothing


def test_capacity_close_and_positions() -> None:
    queue = LiveQueue(FIELDS, capacity=3)
    assert queue.put([Event(str(n), float(n), n, "i") for n in range(2)]) == 2
    with pytest.raises(QueueFull, match="capacity 3"):
        queue.put([Event("x", 1.0, 1, "i"), Event("y", 1.0, 1, "i")])
    consumer = []
    thread = threading.Thread(target=lambda: consumer.extend(queue))
    thread.start()
    queue.put([Event("z", 3.0, 3, "i", fields={"genres": [1, "b"], "price": 2})])
    queue.close()
    thread.join(timeout=5)
    assert [len(c) for c in consumer] == [2, 1] and queue.position() == {"row": 3}
    assert consumer[1].table.column("genres").to_pylist() == [["1", "b"]]
    assert consumer[0].entered is not None


def test_conform_casts_ids_to_text_and_fills_missing_columns() -> None:
    table = pa.table({"ts": [1.0], "user_id": [42], "item_id": ["i"], "age": [30]})
    out = conform(table, FIELDS)
    assert out.column_names == ["ts", "user_id", "item_id", "label", "genres", "age", "price"]
    assert out.to_pylist() == [{"ts": 1.0, "user_id": "42", "item_id": "i", "label": None, "genres": None,
                                "age": "30", "price": None}]


NOW = 1_700_000_000.0


@pytest.mark.parametrize(("event", "reason", "field"), [
    (Event("e", NOW, "u", "i", label=-1), "bad_label", "label"),
    (Event("e", NOW, "u", "i", label=0.5), "bad_label", "label"),
    (Event("e", NOW, "u", "i", label=float("nan")), "bad_label", "label"),
    (Event("e", NOW, "u", "i", label=True), "bad_label", "label"),
    (Event("e", 1e300, "u", "i"), "bad_time", "ts"),
    (Event("e", NOW + 301, "u", "i"), "bad_time", "ts"),
    (Event("e", float("inf"), "u", "i"), "bad_time", "ts"),
    (Event("e", -1.0, "u", "i"), "bad_time", "ts"),
    (Event("e", "now", "u", "i"), "bad_time", "ts"),
    (Event("e", NOW, None, "i"), "missing_id", "user_id"),
    (Event("e", NOW, "u", " "), "missing_id", "item_id"),
    (Event("e", NOW, 1.5, "i"), "bad_id", "user_id"),
    (Event("e", NOW, "u", False), "bad_id", "item_id"),
    (Event("e", NOW, "u", "i", fields={"price": float("inf")}), "bad_field", "price"),
    (Event("e", NOW, "u", "i", fields={"colour": "red"}), "unknown_field", "colour"),
])
def test_check_event_names_the_field_and_the_dead_letter_reason(event: Event, reason: str, field: str) -> None:
    kinds = {f.name: f.kind for f in FIELDS}
    with pytest.raises(BadEvent) as refused:
        check_event(event, kinds, now=NOW)
    assert (refused.value.reason, refused.value.field) == (reason, field)
    assert field in str(refused.value)


def test_good_events_pass_and_the_tolerance_is_configurable() -> None:
    kinds = {f.name: f.kind for f in FIELDS}
    for label in (None, 0, 1, 0.0, 1.0):
        check_event(Event("e", NOW + 299, 42, "i", label=label), kinds, now=NOW)
    check_event(Event("e", 12.0, "u", None), kinds, require_ids=False, now=NOW)   # old times are valid
    check_event(Event("e", NOW + 3000, "u", "i"), kinds, now=NOW, max_ahead=3600)
    with pytest.raises(BadEvent, match="more than 60 s"):
        check_event(Event("e", NOW + 61, "u", "i"), kinds, now=NOW, max_ahead=60)


def test_with_live_follows_the_queue_after_the_stream_until_closed() -> None:
    """After the stream: `on_end`, then live chunks, an empty chunk when none is waiting, and the
    end once the queue is closed; positions and seeks are the stream's."""
    replay = TableReplay(pa.table({"ts": [1.0, 2.0], "user_id": ["u", "v"], "item_id": ["i", "j"]}),
                         np.arange(2), name="demo", batch_size=2)
    live, ended = LiveQueue(replay.fields), []
    source = WithLive(replay, live, tick=0.0, on_end=lambda: ended.append(True))
    chunks = iter(source)
    assert len(next(chunks)) == 2 and not ended
    assert len(next(chunks)) == 0 and ended          # quiet: an empty chunk, so the engine can publish
    live.put([Event("e1", 3.0, "w", "k", label=1.0)])
    assert (chunk := next(chunks)).source == "live" and len(chunk) == 1
    source.close()
    assert next(chunks, None) is None and live.closed
    assert source.position() == {"row": 2}
    source.seek({"row": 1})
    assert replay.position() == {"row": 1}
