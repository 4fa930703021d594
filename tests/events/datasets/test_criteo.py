from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import need_real_data

from freshrec.events.datasets.criteo import (
    CATEGORICAL_COLUMNS,
    INTEGER_COLUMNS,
    CriteoReplay,
)
from freshrec.events.deadletter import (
    JsonlDeadLetters,
    MemoryDeadLetters,
    read_dead_letters,
)
from freshrec.events.simulator import write_criteo_tsv

CORRUPTIONS = {
    "drop_field": ("column_count", lambda f: f[:-1]),
    "extra_field": ("column_count", lambda f: f + ["x"]),
    "word_in_int": ("not_a_number", lambda f: f[:3] + ["12a"] + f[4:]),
    "float_in_int": ("not_a_number", lambda f: f[:5] + ["1.5"] + f[6:]),
    "label_two": ("bad_label", lambda f: ["2"] + f[1:]),
    "empty_label": ("bad_label", lambda f: [""] + f[1:]),
    "empty_line": ("column_count", lambda f: []),
}


def _corrupt(path: Path, rate: float, seed: int) -> dict[int, str]:
    """Corrupt about `rate` of the lines in place; returns {line number: expected reason}."""
    lines = path.read_text().split("\n")[:-1]
    rng = np.random.default_rng(seed)
    chosen = np.flatnonzero(rng.random(len(lines)) < rate)
    kinds = list(CORRUPTIONS)
    expected = {}
    for k, index in enumerate(chosen):
        reason, change = CORRUPTIONS[kinds[k % len(kinds)]]
        lines[index] = "\t".join(change(lines[index].split("\t")))
        expected[int(index) + 1] = reason
    path.write_text("\n".join(lines) + "\n")
    return expected


def _replay_all(replay: CriteoReplay) -> pa.Table:
    chunks = list(replay)
    table = pa.concat_tables([c.table for c in chunks])
    positions = np.concatenate([c.positions for c in chunks])
    return table.append_column("line", pa.array(positions))


@pytest.mark.parametrize("batch_size", [64, 65_536])
def test_one_percent_corrupted_lines_every_good_line_batched_every_bad_line_dead_lettered(
        tmp_path: Path, batch_size: int) -> None:
    clean, dirty = tmp_path / "clean.txt", tmp_path / "dirty.txt"
    write_criteo_tsv(clean, 5_000, seed=3)
    dirty.write_bytes(clean.read_bytes())
    expected = _corrupt(dirty, 0.01, seed=4)
    assert 30 < len(expected) < 80

    with JsonlDeadLetters(tmp_path / "dead.jsonl") as sink:
        got = _replay_all(CriteoReplay(dirty, sink, batch_size=batch_size))
    letters = read_dead_letters(tmp_path / "dead.jsonl")
    assert {d.position: d.reason for d in letters} == expected
    assert got.num_rows + len(letters) == 5_000
    assert sorted(set(got.column("line").to_pylist()) | set(expected)) == list(range(1, 5_001))

    reference = _replay_all(CriteoReplay(clean, MemoryDeadLetters(), batch_size=batch_size))
    keep = pa.array(~np.isin(reference.column("line").to_numpy(), list(expected)))
    assert got.equals(reference.filter(keep))


def test_dead_letters_carry_the_raw_line_and_a_detail(tmp_path: Path) -> None:
    good = "\t".join(["1"] + ["7"] * 13 + ["68fd1e64"] * 26)
    bad = good.replace("\t7\t", "\tseven\t", 1)
    path = tmp_path / "day.txt"
    path.write_text(f"{good}\n{bad}\n")
    sink = MemoryDeadLetters()
    assert sum(len(c) for c in CriteoReplay(path, sink)) == 1
    [letter] = sink.letters
    assert (letter.source, letter.position, letter.reason) == ("criteo", 2, "not_a_number")
    assert letter.raw == bad and letter.detail == "I1='seven' is not an integer"


def test_values_types_and_nulls(tmp_path: Path) -> None:
    fields = ["0", "-3", ""] + ["1"] * 11 + ["", "abc"] + ["05db9164"] * 24
    path = tmp_path / "day.txt"
    path.write_text("\t".join(fields) + "\r\n")
    chunk = next(iter(CriteoReplay(path, MemoryDeadLetters())))
    row = next(chunk.events())
    assert row.label == 0.0 and row.ts == 1.0 and row.event_id == "criteo:1"
    assert row.fields["I1"] == -3 and row.fields["I2"] is None and row.fields["I3"] == 1
    assert row.fields["C1"] is None and row.fields["C2"] == "abc" and row.fields["C26"] == "05db9164"
    assert chunk.table.schema.field("I1").type == pa.int64()
    assert chunk.table.schema.field("C1").type == pa.string()


