"""The ingestion path over a small simulated stream: counts, labels, times, callbacks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from freshrec.engine import IngestSummary, ingest
from freshrec.events.event import EventChunk
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline, default_specs

CONFIG = SimulatorConfig(n_users=200, n_items=100, batch_size=1000, total_events=2500)


@pytest.fixture(scope="module")
def stream() -> list[EventChunk]:
    return list(Simulator(CONFIG))


def _pipeline() -> FeaturePipeline:
    return FeaturePipeline(default_specs(Simulator.fields))


def test_ingest_counts(stream):
    seen = []
    summary = ingest(stream, _pipeline(), batch_size=512, on_chunk=lambda w, s: seen.append((len(w.whole), s.batches)))
    assert [len(c) for c in stream] == [1000, 1000, 500]
    assert summary.rows == 2500
    assert summary.batches == 5  # 1000 -> 512 + 488, 1000 -> 512 + 488, 500 -> 500
    assert seen == [(1000, 2), (1000, 4), (500, 5)]  # counted chunk by chunk
    labels = np.concatenate([c.column("label").to_numpy(zero_copy_only=False) for c in stream])
    assert summary.labelled == 2500
    assert summary.positives == int((labels > 0.5).sum()) == int(labels.sum())
    assert 0 < summary.positives < 2500
    assert summary.positive_rate == pytest.approx(summary.positives / 2500)
    # 5 categorical fields, one id per row each
    assert summary.ids == 5 * 2500
    assert summary.first_ts == stream[0].column("ts")[0].as_py()
    assert summary.last_ts == stream[-1].column("ts")[-1].as_py()
    assert summary.first_ts < summary.last_ts
    assert summary.dead_letters == 0 and summary.dead_letter_reasons == {}
    assert {"seconds", "rows_per_s"} <= summary.as_dict().keys()   # figures for the benches; not asserted on


def test_on_chunk_sees_each_chunk_and_running_summary(stream):
    calls = []

    def on_chunk(work, summary):
        assert isinstance(summary, IngestSummary)
        calls.append((work.whole, summary.rows))

    final = ingest(stream, _pipeline(), batch_size=512, on_chunk=on_chunk)
    assert len(calls) == 3 and final.batches == 5
    assert [rows for _, rows in calls] == [1000, 2000, 2500]
    ts = np.concatenate([b.ts.numpy() for b, _ in calls])
    expected = np.concatenate([c.column("ts").to_numpy() for c in stream])
    np.testing.assert_array_equal(ts, expected)


def test_as_dict(stream):
    d = ingest(stream, _pipeline(), batch_size=512).as_dict()
    assert {"rows", "batches", "ids", "positives", "labelled", "first_ts", "last_ts", "seconds",
            "rows_per_s", "positive_rate", "dead_letters", "dead_letter_reasons"} <= set(d)
    assert d["rows"] == 2500 and d["batches"] == 5 and d["dead_letters"] == 0
    assert d["rows_per_s"] == pytest.approx(d["rows"] / d["seconds"])


def test_batch_size_larger_than_chunks(stream):
    summary = ingest(stream, _pipeline(), batch_size=4096)
    assert (summary.rows, summary.batches) == (2500, 3)


def test_empty_stream_and_empty_chunks(stream):
    summary = ingest([], _pipeline())
    assert summary.rows == summary.batches == 0 and summary.first_ts is None and summary.last_ts is None
    assert summary.positive_rate is None
    empty = stream[0].slice(0, 0)
    summary = ingest([empty, stream[2], empty], _pipeline(), batch_size=256)
    assert (summary.rows, summary.batches) == (500, 2)


def test_unlabelled_rows_not_counted():
    table = pa.table({"ts": pa.array([1.0, 2.0, 3.0]), "user_id": pa.array([1, 2, 3]),
                      "item_id": pa.array([4, 5, 6]), "label": pa.array([1.0, None, 0.0], pa.float32())})
    chunk = EventChunk(table, np.arange(3, dtype=np.int64), "t")
    summary = ingest([chunk], FeaturePipeline(default_specs(Simulator.fields[:2])), batch_size=2)
    assert (summary.rows, summary.batches, summary.labelled, summary.positives) == (3, 2, 2, 1)
    assert summary.positive_rate == 0.5
    assert (summary.first_ts, summary.last_ts) == (1.0, 3.0)
