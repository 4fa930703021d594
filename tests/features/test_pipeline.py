"""FeaturePipeline: an EventChunk -> a Batch (ids per key, dense transforms, labels, times)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from freshrec.events.event import EventChunk, FieldKind
from freshrec.features import (
    FeaturePipeline,
    FeatureSpec,
    field_salt,
    hash_values,
    missing_id,
)

CAT, MULTI, DENSE = FieldKind.CATEGORICAL, FieldKind.MULTI_CATEGORICAL, FieldKind.DENSE

GENRES = [["drama", "comedy"], None, [], ["", "noir", None], ["drama"]]
PRICE = [9.0, None, float("nan"), -3.0, 0.0]


def _table(label: bool = True) -> pa.Table:
    columns = {
        "ts": pa.array([10.0, 11.5, 12.0, 12.0, 20.25], pa.float64()),
        "user_id": pa.array([7, None, 8, 7, -1], pa.int64()),
        "item_id": pa.array(["a", "b", "", None, "7"], pa.string()),
        "label": pa.array([1.0, 0.0, None, 1.0, 0.0], pa.float32()),
        "genres": pa.array(GENRES, pa.list_(pa.string())),
        "price": pa.array(PRICE, pa.float64()),
        "count": pa.array([1, 2, None, 4, 5], pa.int32()),
        "name": pa.array(["x", "y", "z", "w", "v"]),
    }
    if not label:
        del columns["label"]
    return pa.table(columns)


def _chunk(table: pa.Table | None = None) -> EventChunk:
    table = _table() if table is None else table
    return EventChunk(table, np.arange(table.num_rows, dtype=np.int64), "test")


SPECS = [FeatureSpec("price", DENSE, transform="log1p", fill=-1.5),
         FeatureSpec("user_id", CAT),
         FeatureSpec("genres", MULTI),
         FeatureSpec("count", DENSE),
         FeatureSpec("item_id", CAT)]


def test_keys_order_sparse_then_dense_in_spec_order():
    batch = FeaturePipeline(SPECS).build(_chunk())
    assert batch.sparse.keys() == ["user_id", "genres", "item_id"]
    assert batch.dense_keys == ("price", "count")
    assert len(batch) == 5 and batch.sparse.stride() == 5
    assert batch.dense.shape == (5, 2) and batch.dense.dtype == torch.float32
    assert batch.sparse.values().dtype == torch.int64
    assert batch.sparse.lengths().dtype == torch.int32


def test_categorical_ids_are_hashes_of_the_column_with_its_salt():
    table = _table()
    sf = FeaturePipeline(SPECS).build(_chunk(table)).sparse
    for key in ("user_id", "item_id"):
        expected = hash_values(table.column(key), field_salt(key))
        assert sf[key].values.tolist() == expected.tolist()
        assert sf[key].lengths.tolist() == [1] * 5
    # the null user and the empty / null item get their field's missing id
    assert sf["user_id"].values[1] == missing_id(field_salt("user_id"))
    assert sf["item_id"].values[2:4].tolist() == [missing_id(field_salt("item_id"))] * 2
    # int 7 and "7" agree only within one salt
    assert sf["user_id"].values[0] != sf["item_id"].values[4]


def test_multi_categorical_lengths_and_values():
    sf = FeaturePipeline(SPECS).build(_chunk()).sparse
    salt = field_salt("genres")
    jt = sf["genres"]
    assert jt.lengths.tolist() == [2, 0, 0, 3, 1]
    assert jt.offsets.tolist() == [0, 2, 2, 2, 5, 6]
    miss = missing_id(salt)
    h = {g: int(hash_values(pa.array([g]), salt)[0]) for g in ("drama", "comedy", "noir")}
    assert jt.to_list() == [[h["drama"], h["comedy"]], [], [], [miss, h["noir"], miss], [h["drama"]]]
    assert sf.length_per_key() == [5, 6, 5]


def test_missing_drop_removes_missing_ids():
    specs = [FeatureSpec("user_id", CAT, missing="drop"), FeatureSpec("genres", MULTI, missing="drop"),
             FeatureSpec("item_id", CAT, missing="drop")]
    sf = FeaturePipeline(specs).build(_chunk()).sparse
    user_salt, genre_salt, item_salt = field_salt("user_id"), field_salt("genres"), field_salt("item_id")
    assert sf["user_id"].lengths.tolist() == [1, 0, 1, 1, 1]
    assert sf["user_id"].values.tolist() == hash_values(pa.array([7, 8, 7, -1]), user_salt).tolist()
    assert sf["item_id"].lengths.tolist() == [1, 1, 0, 0, 1]
    assert sf["item_id"].values.tolist() == hash_values(pa.array(["a", "b", "7"]), item_salt).tolist()
    h = {g: int(hash_values(pa.array([g]), genre_salt)[0]) for g in ("drama", "comedy", "noir")}
    assert sf["genres"].to_list() == [[h["drama"], h["comedy"]], [], [], [h["noir"]], [h["drama"]]]
    for key, salt in (("user_id", user_salt), ("genres", genre_salt), ("item_id", item_salt)):
        assert missing_id(salt) not in sf[key].values.tolist()


def test_dense_log1p_signed_with_fill_and_identity():
    batch = FeaturePipeline(SPECS).build(_chunk())
    fill = -1.5
    raw = np.array([9.0, fill, fill, -3.0, 0.0])
    expected = np.sign(raw) * np.log1p(np.abs(raw))
    np.testing.assert_allclose(batch.dense[:, 0].numpy(), expected.astype(np.float32), rtol=1e-6)
    assert batch.dense[0, 0].item() == pytest.approx(math.log(10.0))
    assert batch.dense[3, 0].item() == pytest.approx(-math.log(4.0))
    assert batch.dense[:, 1].tolist() == [1.0, 2.0, 0.0, 4.0, 5.0]  # int column, null -> fill 0.0
    assert not torch.isnan(batch.dense).any()


def test_labels_and_times():
    batch = FeaturePipeline(SPECS).build(_chunk())
    assert batch.labels.dtype == torch.float32
    labels = batch.labels.tolist()
    assert labels[:2] == [1.0, 0.0] and math.isnan(labels[2]) and labels[3:] == [1.0, 0.0]
    assert batch.ts.dtype == torch.float64
    assert batch.ts.tolist() == [10.0, 11.5, 12.0, 12.0, 20.25]


def test_labels_nan_when_label_column_missing():
    batch = FeaturePipeline(SPECS).build(_chunk(_table(label=False)))
    assert batch.labels.shape == (5,) and batch.labels.dtype == torch.float32
    assert torch.isnan(batch.labels).all()


def test_ts_is_float64_even_from_integer_column():
    table = _table().set_column(0, "ts", pa.array([1, 2, 3, 4, 1_700_000_000_123], pa.int64()))
    ts = FeaturePipeline(SPECS).build(_chunk(table)).ts
    assert ts.dtype == torch.float64 and ts.tolist() == [1.0, 2.0, 3.0, 4.0, 1_700_000_000_123.0]


def test_shared_table_gives_equal_ids_for_equal_raw_values():
    specs = [FeatureSpec("user_id", CAT, table="entity"), FeatureSpec("item_id", CAT, table="entity")]
    sf = FeaturePipeline(specs).build(_chunk()).sparse
    entity = field_salt("entity")
    assert sf["user_id"].values.tolist() == hash_values(_table().column("user_id"), entity).tolist()
    # item "7" (row 4) and user 7 (rows 0 and 3) share the id in the shared table
    assert sf["item_id"].values[4] == sf["user_id"].values[0] == sf["user_id"].values[3]
    # missing values share the table's missing id too
    assert sf["user_id"].values[1] == sf["item_id"].values[2] == missing_id(entity)


def test_column_override_reads_another_column():
    spec = FeatureSpec("last_item", CAT, column="item_id", table="item_id")
    sf = FeaturePipeline([spec, FeatureSpec("item_id", CAT)]).build(_chunk()).sparse
    assert sf.keys() == ["last_item", "item_id"]
    assert sf["last_item"].values.tolist() == sf["item_id"].values.tolist()


def test_sliced_chunk_gives_the_rows_of_the_whole():
    pipeline = FeaturePipeline(SPECS)
    chunk = _chunk()
    whole = pipeline.build(chunk)
    part = pipeline.build(chunk.slice(1, 4))
    assert len(part) == 3
    for key in part.sparse.keys():
        assert part.sparse[key].to_list() == whole.sparse[key].to_list()[1:4]
    np.testing.assert_array_equal(part.dense.numpy(), whole.dense[1:4].numpy())
    np.testing.assert_array_equal(part.ts.numpy(), whole.ts[1:4].numpy())


def test_large_list_and_chunked_columns():
    table = _table()
    large = table.set_column(4, "genres", pa.chunked_array([pa.array(GENRES[:2], pa.large_list(pa.string())),
                                                            pa.array(GENRES[2:], pa.large_list(pa.string()))]))
    spec = [FeatureSpec("genres", MULTI)]
    a = FeaturePipeline(spec).build(_chunk(table)).sparse["genres"]
    b = FeaturePipeline(spec).build(_chunk(large)).sparse["genres"]
    assert a.to_list() == b.to_list() and b.lengths.tolist() == [2, 0, 0, 3, 1]


def test_integer_list_multi_column_hashes_like_text():
    table = pa.table({"ts": pa.array([1.0, 2.0]), "tags": pa.array([[1, 22], [None, 3]], pa.list_(pa.int64()))})
    jt = FeaturePipeline([FeatureSpec("tags", MULTI)]).build(_chunk(table)).sparse["tags"]
    salt = field_salt("tags")
    assert jt.values.tolist() == hash_values(pa.array(["1", "22", None, "3"]), salt).tolist()


def test_only_dense_or_only_sparse():
    dense_only = FeaturePipeline([FeatureSpec("price", DENSE)]).build(_chunk())
    assert dense_only.sparse.keys() == [] and dense_only.sparse.values().numel() == 0
    assert dense_only.dense.shape == (5, 1)
    assert dense_only.dense[:, 0].tolist() == [9.0, 0.0, 0.0, -3.0, 0.0]
    sparse_only = FeaturePipeline([FeatureSpec("user_id", CAT)]).build(_chunk())
    assert sparse_only.dense.shape == (5, 0) and sparse_only.dense_keys == ()


def test_empty_chunk():
    batch = FeaturePipeline(SPECS).build(_chunk().slice(0, 0))
    assert len(batch) == 0 and batch.sparse.stride() == 0 and batch.dense.shape == (0, 2)


def test_non_list_multi_column_raises_type_error():
    with pytest.raises(TypeError, match="item_id"):
        FeaturePipeline([FeatureSpec("item_id", MULTI)]).build(_chunk())


def test_non_numeric_dense_column_raises_type_error():
    with pytest.raises(TypeError, match="name"):
        FeaturePipeline([FeatureSpec("name", DENSE)]).build(_chunk())


def test_float_id_column_raises_type_error():
    with pytest.raises(TypeError):
        FeaturePipeline([FeatureSpec("price", CAT)]).build(_chunk())


def test_missing_column_raises():
    with pytest.raises(KeyError):
        FeaturePipeline([FeatureSpec("nope", CAT)]).build(_chunk())


def test_target_column_becomes_batch_targets_with_nulls_as_nan():
    batch = FeaturePipeline(SPECS, target="count").build(_chunk())
    assert batch.targets.dtype == torch.float32
    assert torch.allclose(batch.targets, torch.tensor([1.0, 2.0, float("nan"), 4.0, 5.0]), equal_nan=True)
    assert FeaturePipeline(SPECS).build(_chunk()).targets is None


def test_a_missing_or_non_numeric_target_column_is_refused():
    with pytest.raises(ValueError, match="target 'rating' is not a column of the stream"):
        FeaturePipeline(SPECS, target="rating").build(_chunk())
    with pytest.raises(TypeError, match="target 'name' must be a numeric column"):
        FeaturePipeline(SPECS, target="name").build(_chunk())