def test_unlabelled_file_has_no_label_column(tmp_path: Path) -> None:
    path = tmp_path / "test.txt"
    path.write_text("\t".join(["1"] * 13 + ["a1b2c3d4"] * 26) + "\n")
    chunk = next(iter(CriteoReplay(path, MemoryDeadLetters())))
    assert "label" not in chunk.table.column_names and len(chunk) == 1


def test_seek_resumes_at_a_line_and_position_reports_the_next(tmp_path: Path) -> None:
    path = tmp_path / "day.txt"
    write_criteo_tsv(path, 1_000, seed=1)
    replay = CriteoReplay(path, MemoryDeadLetters(), batch_size=64)
    whole = _replay_all(replay)
    assert replay.position() == {"line": 1_001}
    replay.seek({"line": 401})
    rest = _replay_all(replay)
    assert rest.equals(whole.slice(400))
    replay.commit({"line": 401})
    assert replay.committed() == {"line": 401}
    with pytest.raises(ValueError, match="start at 1"):
        replay.seek({"line": 0})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="criteo: no file at"):
        list(CriteoReplay(tmp_path / "absent.txt", MemoryDeadLetters()))


@pytest.mark.integration
def test_real_criteo_head() -> None:
    sink = MemoryDeadLetters()
    table = _replay_all(CriteoReplay(need_real_data("criteo-kaggle-dac-head/criteo_train_head10000.txt"), sink))
    assert table.num_rows == 10_000 and sink.total == 0
    assert table.column("label").to_numpy().mean() == pytest.approx(0.2182, abs=1e-4)
    missing_int = np.mean([table.column(c).null_count for c in INTEGER_COLUMNS]) / 10_000
    missing_cat = np.mean([table.column(c).null_count for c in CATEGORICAL_COLUMNS]) / 10_000
    assert missing_int == pytest.approx(0.209, abs=0.001) and missing_cat == pytest.approx(0.114, abs=0.001)
    assert len(set(table.column("C1").to_pylist())) == 175


def test_lines_longer_than_the_read_block_and_no_final_newline(tmp_path: Path) -> None:
    long = "\t".join(["1"] + ["7"] * 13 + ["ab" * 200] * 26)  # ~10 kB, far over 256 bytes
    short = "\t".join(["0"] + ["1"] * 13 + ["cd"] * 26)
    path = tmp_path / "day.txt"
    path.write_text(f"{short}\n{long}\n{short}\n{long}")
    chunks = list(CriteoReplay(path, MemoryDeadLetters(), batch_size=1))  # 256-byte reads
    table = pa.concat_tables([c.table for c in chunks])
    assert np.concatenate([c.positions for c in chunks]).tolist() == [1, 2, 3, 4]
    assert table.column("C26").to_pylist() == ["cd", "ab" * 200, "cd", "ab" * 200]


@pytest.mark.parametrize("batch_size", [1, 65_536])
def test_text_that_is_not_utf8_is_dead_lettered_as_bad_encoding(tmp_path: Path, batch_size: int) -> None:
    good = ["1"] + ["5"] * 13 + ["68fd1e64"] * 26
    lines = [good, good[:14] + ["\udc80"] + good[15:], good[:20] + ["caf\u00e9"] + good[21:]]   # line 2: byte 0x80
    path = tmp_path / "day.txt"
    path.write_bytes(b"".join("\t".join(line).encode("utf-8", "surrogateescape") + b"\n" for line in lines))
    sink = MemoryDeadLetters()   # found by fuzzing: the kernel copied the bytes into an invalid Arrow string column
    table = _replay_all(CriteoReplay(path, sink, batch_size=batch_size))
    table.validate(full=True)
    assert table.column("line").to_pylist() == [1, 3] and table.column("C7").to_pylist() == ["68fd1e64", "caf\u00e9"]
    [letter] = sink.letters
    assert (letter.position, letter.reason) == (2, "bad_encoding") and letter.raw.split("\t")[14] == "\ufffd"
