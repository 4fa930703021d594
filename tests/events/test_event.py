from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from freshrec.events.event import Event, EventChunk


def test_round_trip_through_a_chunk() -> None:
    events = [Event("x", 1.5, 7, "i9", "click", {"genres": ["a", "b"], "price": 2.0}, 1.0),
              Event("y", 2.5, 8, "i9", "click", {"price": None}, None)]
    chunk = EventChunk.from_events(events, "api")
    back = list(chunk.events())
    assert [(e.event_id, e.ts, e.user_id, e.item_id, e.kind, e.label) for e in back] == [
        ("api:0", 1.5, 7, "i9", "click", 1.0), ("api:1", 2.5, 8, "i9", "click", None)]
    assert back[0].fields == {"genres": ["a", "b"], "price": 2.0}
    assert back[1].fields == {"genres": None, "price": None}


def test_slice_keeps_positions_and_checks_lengths() -> None:
    chunk = EventChunk(pa.table({"ts": [1.0, 2.0, 3.0]}), np.array([10, 11, 12]), "s")
    part = chunk.slice(1, 10)
    assert len(part) == 2 and part.positions.tolist() == [11, 12]
    with pytest.raises(ValueError, match="2 positions for 3 rows"):
        EventChunk(pa.table({"ts": [1.0, 2.0, 3.0]}), np.array([1, 2]), "s")
