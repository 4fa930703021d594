from __future__ import annotations

from pathlib import Path

from freshrec.events.deadletter import (
    DeadLetter,
    JsonlDeadLetters,
    MemoryDeadLetters,
    read_dead_letters,
)


def test_jsonl_sink_appends_counts_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dead.jsonl"
    letters = [DeadLetter("csv", 3, "missing_id", "user is missing", "a,,b"),
               DeadLetter("csv", 9, "bad_time", "ts='x' is not a time", None),
               DeadLetter("csv", 12, "missing_id", "item is missing", "c,d,")]
    with JsonlDeadLetters(path) as sink:
        sink.put_many(letters)
        assert sink.total == 3 and sink.counts == {"missing_id": 2, "bad_time": 1}
    with JsonlDeadLetters(path) as sink:  # a second run appends
        sink.put(letters[0])
    assert read_dead_letters(path) == letters + letters[:1]


def test_jsonl_sink_creates_no_file_without_letters(tmp_path: Path) -> None:
    with JsonlDeadLetters(tmp_path / "dead.jsonl") as sink:
        assert sink.total == 0
    assert not (tmp_path / "dead.jsonl").exists()


def test_memory_sink_keeps_order() -> None:
    sink = MemoryDeadLetters()
    sink.put_many(DeadLetter("s", i, "bad_label", "") for i in (5, 2, 9))
    assert [d.position for d in sink.letters] == [5, 2, 9] and sink.total == 3
