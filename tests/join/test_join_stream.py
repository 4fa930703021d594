"""The joiner on long synthetic streams: labels against a brute-force oracle, counts that add
up, the same output however the stream is cut or interrupted by a checkpoint, and memory
bounded by the window."""

from __future__ import annotations

import io
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest

from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.events.event import EventChunk
from freshrec.join import JoinConfig, Joiner, JoinStats
from freshrec.join.simulated import impression_stream

WINDOW, LATENESS = 60.0, 5.0


def stream(n: int, seed: int = 0, rate: float = 100.0, late: float = 0.0) -> EventChunk:
    """Clicks with p 0.3 after a mean 20 s (some past the window), up to 4 s of disorder."""
    return impression_stream(n, seed, rate, ctr=0.3, late=late)


def config(**options) -> JoinConfig:
    return JoinConfig(**{"window": WINDOW, "allowed_lateness": LATENESS, "key": "impression_id", **options})


def pieces(events: EventChunk, size: int) -> list[EventChunk]:
    return [events.slice(i, i + size) for i in range(0, len(events), size)]


def run(joiner: Joiner, chunks: list[EventChunk], flush: bool = True) -> pa.Table | None:
    outs = [joiner.process(c) for c in chunks] + ([joiner.flush()] if flush else [])
    tables = [o.table.append_column("position", pa.array(o.positions)) for o in outs if o is not None]
    return pa.concat_tables(tables) if tables else None


def balanced(stats: JoinStats, joiner: Joiner) -> None:
    s = stats
    assert s.impressions == (s.positives + s.negatives + s.duplicate_impressions + s.late_impressions
                             + s.invalid_impressions + joiner.pending)
    assert s.actions == (s.positives + s.duplicate_actions + s.late_actions + s.orphan_actions
                         + s.ignored_actions + s.invalid_actions + joiner.buffered)


def oracle(events: EventChunk) -> dict[int, float]:
    """Label per impression id when nothing is late: 1.0 iff a click falls in [t, t + window)."""
    table = events.table.to_pydict()
    shown, clicks = {}, defaultdict(list)
    for ts, kind, i in zip(table["ts"], table["kind"], table["impression_id"], strict=True):
        if kind == "impression":
            shown.setdefault(i, ts)
        else:
            clicks[i].append(ts)
    return {i: float(any(t <= c < t + WINDOW for c in clicks[i])) for i, t in shown.items()}


def test_labels_match_a_brute_force_oracle_and_every_impression_comes_out_once() -> None:
    events = stream(3000)
    joiner = Joiner(config(), dead := MemoryDeadLetters())
    out = run(joiner, pieces(events, 1000))
    labels = dict(zip(out.column("impression_id").to_pylist(), out.column("label").to_pylist(), strict=True))
    assert labels == oracle(events) and len(labels) == out.num_rows == 3000
    s = joiner.stats
    assert s.late_impressions == s.late_actions == 0 and s.duplicate_impressions > 0 and s.duplicate_actions > 0
    assert s.orphan_actions > 0 and s.out_of_order > 0 and s.early_actions > 0
    assert dead.counts == {"orphan_action": s.orphan_actions}
    balanced(s, joiner)
    assert joiner.memory == {"impressions": 0, "rows": 0, "actions": 0}
    delay = np.array(out.column("label_ts")) - np.array(out.column("ts"))
    positive = np.array(out.column("label")) == 1.0
    assert (delay[positive] >= 0).all() and (delay[positive] < WINDOW).all() and np.allclose(delay[~positive], WINDOW)


def test_output_is_the_same_however_the_stream_is_cut() -> None:
    events = stream(800, seed=1, late=0.02)
    whole = run(Joiner(config()), [events])
    assert run(Joiner(config()), pieces(events, 7)).equals(whole)
    assert run(Joiner(config()), pieces(events, 1)).equals(whole)
    assert run(Joiner(config()), [events]).equals(whole)


def _through_files(state: dict) -> dict:
    """The state written out and read back as .npy and Arrow IPC, neither allowing pickle."""
    back = {}
    for name, value in state.items():
        buffer = io.BytesIO()
        if isinstance(value, np.ndarray):
            np.save(buffer, value, allow_pickle=False)
            back[name] = np.load(io.BytesIO(buffer.getvalue()), allow_pickle=False)
        else:
            with pa.ipc.new_file(buffer, value.schema) as writer:
                writer.write_table(value)
            back[name] = pa.ipc.open_file(io.BytesIO(buffer.getvalue())).read_all()
    return back


@pytest.mark.parametrize("key", ["impression_id", ("user_id", "item_id")])
def test_restoring_a_checkpoint_mid_stream_gives_the_uninterrupted_output(key: str | tuple) -> None:
    events = stream(2000, seed=2, late=0.01)
    chunks = pieces(events, 333)
    whole_dead = MemoryDeadLetters()
    whole = run(Joiner(config(key=key, skew=1.0), whole_dead), chunks)
    first_dead, second_dead = MemoryDeadLetters(), MemoryDeadLetters()
    first = Joiner(config(key=key, skew=1.0), first_dead)
    before = run(first, chunks[:3], flush=False)
    assert first.pending > 0 and first.buffered > 0
    second = Joiner(config(key=key, skew=1.0), second_dead)
    second.load_state_dict(_through_files(first.state_dict()))
    after = run(second, chunks[3:])
    assert pa.concat_tables([before, after]).equals(whole)
    assert first_dead.letters + second_dead.letters == whole_dead.letters
    with pytest.raises(ValueError, match="saved under"):
        Joiner(config(key=key, window=30.0)).load_state_dict(first.state_dict())
    old = {**first.state_dict(), "impressions": pa.table({"key.impression_id": ["r1"], "ts": [1.0]})}
    with pytest.raises(ValueError, match="raw join keys"):   # a checkpoint of the joiner before key hashing
        Joiner(config(key=key, skew=1.0)).load_state_dict(old)


def test_memory_stays_bounded_on_a_long_stream() -> None:
    n, rate, size = 200_000, 200.0, 40_000
    events = stream(n, seed=3, rate=rate, late=0.001)
    joiner = Joiner(config())
    highest = dict.fromkeys(("impressions", "rows", "actions"), 0)
    most_bytes = 0
    emitted = 0
    for piece in pieces(events, size):
        out = joiner.process(piece)
        emitted += len(out) if out is not None else 0
        highest = {k: max(v, joiner.memory[k]) for k, v in highest.items()}
        most_bytes = max(most_bytes, joiner.nbytes)
    out = joiner.flush()
    emitted += len(out) if out is not None else 0
    # held: impressions of the last window + lateness + disorder (about rate x 69 s), plus
    # one chunk's rows in the store; early actions only wait out the lateness
    held = rate * (WINDOW + LATENESS + 4.0)
    assert highest["impressions"] < 1.2 * held
    assert highest["rows"] < 2.2 * held + size
    assert highest["actions"] < 0.1 * held
    assert most_bytes < 1_000 * held + 500 * size   # arrays at most a few times what they hold
    s = joiner.stats
    assert emitted == s.positives + s.negatives
    assert s.impressions == emitted + s.duplicate_impressions + s.late_impressions
    assert s.late_impressions > 0 and s.late_actions > 0
    balanced(s, joiner)
