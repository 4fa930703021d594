"""Tables and deltas on disk as safetensors files (no pickle): the arrays as tensors, the table's
config as JSON in the file header.

>>> import tempfile
>>> import numpy as np
>>> from freshrec.embedding.optimizers import SGD
>>> table = DynamicEmbedding(TableConfig(dim=3, optimizer=SGD(lr=0.1), seed=4))
>>> slots = table.slots(np.array([10, 20]), now=0.0)
>>> with tempfile.TemporaryDirectory() as tmp:
...     save_table(table, f"{tmp}/table.safetensors")
...     copy = load_table(f"{tmp}/table.safetensors")
>>> copy.config == table.config
True
>>> bool((copy.gather(copy.slots(np.array([10, 20]), 0.0, train=False)) ==
...       table.gather(slots)).all())
True
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from os import PathLike

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

from freshrec._tensorfile import save_arrays
from freshrec.embedding.optimizers import optimizer_from_name
from freshrec.embedding.table import DynamicEmbedding, TableConfig, TableDelta

__all__ = ["config_from_json", "config_to_json", "load_delta", "load_table", "merge_deltas", "merge_states",
           "save_delta", "save_table"]

TABLE_FORMAT = "freshrec.embedding.table/1"
DELTA_FORMAT = "freshrec.embedding.delta/1"


def config_to_json(config: TableConfig) -> str:
    """The config as JSON; the optimizer as {"name": ..., its fields}.

    >>> config_to_json(TableConfig(dim=4))[:40]
    '{"dim": 4, "dtype": "float32", "initiali'
    """
    fields = dataclasses.asdict(config)
    fields["optimizer"] = {"name": type(config.optimizer).__name__.lower(), **fields["optimizer"]}
    return json.dumps(fields)


def config_from_json(text: str) -> TableConfig:
    """The inverse of `config_to_json`."""
    fields = json.loads(text)
    options = fields.pop("optimizer")
    return TableConfig(**fields, optimizer=optimizer_from_name(options.pop("name"), **options))


def _metadata(path: str | PathLike[str], expected: str) -> dict[str, str]:
    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata() or {}
    if metadata.get("format") != expected:
        raise ValueError(f"{path} is not a {expected} file (format {metadata.get('format')!r})")
    return metadata


def save_table(table: DynamicEmbedding, path: str | PathLike[str]) -> None:
    """Write the whole table (`state_dict()`) and its config to one safetensors file."""
    metadata = {"format": TABLE_FORMAT, "config": config_to_json(table.config)}
    save_arrays(table.state_dict(), path, metadata)


def load_table(path: str | PathLike[str]) -> DynamicEmbedding:
    """A table equal to the one `save_table` wrote: same ids, rows, state, counters, version."""
    table = DynamicEmbedding(config_from_json(_metadata(path, TABLE_FORMAT)["config"]))
    table.load_state_dict(load_file(path))
    return table


def save_delta(delta: TableDelta, path: str | PathLike[str]) -> None:
    """Write a `TableDelta` to one safetensors file."""
    arrays = {"ids": delta.ids, "rows": delta.rows, "counts": delta.counts, "last_seen": delta.last_seen,
              "deleted": delta.deleted, **{f"state.{k}": v for k, v in delta.state.items()}}
    save_arrays(arrays, path, {"format": DELTA_FORMAT, "since": str(delta.since), "version": str(delta.version)})


def load_delta(path: str | PathLike[str]) -> TableDelta:
    """The `TableDelta` that `save_delta` wrote."""
    metadata = _metadata(path, DELTA_FORMAT)
    arrays = load_file(path)
    state = {k.removeprefix("state."): v for k, v in arrays.items() if k.startswith("state.")}
    return TableDelta(int(metadata["since"]), int(metadata["version"]), arrays["ids"], arrays["rows"], state,
                      arrays["counts"], arrays["last_seen"], arrays["deleted"])


_ROW_KEYS = ("ids", "rows", "counts", "last_seen")


def merge_states(shards: Sequence[dict[str, np.ndarray]],
                 keep: Sequence[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """One table's `state_dict()` from the state dicts of its shards (tables of one config that hold
    disjoint ids): the per-row arrays (ids, rows, optimizer state, sightings, last event time)
    concatenated, only the rows `keep[i]` (a boolean mask) selects from shard i where given; the
    admission sketches added (count-min sketches of one shape add up); shard 0's generator; the
    counters the highest version and the sums of rows admitted and evicted.

    >>> a, b = (DynamicEmbedding(TableConfig(dim=2)) for _ in range(2))
    >>> _ = a.slots(np.array([1, 2]), now=0.0); _ = b.slots(np.array([3]), now=0.0)
    >>> whole = DynamicEmbedding(TableConfig(dim=2))
    >>> whole.load_state_dict(merge_states([a.state_dict(), b.state_dict()]))
    >>> sorted(whole.state_dict()["ids"].tolist()), whole.live
    ([1, 2, 3], 3)
    """
    keep = keep if keep is not None else [np.ones(len(s["ids"]), bool) for s in shards]
    first = shards[0]
    out = {key: np.concatenate([s[key][k] for s, k in zip(shards, keep)]) for key in first
           if key in _ROW_KEYS or key.startswith("state.")}
    for key in first:
        if key.startswith("admission."):
            out[key] = np.sum([s[key] for s in shards], axis=0).astype(first[key].dtype) \
                if first[key].dtype.kind in "iu" else first[key]
    counters = np.stack([s["counters"] for s in shards])
    out["generator"] = first["generator"]
    out["counters"] = np.array([counters[:, 0].max(), counters[:, 1].sum(), counters[:, 2].sum()], np.int64)
    return out


def merge_deltas(shards: Sequence[TableDelta]) -> TableDelta:
    """One table's delta from its shards' deltas (disjoint ids, the same span of model versions):
    the rows written and the ids deleted concatenated; `since` and `version` the highest of the
    shards' (a table merged from shards is at its highest shard's version: `merge_states`)."""
    def joined(key: str) -> np.ndarray:
        return np.concatenate([getattr(s, key) for s in shards])
    state = {name: np.concatenate([s.state[name] for s in shards]) for name in shards[0].state}
    return TableDelta(max(s.since for s in shards), max(s.version for s in shards), joined("ids"), joined("rows"),
                      state, joined("counts"), joined("last_seen"), joined("deleted"))
