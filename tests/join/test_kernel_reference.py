"""The numba joiner against the plain-Python reference (`reference.py`): hypothesis streams over a
few keys, with ties, disorder, invalid rows, ignored kinds, tiny caps, watermark moves and
checkpoints between chunks; the examples, dead letters, counters and held state agree."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import ReferenceJoiner

from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.events.event import EventChunk
from freshrec.join import JoinConfig, Joiner
from freshrec.join.simulated import impression_stream

EXAMPLES = int(os.environ.get("FRESHREC_FUZZ_EXAMPLES", "100"))
CODES = {"impression": 0, "click": 1, "purchase": 1, "like": 2}

# Few keys, whole seconds (so windows, skews and watermarks meet exactly and ts tie), a clock
# that moves forward by 0-2 s a row and rows stamped up to 4 s behind it (disorder, lateness).
row = st.tuples(st.sampled_from(["impression", "impression", *CODES]), st.sampled_from([0, 0, 1, 2]),
                st.one_of(*[st.integers(-4, 0).map(float)] * 6, st.floats(-4, 0), st.none()),
                st.sampled_from([*"ab" * 4, *"abcdefgh", None]))


def _stamped(drawn: list[tuple]) -> list[tuple]:
    """(kind, ts, key) rows: ts = the clock + the row's offset (None stays None)."""
    clock, rows = 0, []
    for kind, step, offset, key in drawn:
        clock += step
        rows.append((kind, None if offset is None else clock + offset, key))
    return rows


rows = st.lists(row, min_size=20, max_size=150).map(_stamped)
steps = st.lists(st.tuples(st.integers(1, 12), st.sampled_from(["chunk", "advance", "checkpoint"])),
                 min_size=2, max_size=20)
configs = st.builds(lambda window, lateness, skew, cap: JoinConfig(window=window, allowed_lateness=lateness,
                                                                   key="impression_id", skew=skew * window,
                                                                   max_pending=cap),
                    st.sampled_from([2.0, 3.0, 10.0]), st.sampled_from([0.0, 2.0, 5.0]), st.sampled_from([0.0, 0.2]),
                    st.sampled_from([1, 3, 1000]))


def _chunk(rows: list[tuple], start: int) -> EventChunk:
    table = pa.table({"ts": pa.array([r[1] for r in rows], pa.float64()),
                      "user_id": pa.array(["u"] * len(rows)), "item_id": pa.array(["i"] * len(rows)),
                      "kind": pa.array([r[0] for r in rows], pa.string()),
                      "impression_id": pa.array([r[2] for r in rows], pa.string())})
    return EventChunk(table, np.arange(start, start + len(rows), dtype=np.int64), "log")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows, steps, configs)
def test_kernel_matches_reference(stream: list[tuple], plan: list[tuple[int, str]], config: JoinConfig) -> None:
    reference = ReferenceJoiner(config)
    joiner = Joiner(config, dead := MemoryDeadLetters())
    out: list[tuple] = []

    def collect(chunk: EventChunk | None) -> None:
        if chunk is not None:
            out.extend(zip(chunk.positions.tolist(), chunk.column("label").to_pylist(),
                           chunk.column("label_ts").to_pylist(), chunk.column("action_kind").to_pylist(),
                           strict=True))

    at = 0
    for size, step in [*plan, (len(stream), "chunk")]:
        if step == "advance":
            watermark = reference.max_ts - size
            reference.advance(watermark)
            collect(joiner.advance(watermark))
            continue
        if step == "checkpoint":
            joiner, saved = Joiner(config, dead), joiner.state_dict()
            joiner.load_state_dict(saved)
        piece = stream[at:at + size]
        if piece:
            reference.process((CODES[kind], ts, key, kind, at + i) for i, (kind, ts, key) in enumerate(piece))
            collect(joiner.process(_chunk(piece, at)))
            at += len(piece)
    assert (joiner.pending, joiner.buffered, joiner.watermark) == (reference.pending, reference.buffered,
                                                                   reference.watermark)
    reference.advance(float("inf"))
    collect(joiner.flush())
    assert out == reference.out
    assert [(letter.position, letter.reason) for letter in dead.letters] == reference.letters
    assert joiner.stats == reference.stats


@pytest.mark.parametrize("cap", [300, 1_000_000])
def test_kernel_matches_reference_on_a_long_simulated_stream(cap: int) -> None:
    events = impression_stream(20_000, seed=5, rate=50.0, ctr=0.2, late=0.02)
    config = JoinConfig(window=60.0, allowed_lateness=5.0, key="impression_id", skew=1.0, max_pending=cap)
    table = events.table.to_pydict()
    reference = ReferenceJoiner(config)
    reference.process((CODES[kind], ts, key, kind, i) for i, (kind, ts, key) in
                      enumerate(zip(table["kind"], table["ts"], table["impression_id"], strict=True)))
    reference.advance(float("inf"))
    joiner = Joiner(config, dead := MemoryDeadLetters())
    outs = [joiner.process(events.slice(i, i + 997)) for i in range(0, len(events), 997)] + [joiner.flush()]
    out = [row for chunk in outs if chunk is not None for row in
           zip(chunk.positions.tolist(), chunk.column("label").to_pylist(), chunk.column("label_ts").to_pylist(),
               chunk.column("action_kind").to_pylist(), strict=True)]
    assert out == reference.out and joiner.stats == reference.stats
    assert [(letter.position, letter.reason) for letter in dead.letters] == reference.letters
    s = joiner.stats
    assert s.early_actions and s.late_actions and s.orphan_actions and s.duplicate_impressions
    assert (s.evicted_impressions > 0) == (cap < 1_000_000)
