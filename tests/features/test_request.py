"""A request's batch from its Python values equals the pipeline's batch of the same rows as an Arrow table."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from freshrec.events.event import TS, EventChunk, FieldKind
from freshrec.events.live import arrow_type
from freshrec.features import FeaturePipeline, FeatureSpec
from freshrec.features.content import ItemContent
from freshrec.features.request import RequestFeaturizer, RequestRows

SPECS = [FeatureSpec("user_id", FieldKind.CATEGORICAL), FeatureSpec("item_id", FieldKind.CATEGORICAL),
         FeatureSpec("segment", FieldKind.CATEGORICAL, missing="drop"),
         FeatureSpec("tags", FieldKind.MULTI_CATEGORICAL), FeatureSpec("genres", FieldKind.MULTI_CATEGORICAL,
                                                                        missing="drop"),
         FeatureSpec("shared_item", FieldKind.CATEGORICAL, column="item_id", table="item_id"),
         FeatureSpec("price", FieldKind.DENSE, transform="log1p", fill=-1.0), FeatureSpec("hour", FieldKind.DENSE)]


def as_chunk(rows: RequestRows) -> EventChunk:
    """The rows as the Arrow table a stream's chunk would hold."""
    kinds = {spec.source_column: spec.kind for spec in SPECS}
    columns = {TS: pa.array(np.full(rows.n, rows.ts))}
    columns.update({name: pa.array(rows.column(name), arrow_type(kind)) for name, kind in kinds.items()})
    return EventChunk(pa.table(columns), np.arange(rows.n, dtype=np.int64), "request")


def _random_rows(rng: np.random.Generator, n: int) -> RequestRows:
    def maybe(value):
        return None if rng.random() < 0.15 else value

    def ids(k):
        return [maybe(str(v)) for v in rng.integers(0, 30, k)]
    rows = RequestRows(n, shared={"user_id": maybe(str(rng.integers(0, 5))), "hour": maybe(float(rng.integers(24)))})
    rows.per_row = {"item_id": ids(n), "segment": [maybe(rng.choice(["a", "", "b"])) for _ in range(n)],
                    "tags": [maybe(ids(int(rng.integers(0, 4)))) for _ in range(n)],
                    "genres": [maybe([str(g) for g in rng.choice(["x", "", "y"], int(rng.integers(0, 3)))])
                               for _ in range(n)],
                    "price": [maybe(float(rng.normal() * 100)) for _ in range(n)]}
    return rows


@pytest.mark.parametrize("seed", range(5))
def test_request_batches_equal_the_pipelines(seed: int) -> None:
    rng = np.random.default_rng(seed)
    featurizer, pipeline = RequestFeaturizer(SPECS, cache_size=40), FeaturePipeline(SPECS)
    for n in (1, 7, 100):   # the same featurizer: its cache fills, overflows and is cleared on the way
        rows = _random_rows(rng, n)
        got, want = featurizer.build(rows), pipeline.build(as_chunk(rows))
        assert got.sparse.keys() == want.sparse.keys()
        torch.testing.assert_close(got.sparse.values(), want.sparse.values(), rtol=0, atol=0)
        torch.testing.assert_close(got.sparse.lengths(), want.sparse.lengths(), rtol=0, atol=0)
        torch.testing.assert_close(got.dense, want.dense, rtol=0, atol=0)
        torch.testing.assert_close(got.ts, want.ts)
        assert got.dense_keys == want.dense_keys and torch.isnan(got.labels).all()


def test_content_columns_are_each_rows_items_vector_in_both() -> None:
    content = ItemContent(pa.array(list(range(30)), pa.int64()),
                          np.arange(60, dtype=np.float32).reshape(30, 2))   # the stream's ids are integers
    specs = [*SPECS, *content.specs()]
    featurizer, pipeline = RequestFeaturizer(specs, content=content), FeaturePipeline(specs, content=content)
    rows = _random_rows(np.random.default_rng(7), 50)          # the request's ids are strings
    got, want = featurizer.build(rows), pipeline.build(as_chunk(rows))
    torch.testing.assert_close(got.dense, want.dense, rtol=0, atol=0)
    assert got.dense_keys == want.dense_keys == ("price", "hour", "content.0", "content.1")
    items = rows.per_row["item_id"]
    expected = [content.matrix[int(i)].tolist() if i is not None else [0.0, 0.0] for i in items]
    assert got.dense[:, 2:].tolist() == expected


def test_content_columns_need_the_content_and_close_the_dense_features() -> None:
    content = ItemContent(pa.array([1, 2]), np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="reads item content .2 columns.: give the items' content"):
        FeaturePipeline([*SPECS, *content.specs()])
    with pytest.raises(ValueError, match="must be the last dense features"):
        RequestFeaturizer([*content.specs(), *SPECS], content=content)
    with pytest.raises(ValueError, match="reads 2 content columns, the items' content has 3"):
        RequestFeaturizer([*SPECS, *content.specs()], content=ItemContent(pa.array([1]), np.ones((1, 3), np.float32)))
