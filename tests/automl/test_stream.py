"""The stream a search learns from: read in time order (through the joiner), saved and loaded unchanged."""

from __future__ import annotations

import numpy as np

from freshrec.automl import Stream
from freshrec.events.event import Event, EventChunk, Field, FieldKind
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.join import JoinConfig, Joiner


def test_a_saved_stream_loads_back_the_same(tmp_path):
    stream = Stream.read(Simulator(SimulatorConfig(total_events=2000, batch_size=700)))
    stream.save(tmp_path / "s.arrow")
    loaded = Stream.load(tmp_path / "s.arrow")
    assert loaded.table.equals(stream.table) and np.array_equal(loaded.positions, stream.positions)
    assert loaded.fields == stream.fields and loaded.name == stream.name
    ts = loaded.table.column("ts").to_numpy()
    assert np.all(ts[1:] >= ts[:-1])


class Events:
    """A source of impressions and clicks (`kind` per row), one chunk."""

    name, has_event_time = "events", True
    fields = (Field("kind", FieldKind.CATEGORICAL),)

    def __iter__(self):
        events = [Event("i1", 1.0, "u", "a", "impression", {"kind": "impression"}),
                  Event("i2", 2.0, "u", "b", "impression", {"kind": "impression"}),
                  Event("c1", 3.0, "u", "a", "click", {"kind": "click"})]
        yield EventChunk.from_events(events, source="events")


def test_impressions_are_joined_with_their_clicks_when_the_configuration_joins():
    stream = Stream.read(Events(), Joiner(JoinConfig(window=60.0, allowed_lateness=0.0)))
    labels = dict(zip(stream.table.column("item_id").to_pylist(), stream.table.column("label").to_pylist()))
    assert labels == {"a": 1.0, "b": 0.0}
