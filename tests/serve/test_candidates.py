"""Candidates: decayed popularity, co-occurrence, consumed items filtered, latest fields kept."""

from __future__ import annotations

import pyarrow as pa

from freshrec.serve import CandidateConfig, CandidateIndex


def _table(rows: list[tuple]) -> pa.Table:
    ts, users, items, labels = zip(*rows)
    return pa.table({"ts": list(ts), "user_id": list(users), "item_id": list(items), "label": list(labels)})


def test_popularity_decays_with_event_time() -> None:
    index = CandidateIndex(CandidateConfig(half_life=10.0))
    index.observe(_table([(0.0, f"u{n}", "old", 1.0) for n in range(4)]))      # 4 likes at t=0
    index.observe(_table([(30.0, "v1", "new", 1.0), (30.0, "v2", "new", 1.0)]))  # 2 likes at t=30
    assert index.popular(2) == ["new", "old"]       # 4 * 2^-3 = 0.5 < 2


def test_co_occurrence_ranks_by_shared_users_and_skips_consumed() -> None:
    index = CandidateIndex()
    rows = [(1.0, "a", "x", 1.0), (2.0, "a", "y", 1.0), (3.0, "b", "x", 1.0), (4.0, "b", "y", 1.0),
            (5.0, "c", "x", 1.0), (6.0, "c", "z", 1.0), (7.0, "d", "x", 1.0), (8.0, "d", "w", 0.0)]
    index.observe(_table(rows))
    assert index.candidates("d", 2) == ["y", "z"]   # y with x twice, z once; w consumed (a negative)
    assert "w" not in index.popular(10)              # negatives are not popular


def test_negatives_and_missing_ids_do_not_seed_and_memory_is_bounded() -> None:
    index = CandidateIndex(CandidateConfig(users=2, consumed=3))
    index.observe(_table([(float(t), f"u{t % 5}", f"i{t}", 1.0) for t in range(50)]
                         + [(60.0, None, "i1", 1.0)]))
    assert len(index._recent) == 2 and all(len(s) <= 3 for s in index._consumed.values())
    assert index.observed == 51


def test_latest_user_and_item_fields_are_kept() -> None:
    index = CandidateIndex(item_columns={"genres"})
    table = _table([(1.0, "u", "i", 1.0), (2.0, "u", "j", 1.0)]).append_column(
        "genres", pa.array([["a"], ["b", "c"]])).append_column("age", pa.array(["25", None]))
    index.observe(table)
    assert index.item_fields == {"i": {"genres": ["a"]}, "j": {"genres": ["b", "c"]}}
    assert index.user_fields == {"u": {"age": "25"}}
