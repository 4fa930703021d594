"""ItemIndex: exact and IVF search against brute force, upserts, removal, exclusion, copy-on-write versions under
concurrent readers, save/load and input checks."""

from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest

from freshrec.serve.ann import IndexConfig, ItemIndex

IVF = IndexConfig(kind="ivf", nlist=16, nprobe=4)   # trains at 39 * 16 = 624 items


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(rng: np.random.Generator, n: int, dim: int, centres: int, spread: float = 0.1) -> np.ndarray:
    middles = _unit(rng.standard_normal((centres, dim)))
    return _unit(middles[rng.integers(centres, size=n)] + spread * rng.standard_normal((n, dim)))


def _brute(keys: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ vectors.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return keys[top], np.take_along_axis(scores, top, axis=1)


def _filled(config: IndexConfig, n: int = 2000) -> tuple[ItemIndex, np.ndarray, np.ndarray]:
    """An index of n items (16-dimensional, around 40 centres) and its keys and vectors."""
    rng = np.random.default_rng(0)
    keys = rng.choice(np.iinfo(np.int64).max, size=n, replace=False) - 2**62   # negative and large keys too
    vectors = _clustered(rng, n, 16, centres=40)
    index = ItemIndex(16, config)
    index.update(keys, vectors)
    return index, keys, vectors


def test_flat_is_exact() -> None:
    index, keys, vectors = _filled(IndexConfig())
    queries = _unit(np.random.default_rng(1).standard_normal((50, 16)))
    found, scores = index.search(queries, 10)
    expected, expected_scores = _brute(keys, vectors, queries, 10)
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    assert found.dtype == np.int64 and scores.dtype == np.float32


def test_ivf_recall_on_clustered_data() -> None:
    rng = np.random.default_rng(2)
    vectors = _clustered(rng, 20_000, 32, centres=200)
    keys = np.arange(20_000, dtype=np.int64) * 7 + 3
    index = ItemIndex(32, IndexConfig(kind="ivf", nlist=64, nprobe=16))
    index.update(keys, vectors)
    assert isinstance(index.current.index, faiss.IndexIVF) and len(index) == 20_000
    queries = _unit(vectors[rng.integers(20_000, size=200)] + 0.05 * rng.standard_normal((200, 32)))
    found, _ = index.search(queries, 10)
    expected, _ = _brute(keys, vectors, queries, 10)
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found.tolist(), expected.tolist())])
    assert recall >= 0.9


def test_ivf_serves_flat_until_trained() -> None:
    index, keys, vectors = _filled(IVF, n=600)
    assert not isinstance(index.current.index, faiss.IndexIVF)   # 600 < 624: exact
    queries = vectors[:20]
    np.testing.assert_array_equal(index.search(queries, 5)[0], _brute(keys, vectors, queries, 5)[0])
    more = _clustered(np.random.default_rng(3), 100, 16, centres=40)
    index.update(np.arange(100, dtype=np.int64), more)
    assert isinstance(index.current.index, faiss.IndexIVF) and len(index) == 700
    assert index.search(more[:1], 1)[0][0, 0] == 0


@pytest.mark.parametrize("config", [IndexConfig(), IVF], ids=["flat", "ivf"])
def test_upsert_moves_adds_and_remove_drops(config: IndexConfig) -> None:
    index, keys, vectors = _filled(config)
    moved, old = keys[7], vectors[7:8]
    assert index.search(old, 1)[0][0, 0] == moved
    index.update(np.array([moved]), -old)                          # replaced, not duplicated
    assert len(index) == len(keys)
    assert moved not in index.search(old, 10)[0][0]
    assert index.search(-old, 1)[0][0, 0] == moved
    fresh = _unit(np.random.default_rng(4).standard_normal((3, 16)))
    index.update(np.array([1, 2, 3]), fresh)                       # new keys
    assert len(index) == len(keys) + 3
    assert index.search(fresh, 1)[0][:, 0].tolist() == [1, 2, 3]
    index.remove(np.array([2, moved]))
    assert len(index) == len(keys) + 1
    assert not {2, moved} & set(index.search(np.concatenate([fresh, -old]), 10)[0].ravel().tolist())


def test_duplicate_keys_in_one_update_last_vector_wins() -> None:
    index = ItemIndex(2)
    index.update(np.array([5, 5, 6]), np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], np.float32))
    assert len(index) == 2
    assert index.search_one(np.array([0.0, 1.0]), 1) == [5]
    assert index.search_one(np.array([1.0, 0.0]), 1) == [6]


def test_exclusion_leaves_keys_out_and_still_returns_k() -> None:
    index, keys, vectors = _filled(IndexConfig())
    queries = vectors[:3]
    top, _ = index.search(queries, 10)
    exclude = [set(top[0, :4].tolist()), set(), {int(top[2, 0]), -12345}]   # an unknown key is harmless
    found, scores = index.search(queries, 10, exclude)
    assert (found != -1).all() and np.isfinite(scores).all()
    for row, skip in enumerate(exclude):
        assert not skip & set(found[row].tolist())
    wider, _ = _brute(keys, vectors, queries, 20)
    assert found[0].tolist() == [key for key in wider[0].tolist() if key not in exclude[0]][:10]
    np.testing.assert_array_equal(found[1], top[1])
    assert index.search_one(queries[0], 10, exclude[0]) == found[0].tolist()


