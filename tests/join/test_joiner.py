"""The joiner's semantics, one case at a time: windows, watermark, duplicates, disorder, lateness,
keys, label rules, the memory cap and bad rows."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.events.event import EventChunk
from freshrec.join import JoinConfig, Joiner, examples

# (ts, kind, impression_id); user "u", item "i<id>" unless a test says otherwise
Row = tuple[float, str, str]


def chunk(rows: list[Row], start: int = 0, source: str = "log", **extra: list) -> EventChunk:
    columns = {"ts": pa.array([r[0] for r in rows], pa.float64()),
               "user_id": pa.array(["u"] * len(rows)),
               "item_id": pa.array([f"i{r[2]}" for r in rows]),
               "kind": pa.array([r[1] for r in rows]),
               "impression_id": pa.array([r[2] for r in rows], pa.string())}
    columns.update({name: pa.array(values) for name, values in extra.items()})
    return EventChunk(pa.table(columns), np.arange(start, start + len(rows), dtype=np.int64), source)


def run(joiner: Joiner, *chunks: EventChunk, flush: bool = True) -> list[tuple]:
    """(impression_id, label, label_ts, action kind) of every example, in emission order."""
    outs = [joiner.process(c) for c in chunks] + ([joiner.flush()] if flush else [])
    return [(x.event.fields["impression_id"], x.label, x.label_ts, x.action)
            for out in outs if out is not None for x in examples(out)]


def by_id(window: float = 10.0, lateness: float = 2.0, **options) -> Joiner:
    dead = MemoryDeadLetters()
    return Joiner(JoinConfig(window=window, allowed_lateness=lateness, key="impression_id", **options), dead)


def test_delayed_click_is_a_positive_emitted_when_it_arrives() -> None:
    joiner = by_id()
    assert joiner.process(chunk([(0.0, "impression", "a"), (1.0, "impression", "b")])) is None
    out = joiner.process(chunk([(7.5, "click", "a")], start=2))
    assert [(x.event.event_id, x.label, x.label_ts, x.action) for x in examples(out)] == [("log:0", 1.0, 7.5, "click")]
    assert out.kind == "example" and out.source == "join" and out.table.column("label").type == pa.float32()
    assert run(joiner) == [("b", 0.0, 11.0, None)]
    assert joiner.stats.positives == 1 and joiner.stats.negatives == 1 and joiner.pending == 0


def test_no_click_is_a_negative_once_the_watermark_passes_the_window_end() -> None:
    joiner = by_id()  # closes at ts + 10, when the largest ts seen reaches ts + 12
    assert joiner.process(chunk([(0.0, "impression", "a")])) is None
    assert joiner.process(chunk([(11.9, "impression", "b")], start=1)) is None
    assert joiner.watermark == pytest.approx(9.9) and joiner.pending == 2
    assert run(joiner, chunk([(12.0, "impression", "c")], start=2), flush=False) == [("a", 0.0, 10.0, None)]
    assert joiner.advance(21.0) is None  # b's window ends at 21.9
    assert run(joiner) == [("b", 0.0, 21.9, None), ("c", 0.0, 22.0, None)]


@pytest.mark.parametrize("lateness", [0.0, 2.0])
def test_window_includes_its_start_and_excludes_its_end(lateness: float) -> None:
    joiner = by_id(lateness=lateness)
    rows = [(0.0, "impression", "a"), (1.0, "impression", "b"), (2.0, "impression", "c"),
            (0.0, "click", "a"),  # at the start: joins
            (math.nextafter(11.0, 0.0), "click", "b"),  # just inside: joins
            (12.0, "click", "c")]  # exactly at the end: too late (it waits for another impression)
    labels = {i: (label, ts) for i, label, ts, _ in run(joiner, chunk(rows))}
    assert labels == {"a": (1.0, 0.0), "b": (1.0, math.nextafter(11.0, 0.0)), "c": (0.0, 12.0)}
    assert joiner.stats.orphan_actions == 1 and joiner.dead_letters.counts == {"orphan_action": 1}


def test_duplicate_clicks_count_once_and_duplicate_impressions_are_dropped() -> None:
    joiner = by_id()
    rows = [(0.0, "impression", "a"), (0.0, "impression", "a"),  # re-delivered
            (1.0, "click", "a"), (2.0, "click", "a"), (3.0, "purchase", "a"),
            (4.0, "impression", "b"), (5.0, "like", "b")]  # a kind the label rule does not count
    assert run(joiner, chunk(rows)) == [("a", 1.0, 1.0, "click"), ("b", 0.0, 14.0, None)]
    s = joiner.stats
    assert (s.duplicate_actions, s.duplicate_impressions, s.ignored_actions) == (2, 1, 1)
    assert joiner.dead_letters.total == 0


def test_a_click_before_its_impression_waits_for_it() -> None:
    joiner = by_id()
    out = run(joiner, chunk([(5.0, "click", "a"), (5.5, "click", "a")]),
              chunk([(4.0, "impression", "a"), (4.5, "impression", "b")], start=2), flush=False)
    assert out == [("a", 1.0, 5.0, "click")]  # the earliest action, emitted when the impression came
    assert joiner.stats.early_actions == 1 and joiner.stats.duplicate_actions == 1 and joiner.buffered == 0
    assert joiner.stats.out_of_order == 2


def test_an_impression_claims_the_first_early_action_by_time_then_arrival() -> None:
    joiner = by_id()
    rows = [(5.0, "purchase", "a"), (5.0, "click", "a"), (4.0, "impression", "a")]
    assert run(joiner, chunk(rows), flush=False) == [("a", 1.0, 5.0, "purchase")]  # ts tie: the earlier arrival
    joiner = by_id(lateness=12.0)
    rows = [(14.0, "click", "a"), (13.9, "click", "a"), (4.0, "impression", "a")]   # the window is [4, 14)
    assert run(joiner, chunk(rows), flush=False) == [("a", 1.0, 13.9, "click")]
    assert joiner.buffered == 1 and joiner.stats.early_actions == 1


def test_an_early_click_whose_impression_never_comes_is_an_orphan() -> None:
    joiner = by_id()
    joiner.process(chunk([(5.0, "click", "x")]))
    assert joiner.buffered == 1
    joiner.process(chunk([(7.0, "impression", "a")], start=1))  # watermark 5: not past the click yet
    assert joiner.buffered == 1
    joiner.process(chunk([(7.1, "impression", "b")], start=2))
    assert joiner.buffered == 0 and joiner.stats.orphan_actions == 1
    letter = joiner.dead_letters.letters[0]
    assert (letter.source, letter.position, letter.reason) == ("log", 0, "orphan_action")


@pytest.mark.parametrize("skew", [0.0, 1.0])
def test_an_action_stamped_before_its_impression_joins_within_the_skew(skew: float) -> None:
    joiner = by_id(skew=skew)
    rows = [(10.0, "impression", "a"), (9.5, "click", "a"), (20.0, "impression", "b"), (18.5, "click", "b")]
    labels = {i: (label, ts) for i, label, ts, _ in run(joiner, chunk(rows))}
    assert labels["b"] == (0.0, 30.0)  # 1.5 s before: beyond either skew
    assert labels["a"] == ((1.0, 10.0) if skew else (0.0, 20.0))  # label_ts never precedes the impression
    assert joiner.stats.skewed_actions == (1 if skew else 0)


def test_a_click_arriving_before_its_impression_may_also_be_stamped_before_it() -> None:
    joiner = by_id(skew=1.0)
    assert run(joiner, chunk([(9.5, "click", "a"), (10.0, "impression", "a")])) == [("a", 1.0, 10.0, "click")]
    assert joiner.stats.early_actions == 1 and joiner.stats.skewed_actions == 1


def test_late_events_are_counted_and_dead_lettered() -> None:
    joiner = by_id()
    rows = [(0.0, "impression", "a"), (30.0, "impression", "b"),  # watermark 28: a closes
            (5.0, "click", "a"),  # its window closed
            (20.0, "impression", "c"),  # below the watermark
            (27.0, "click", "z")]  # below the watermark, nothing open for it
    assert run(joiner, chunk(rows)) == [("a", 0.0, 10.0, None), ("b", 0.0, 40.0, None)]
    assert (joiner.stats.late_actions, joiner.stats.late_impressions) == (2, 1)
    assert [(d.position, d.reason) for d in joiner.dead_letters.letters] == [
        (2, "late_event"), (3, "late_event"), (4, "late_event")]


def test_an_action_below_the_watermark_still_joins_an_open_window() -> None:
    joiner = by_id(window=10.0, lateness=0.0)
    assert run(joiner, chunk([(0.0, "impression", "a"), (8.0, "impression", "b"), (7.0, "click", "a")])) == [
        ("a", 1.0, 7.0, "click"), ("b", 0.0, 18.0, None)]
    assert joiner.stats.late_actions == 0 and joiner.stats.out_of_order == 1


def test_join_by_user_and_item_where_events_carry_no_id() -> None:
    table = pa.table({"ts": [0.0, 1.0, 2.0, 3.0, 4.0, 15.0, 16.0],
                      "user_id": ["u1", "u2", "u1", "u1", "u2", "u2", "u2"],
                      "item_id": ["i1", "i1", "i1", "i1", "i1", "i1", "i1"],
                      "kind": ["impression", "impression", "impression", "click", "click", "impression", "click"]})
    joiner = Joiner(JoinConfig(window=10.0, allowed_lateness=2.0))
    outs = [joiner.process(EventChunk(table, np.arange(7), "log")), joiner.flush()]
    got = [(x.event.event_id, x.label, x.label_ts) for out in outs if out for x in examples(out)]
    # u1's second impression overlaps its first window (a duplicate); u2's second starts after
    assert got == [("log:0", 1.0, 3.0), ("log:1", 1.0, 4.0), ("log:5", 1.0, 16.0)]
    assert joiner.stats.duplicate_impressions == 1


def test_kind_falls_back_to_the_chunk_kind_and_ids_may_be_integers() -> None:
    def plain(ts: list[float], kind: str, start: int) -> EventChunk:
        table = pa.table({"ts": ts, "user_id": [7] * len(ts), "item_id": [3] * len(ts)})
        return EventChunk(table, np.arange(start, start + len(ts)), kind + "s", kind)

    joiner = Joiner(JoinConfig(window=10.0, allowed_lateness=0.0))
    outs = [joiner.process(plain([0.0], "impression", 0)), joiner.process(plain([4.0], "click", 0)), joiner.flush()]
    got = [(x.event.event_id, x.event.user_id, x.label, x.action) for out in outs if out for x in examples(out)]
    assert got == [("impressions:0", 7, 1.0, "click")]


def test_thresholds_decide_which_watches_and_ratings_count() -> None:
    config = JoinConfig(window=10.0, allowed_lateness=0.0, key="impression_id",
                        positive_kinds=("click", "watch", "rating"),
                        thresholds={"watch": ("watch_seconds", 30.0), "rating": ("label", 4.0)})
    rows = [(0.0, "impression", "a"), (1.0, "impression", "b"), (2.0, "impression", "c"),
            (3.0, "watch", "a"), (3.0, "watch", "b"), (4.0, "rating", "c"), (5.0, "rating", "c")]
    extra = {"watch_seconds": [None, None, None, 12.0, 45.0, None, None],
             "label": pa.array([None, None, None, None, None, 2.0, 5.0], pa.float32())}
    joiner = Joiner(config)
    assert run(joiner, chunk(rows, **extra)) == [("b", 1.0, 3.0, "watch"), ("c", 1.0, 5.0, "rating"),
                                                 ("a", 0.0, 10.0, None)]
    assert joiner.stats.ignored_actions == 2


def test_the_cap_closes_the_oldest_impressions_early() -> None:
    joiner = by_id(window=100.0, max_pending=3)
    rows = [(float(t), "impression", str(t)) for t in range(5)] + [(5.0, "click", "0"), (5.0, "click", "4")]
    out = run(joiner, chunk(rows), flush=False)
    assert out == [("0", 0.0, 3.0, None), ("1", 0.0, 4.0, None), ("4", 1.0, 5.0, "click")]
    assert joiner.memory["impressions"] == 3 and joiner.stats.evicted_impressions == 2
    assert joiner.stats.orphan_actions == 0 and joiner.buffered == 1  # the click on "0" waits, then
    run(joiner)
    assert joiner.stats.orphan_actions == 1


def test_the_cap_bounds_early_actions() -> None:
    joiner = by_id(max_pending=2)
    joiner.process(chunk([(float(t), "click", str(t)) for t in range(4)]))
    assert joiner.buffered == 2 and joiner.stats.evicted_actions == 2 == joiner.stats.orphan_actions


def test_rows_without_a_key_or_a_time_are_dead_lettered() -> None:
    table = pa.table({"ts": [0.0, float("nan"), 1.0, None], "user_id": ["u", "u", None, "u"],
                      "item_id": ["i", "i", "i", "i"], "kind": ["impression", "impression", "click", "click"]})
    joiner = Joiner(JoinConfig(), dead := MemoryDeadLetters())
    joiner.process(EventChunk(table, np.arange(4), "log"))
    s = joiner.stats
    assert (s.impressions, s.invalid_impressions, s.actions, s.invalid_actions) == (2, 1, 2, 2)
    assert [(d.position, d.reason) for d in dead.letters] == [(1, "bad_time"), (2, "missing_id"), (3, "bad_time")]


def test_a_chunk_without_the_key_column_is_refused() -> None:
    table = pa.table({"ts": [0.0], "user_id": ["u"], "item_id": ["i"]})
    with pytest.raises(ValueError, match="no column 'impression_id'"):
        Joiner(JoinConfig(key="impression_id")).process(EventChunk(table, np.arange(1), "log"))


def test_examples_name_the_source_of_their_impression() -> None:
    joiner = by_id()
    joiner.process(chunk([(0.0, "impression", "a")], start=40, source="web"))
    joiner.process(chunk([(1.0, "impression", "b")], start=40, source="app"))
    out = joiner.flush()
    assert out.positions.tolist() == [40, 40]
    assert out.table.column("impression_source").to_pylist() == ["web", "app"]
    assert [x.event.event_id for x in examples(out)] == ["web:40", "app:40"]


@pytest.mark.parametrize("bad", [{"window": 0.0}, {"allowed_lateness": -1.0}, {"max_pending": 0},
                                 {"positive_kinds": ("impression",)}, {"thresholds": {"watch": ("s", 1.0)}}])
def test_config_refuses_nonsense(bad: dict) -> None:
    with pytest.raises(ValueError):
        JoinConfig(**bad)
