"""Tables shared between a trainer and servers: torn reads, growth, resizes, takeover, dead writers."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from freshrec.events.event import FieldKind
from freshrec.features import FeatureSpec
from freshrec.models import ModelConfig, build_model
from freshrec.share import AreaBusy, Attachment, SharedArea, ShareWriter
from freshrec.testing.torn_reads import stop_writer, verify_reads, write_flat_out

SPECS = [FeatureSpec("user_id", FieldKind.CATEGORICAL), FeatureSpec("item_id", FieldKind.CATEGORICAL)]


def _fm():
    return build_model("fm", SPECS, ModelConfig(dim=4))


def test_readers_never_see_a_torn_row_while_a_writer_steps_flat_out(tmp_path: Path) -> None:
    writer = multiprocessing.get_context("spawn").Process(target=write_flat_out, args=(str(tmp_path), "torn"))
    writer.start()
    try:
        report = verify_reads(str(tmp_path), "torn", min_passes=2000)
    finally:
        stop_writer(str(tmp_path), "torn")
        writer.join(timeout=120)
    assert writer.exitcode == 0
    assert report["passes_seen"] >= 2000          # the rows changed under the reader all along
    assert report["torn_rows"] == 0


def test_the_reader_follows_growth_and_index_resizes(tmp_path: Path) -> None:
    model = _fm()
    writer = ShareWriter(SharedArea("grow", root=tmp_path), model)
    attachment = Attachment(SharedArea("grow", root=tmp_path))
    assert attachment.refresh() == "generation"
    served = attachment.model().tables["fm"]
    table = model.tables["fm"]
    ids = np.arange(1, 150_001)        # past two storage chunks (65,536 rows each) and many resizes
    rows = table.slots(ids, now=0.0)
    assert table.storage.chunks == 3
    assert attachment.refresh() == "grown"
    np.testing.assert_array_equal(served.slots(ids, 0.0, train=False), rows)
    torch.testing.assert_close(served.gather(rows[-5:]), table.gather(rows[-5:]))
    assert attachment.refresh() is None    # nothing changed since
    writer.close()


def test_a_row_past_the_chunks_mapped_reads_as_absent(tmp_path: Path) -> None:
    model = _fm()
    writer = ShareWriter(SharedArea("lag", root=tmp_path), model)
    attachment = Attachment(SharedArea("lag", root=tmp_path))
    attachment.refresh()
    served = attachment.model().tables["fm"]
    table = model.tables["fm"]
    rows = table.slots(np.arange(1, 70_001), now=0.0)   # a second chunk, not mapped until a refresh
    late = rows[-1:]
    assert served.gather(late).abs().sum() == 0
    attachment.refresh()
    torch.testing.assert_close(served.gather(late), table.gather(late))
    writer.close()


def test_a_row_left_mid_write_by_a_dead_writer_reads_as_absent(tmp_path: Path) -> None:
    model = _fm()
    writer = ShareWriter(SharedArea("odd", root=tmp_path), model)
    table = model.tables["fm"]
    rows = table.slots(np.array([5, 6]), now=0.0)
    seq = np.memmap(SharedArea("odd", root=tmp_path).path / "gen-1/fm/seq.0", np.int64, "r+")
    seq[rows[0]] += 1                                      # as a writer killed between its two stores
    attachment = Attachment(SharedArea("odd", root=tmp_path))
    attachment.refresh()
    served = attachment.model().tables["fm"]
    got = served.gather(rows)
    assert got[0].abs().sum() == 0
    torch.testing.assert_close(got[1], table.gather(rows[1:])[0])
    writer.close()


def test_a_second_trainer_takes_the_share_over_once_the_first_is_gone(tmp_path: Path) -> None:
    first = ShareWriter(SharedArea("over", root=tmp_path), _fm())
    for _ in range(3):
        first.publish(events=10, entered=None)
    with pytest.raises(AreaBusy, match="live trainer"):
        ShareWriter(SharedArea("over", root=tmp_path), _fm())
    attachment = Attachment(SharedArea("over", root=tmp_path))
    attachment.refresh()
    first.close()                                          # (a SIGKILL drops the lock the same way)
    second_model = _fm()
    second = ShareWriter(SharedArea("over", root=tmp_path), second_model)
    assert second.generation == 2 and second.version == first.version + 1
    assert not (tmp_path / "freshrec-over" / "gen-1").exists()
    assert attachment.refresh() == "generation"
    model = attachment.model()
    assert attachment.read_dense(model).version == second.version
    rows = second_model.tables["fm"].slots(np.array([9]), now=0.0)
    attachment.refresh()
    torch.testing.assert_close(model.tables["fm"].gather(rows), second_model.tables["fm"].gather(rows))
    second.close()


def test_a_dense_block_left_mid_write_is_not_read(tmp_path: Path) -> None:
    writer = ShareWriter(SharedArea("dense", root=tmp_path), _fm())
    attachment = Attachment(SharedArea("dense", root=tmp_path))
    attachment.refresh()
    model = attachment.model()
    assert attachment.read_dense(model) is not None
    block = np.memmap(SharedArea("dense", root=tmp_path).path / "gen-1/dense", np.int64, "r+", shape=(1,))
    block[0] += 1                                          # the counter odd: a writer killed mid-copy
    assert attachment.read_dense(model) is None
    writer.close()


def test_share_names_are_checked() -> None:
    with pytest.raises(ValueError, match="share name '../x'"):
        SharedArea("../x")


def test_only_host_float32_rows_are_shared(tmp_path: Path) -> None:
    model = build_model("fm", SPECS, ModelConfig(dim=4, row_dtype="bfloat16"))
    with pytest.raises(ValueError, match="only host float32 rows"):
        ShareWriter(SharedArea("half", root=tmp_path), model)
    assert SharedArea("half", root=tmp_path).generations() == []      # nothing left behind, not even the lock
    ShareWriter(SharedArea("half", root=tmp_path), _fm()).close()
