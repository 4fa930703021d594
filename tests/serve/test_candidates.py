"""Candidates: decayed popularity, co-occurrence, consumed items filtered, latest fields kept."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from reference_candidates import ReferenceIndex

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
    assert len(index._users) == 2 and all(len(s) <= 3 for s in index._consumed.values())
    assert index.observed == 51


def test_users_who_never_liked_anything_are_forgotten_too() -> None:
    """An ads stream: most users only ever see impressions (label 0). They count against `users` like
    any other, with their consumed items and fields (they were kept for ever)."""
    index = CandidateIndex(CandidateConfig(users=10))
    n = 1000
    index.observe(pa.table({"ts": np.arange(n, dtype=float), "user_id": [f"u{k}" for k in range(n)],
                            "item_id": ["ad"] * n, "label": [0.0] * n, "age": ["30"] * n}))
    assert len(index._users) == len(index._consumed) == len(index.user_fields) == 10
    assert index.consumed(f"u{n - 1}") == ["ad"] and index.consumed("u0") == []   # the least recent forgotten
    index.observe(_table([(2000.0, "u999", "x", 1.0), (2001.0, "fan", "x", 1.0), (2002.0, "fan", "y", 1.0)]))
    assert index.recent("fan") == ["x", "y"] and index.recent("u999") == ["x"]
    assert index.candidates("u999", 1) == ["y"]   # co-occurring with x


def test_latest_user_and_item_fields_are_kept() -> None:
    index = CandidateIndex(item_columns={"genres"})
    table = _table([(1.0, "u", "i", 1.0), (2.0, "u", "j", 1.0)]).append_column(
        "genres", pa.array([["a"], ["b", "c"]])).append_column("age", pa.array(["25", None]))
    index.observe(table)
    assert index.item_fields == {"i": {"genres": ["a"]}, "j": {"genres": ["b", "c"]}}
    assert index.user_fields == {"u": {"age": "25"}}


def test_the_arrays_agree_with_the_plain_python_reference() -> None:
    """A stream that trims co-occurrence rows, forgets users, fills consumed sets, repeats items
    and has negatives, missing labels and missing ids, in deltas of uneven size."""
    rng = np.random.default_rng(7)
    config = CandidateConfig(half_life=50.0, history=4, neighbours=3, consumed=10, users=30)
    index, reference = CandidateIndex(config, ["genre"]), ReferenceIndex(config, ["genre"])
    t = 0.0
    for size in (1, 7, 300, 64, 1000, 5):
        t += rng.exponential(20.0)
        users = [None if rng.random() < 0.02 else f"u{rng.integers(0, 45)}" for _ in range(size)]
        items = [f"i{i}" for i in rng.zipf(1.5, size) % 60]
        labels = [None if rng.random() < 0.2 else float(rng.random() < 0.6) for _ in range(size)]
        genres = [None if rng.random() < 0.3 else f"g{rng.integers(0, 5)}" for _ in range(size)]
        table = pa.table({"ts": np.sort(t + rng.random(size) * 30), "user_id": users, "item_id": items,
                          "label": pa.array(labels, pa.float64()), "genre": genres,
                          "age": [str(rng.integers(18, 70)) for _ in range(size)]})
        index.observe(table)
        reference.observe(table)
        assert index.popular(25) == reference.popular(25)
    assert len(index._users) == len(reference._recent) == 30
    for user in [f"u{k}" for k in range(45)] + ["nobody"]:
        assert index.recent(user) == reference.recent(user), user
        assert index.candidates(user, 12) == reference.candidates(user, 12), user
    assert index.item_fields == reference.item_fields and index.user_fields == reference.user_fields
    assert index.observed == reference.observed


def test_integer_ids_are_known_by_their_live_form() -> None:
    index = CandidateIndex(item_columns=["price"])
    index.observe(pa.table({"ts": [1.0, 2.0, 3.0], "user_id": [7, 7, 8], "item_id": [10, 11, 10],
                            "label": [1.0, 1.0, 1.0], "price": [2.5, 3.0, None]}))
    assert index.recent("7") == ["10", "11"] and index.candidates("8", 1) == ["11"]
    assert index.item_fields == {"10": {"price": 2.5}, "11": {"price": 3.0}}


def test_a_user_booked_before_the_arrays_grow_has_no_history_yet() -> None:
    """Requests read while the sync thread observes: `_book` gives a new user a code before `_grow`
    makes room for it; a request in between sees no history (not an IndexError, a 500)."""
    index = CandidateIndex()
    index.observe(pa.table({"ts": [1.0, 2.0], "user_id": ["u1", "u2"], "item_id": ["a", "b"]}))
    index._users["late"] = len(index._history_len) + 10     # booked, not grown yet
    assert index.recent("late") == []
    assert sorted(index.candidates("late", 2)) == ["a", "b"]   # the popular ones
    index._history[index._users["u1"], 0] = len(index._nb_len) + 10   # a seed whose co-occurrence row is not grown yet
    assert index.candidates("u1", 2) == ["b"]
