from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from freshrec.events.source import PacedSource, Source, TableReplay, limited


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


def test_a_paced_source_releases_each_chunk_at_its_last_events_time_and_keeps_positions() -> None:
    replay = TableReplay(pa.table({"ts": [0.0, 0.0, 60.0, 120.0, 3600.0]}), np.arange(5), name="t", batch_size=2)
    now = [100.0]
    source = PacedSource(replay, speed=60, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    released = [(now[0] - 100.0, chunk.table.column("ts").to_pylist()) for chunk in source]
    assert released == [(0.0, [0.0, 0.0]), (2.0, [60.0, 120.0]), (60.0, [3600.0])]
    assert source.position() == {"row": 5}
    source.seek({"row": 2})   # restored: the pace starts over from the next chunk
    assert [(now[0] - 100.0, len(chunk)) for chunk in source] == [(61.0, 2), (119.0, 1)]
    with pytest.raises(ValueError, match="positive"):
        PacedSource(replay, speed=0)
