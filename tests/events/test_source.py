from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from freshrec.events.event import EventChunk
from freshrec.events.source import Source, TableReplay, limited, paced


def _replay(ts: list[float], batch_size: int = 2) -> TableReplay:
    table = pa.table({"ts": ts, "user_id": list(range(len(ts)))})
    return TableReplay(table, np.arange(1, len(ts) + 1), "t", batch_size=batch_size)


def test_table_replay_sorts_stably_and_is_a_source() -> None:
    replay = _replay([5.0, 1.0, 5.0, 0.0, 1.0])
    assert isinstance(replay, Source)
    chunks = list(replay)
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert np.concatenate([c.positions for c in chunks]).tolist() == [4, 2, 5, 1, 3]


def test_seek_commit_and_bounds() -> None:
    replay = _replay([1.0, 2.0, 3.0, 4.0])
    first = next(iter(replay))
    assert replay.position() == {"row": 2} and first.positions.tolist() == [1, 2]
    replay.commit(replay.position())
    replay.seek({"row": 1})
    assert [c.positions.tolist() for c in replay] == [[2, 3], [4]]
    assert replay.committed() == {"row": 2}
    with pytest.raises(ValueError, match="outside"):
        replay.seek({"row": 9})


def test_limited_cuts_the_last_chunk() -> None:
    assert [len(c) for c in limited(_replay([1.0] * 5), 3)] == [2, 1]
    assert [len(c) for c in limited(_replay([1.0] * 5), None)] == [2, 2, 1]
    assert list(limited(_replay([1.0] * 5), 0)) == []


def test_paced_releases_events_at_speed_times_event_time() -> None:
    ts = np.array([0.0, 0.0, 60.0, 120.0, 3600.0])
    chunk = EventChunk(pa.table({"ts": ts}), np.arange(5), "t")
    now = [100.0]
    released = []
    for piece in paced([chunk], speed=60, clock=lambda: now[0],
                       sleep=lambda s: now.__setitem__(0, now[0] + s)):
        released.append((now[0] - 100.0, piece.table.column("ts").to_pylist()))
    assert released == [(0.0, [0.0, 0.0]), (1.0, [60.0]), (2.0, [120.0]), (60.0, [3600.0])]
    with pytest.raises(ValueError, match="positive"):
        list(paced([chunk], speed=0))