def test_fewer_items_than_k_pads() -> None:
    index = ItemIndex(2)
    keys, scores = index.search(np.ones((1, 2)), 3)                 # empty
    assert keys.tolist() == [[-1, -1, -1]] and np.isneginf(scores).all()
    index.update(np.array([1, 2]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    keys, scores = index.search(np.array([[1.0, 0.5]]), 4, exclude=[{2}])
    assert keys.tolist() == [[1, -1, -1, -1]]
    assert scores[0, 0] == pytest.approx(1.0) and np.isneginf(scores[0, 1:]).all()
    assert index.search_one(np.array([1.0, 0.5]), 4) == [1, 2]


def test_versions_count_and_an_old_version_still_answers() -> None:
    index, keys, vectors = _filled(IndexConfig(), n=100)
    assert index.version == 1
    kept = index.current
    before = kept.search(vectors[:5], 5)
    assert index.update(keys[:5], -vectors[:5]) == 2 and index.version == 2
    assert index.remove(keys[5:10]) == 3
    assert index.remove(np.array([424242])) == 3                   # nothing removed: same version
    assert index.update(np.zeros(0, np.int64), np.zeros((0, 16))) == 3
    after = kept.search(vectors[:5], 5)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    assert kept.number == 1 and kept.count == 100 and len(index) == 95
    assert not set(index.search(vectors[:5], 5)[0][:, 0].tolist()) & set(keys[:5].tolist())


@pytest.mark.parametrize("config", [IndexConfig(), IVF], ids=["flat", "ivf"])
def test_concurrent_readers_see_whole_versions(config: IndexConfig) -> None:
    index, keys, vectors = _filled(config, n=1000)
    known, k, done, errors, searches = set(keys.tolist()), 20, threading.Event(), [], [0, 0]
    queries = vectors[:8]

    def read(reader: int) -> None:
        try:
            for step in range(100_000):
                found, scores = index.search(queries, k, exclude=[{int(keys[step % 1000])}] * len(queries))
                assert found.shape == (len(queries), k) and set(found.ravel().tolist()) <= known
                assert np.isfinite(scores).all()
                searches[reader] += 1
                if done.is_set() and step >= 100:
                    return
        except Exception as error:   # reported by the main thread
            errors.append(error)

    readers = [threading.Thread(target=read, args=(reader,)) for reader in range(2)]
    for reader in readers:
        reader.start()
    rng = np.random.default_rng(5)
    for update in range(50):
        chosen = rng.choice(len(keys), size=100, replace=False)
        assert index.update(keys[chosen], _unit(rng.standard_normal((100, 16)))) == update + 2
    done.set()
    for reader in readers:
        reader.join()
    assert not errors, errors
    assert min(searches) > 100 and len(index) == 1000


@pytest.mark.parametrize("config", [IndexConfig(), IVF], ids=["flat", "ivf"])
def test_save_and_load_round_trip(config: IndexConfig, tmp_path) -> None:
    index, keys, vectors = _filled(config)
    index.update(keys[:3], -vectors[:3])
    path = tmp_path / "items.faiss"
    index.save(path)
    loaded = ItemIndex.load(path)
    assert (loaded.version, len(loaded), loaded.dim, loaded.config) == (2, len(index), 16, config)
    for got, expected in zip(loaded.search(vectors[:20], 10), index.search(vectors[:20], 10)):
        np.testing.assert_array_equal(got, expected)
    assert loaded.update(keys[:1], vectors[:1]) == 3                # still updatable (IVF: its direct map)
    assert loaded.search(vectors[:1], 1)[0][0, 0] == keys[0]


def test_bad_inputs_raise_clear_errors() -> None:
    index, _, _ = _filled(IndexConfig(), n=10)
    with pytest.raises(ValueError, match="queries are 8 wide but the index holds 16-dimensional"):
        index.search(np.zeros((1, 8)), 3)
    with pytest.raises(ValueError, match="vectors are 15 wide but the index holds 16-dimensional"):
        index.update(np.array([1]), np.zeros((1, 15)))
    with pytest.raises(ValueError, match="vectors must be 2-D"):
        index.update(np.array([1]), np.zeros(16))
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        index.search(np.zeros((1, 16)), 0)
    with pytest.raises(ValueError, match="2 keys for 1 vectors"):
        index.update(np.array([1, 2]), np.zeros((1, 16)))
    with pytest.raises(ValueError, match="key -1 is reserved"):
        index.update(np.array([-1]), np.zeros((1, 16)))
    with pytest.raises(ValueError, match="finite"):
        index.update(np.array([1]), np.full((1, 16), np.nan))
    with pytest.raises(TypeError, match="keys must be integers"):
        index.remove(np.array([1.5]))
    with pytest.raises(ValueError, match="exclude has 1 sets for 2 queries"):
        index.search(np.zeros((2, 16)), 3, exclude=[{1}])
    with pytest.raises(ValueError, match="query must be 1-D"):
        index.search_one(np.zeros((1, 16)), 3)
    with pytest.raises(ValueError, match="kind must be one of"):
        IndexConfig(kind="hnsw")
    with pytest.raises(ValueError, match="nprobe must be >= 1, got 0"):
        IndexConfig(nprobe=0)
    with pytest.raises(ValueError, match=r"train_after \(10\) must be >= nlist \(64\)"):
        IndexConfig(kind="ivf", nlist=64, train_after=10)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        ItemIndex(0)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_replace_publishes_exactly_the_items_given(kind):
    rng = np.random.default_rng(3)
    config = IndexConfig(kind=kind, nlist=4, nprobe=4, train_after=40)
    index = ItemIndex(8, config)
    index.update(np.arange(1, 101), rng.normal(size=(100, 8)).astype(np.float32))
    moved = rng.normal(size=(50, 8)).astype(np.float32)
    version = index.replace(np.arange(51, 101), moved)
    assert version == 2 and len(index) == 50
    keys, _ = index.search(moved[:5], 1)
    assert keys[:, 0].tolist() == list(range(51, 56))            # each moved item is nearest its new vector
    assert not set(index.search(moved, 50)[0].ravel().tolist()) & set(range(1, 51))
