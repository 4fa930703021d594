"""ContentCache: encodes each distinct content once, ever; reads earlier runs' shards from disk; keys by
encoder name and content; ignores the temp file of an interrupted write."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pytest

from freshrec.features.content_cache import ContentCache

MOVIES = ["Toy Story (1995)", "Heat (1995)", "Jumanji (1995)"]


class TrigramEncoder:
    """A real, deterministic text encoder: character trigrams hashed into `dim` buckets, unit norm;
    counts its calls and the texts it encoded."""

    def __init__(self, name: str = "trigrams-v1", dim: int = 32) -> None:
        self.name, self.dim = name, dim
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            padded = f"  {text.lower()} "
            for i in range(len(padded) - 2):
                bucket = int.from_bytes(hashlib.blake2b(padded[i: i + 3].encode(), digest_size=4).digest(), "little")
                out[row, bucket % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _keys(n: int) -> list[str]:
    return [str(i) for i in range(n)]


def test_second_run_reads_from_disk_and_encodes_nothing(tmp_path):
    first = TrigramEncoder()
    vectors = ContentCache(tmp_path, first).embed(_keys(3), MOVIES)
    assert first.calls == [MOVIES] and vectors.shape == (3, 32) and vectors.dtype == np.float32
    second = TrigramEncoder()
    cache = ContentCache(tmp_path, second)
    np.testing.assert_array_equal(cache.embed(_keys(3), MOVIES[::-1]), vectors[::-1])
    assert second.calls == [] and (cache.hits, cache.misses) == (3, 0)
    assert cache.embed([], []).shape == (0, 32)


def test_edited_content_reencodes_only_that_item(tmp_path):
    encoder = TrigramEncoder()
    cache = ContentCache(tmp_path, encoder)
    before = cache.embed(_keys(3), MOVIES)
    edited = [MOVIES[0], "Heat (1995) - Director's Cut", MOVIES[2]]
    after = ContentCache(tmp_path, encoder).embed(_keys(3), edited)
    assert encoder.calls == [MOVIES, [edited[1]]]
    np.testing.assert_array_equal(after[[0, 2]], before[[0, 2]])
    assert not np.allclose(after[1], before[1])
    np.testing.assert_allclose(after[1], TrigramEncoder().encode([edited[1]])[0])


def test_duplicates_are_encoded_once_and_share_a_vector(tmp_path):
    encoder = TrigramEncoder()
    cache = ContentCache(tmp_path, encoder)
    vectors = cache.embed(["a", "b", "c", "d"], ["Heat", "Alien", "Heat", "Heat"])
    assert encoder.calls == [["Heat", "Alien"]] and (cache.hits, cache.misses) == (2, 2)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    np.testing.assert_array_equal(vectors[0], vectors[3])


def test_another_encoder_name_does_not_reuse_vectors(tmp_path):
    ContentCache(tmp_path, TrigramEncoder("trigrams-v1")).embed(_keys(3), MOVIES)
    other = TrigramEncoder("trigrams-v2", dim=16)
    cache = ContentCache(tmp_path, other)
    assert cache.embed(_keys(3), MOVIES).shape == (3, 16)
    assert other.calls == [MOVIES] and cache.misses == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trigrams-v1", "trigrams-v2"]


def test_leftover_temp_file_of_a_crash_is_ignored(tmp_path):
    encoder = TrigramEncoder()
    vectors = ContentCache(tmp_path, encoder).embed(_keys(2), MOVIES[:2])
    (shard,) = (tmp_path / "trigrams-v1").glob("*.safetensors")
    (shard.parent / f"{shard.name}.0badc0de.tmp").write_bytes(shard.read_bytes()[:40])  # a half-written shard
    cache = ContentCache(tmp_path, encoder)
    np.testing.assert_array_equal(cache.embed(_keys(3), MOVIES), np.vstack([vectors, encoder.encode(MOVIES[2:])]))
    assert encoder.calls[1] == [MOVIES[2]] and (cache.hits, cache.misses) == (2, 1)
    assert len(list(shard.parent.glob("*.safetensors"))) == 2


def test_images_are_keyed_by_their_pixels_and_shape(tmp_path):
    class Mean:  # colour means, a real (if crude) image encoder
        name, dim, calls = "rgb-mean", 3, 0

        def encode(self, images):
            Mean.calls += 1
            x = np.array([i.reshape(-1, 3).mean(0) + 1.0 for i in images], np.float32)
            return x / np.linalg.norm(x, axis=1, keepdims=True)

    red = np.zeros((4, 6, 3), np.uint8)
    red[..., 0] = 255
    cache = ContentCache(tmp_path, Mean())
    vectors = cache.embed_images(["r", "r2", "flat"], [red, red.copy(), red.reshape(6, 4, 3)])
    assert Mean.calls == 1 and (cache.hits, cache.misses) == (1, 2)
    np.testing.assert_array_equal(vectors[0], vectors[2])  # same colours, another shape: its own entry
    ContentCache(tmp_path, Mean()).embed_images(["r"], [red])
    assert Mean.calls == 1


def test_bad_input_names_the_item(tmp_path):
    cache = ContentCache(tmp_path, TrigramEncoder())
    with pytest.raises(TypeError, match="item 7: content must be a str, got NoneType"):
        cache.embed(["6", "7"], ["Heat", None])
    with pytest.raises(ValueError, match="2 keys but 1 contents"):
        cache.embed(["6", "7"], ["Heat"])
