"""Any interaction log in CSV or Parquet, mapped onto events by a `ColumnMapping`.

CSV files are read as text by `delimited.read_text_csv` (bad column counts dead-lettered
with their line), then parsed and validated column-wise by `RowChecks`.

>>> import tempfile, pathlib
>>> from freshrec.events.deadletter import MemoryDeadLetters
>>> path = pathlib.Path(tempfile.mkdtemp()) / "ratings.csv"
>>> _ = path.write_text("userId,movieId,rating,timestamp,genres\\n"
...                     "1,31,2.5,1260759144,Drama\\n"
...                     "1,1029,x,1260759179,Animation|Children\\n"
...                     "2,10,4.0,2009-12-14T02:52:24Z,Action|Adventure\\n")
>>> mapping = ColumnMapping(user="userId", item="movieId", time="timestamp",
...                         label="rating>=4", multi=("genres",))
>>> dead = MemoryDeadLetters()
>>> replay = open_table_log(path, mapping, dead)
>>> chunk = next(iter(replay))
>>> chunk.table.column("label").to_pylist(), chunk.positions.tolist()
([0.0, 1.0], [2, 4])
>>> chunk.table.column("genres").to_pylist()
[['Drama'], ['Action', 'Adventure']]
>>> [(l.position, l.reason) for l in dead.letters]
[(3, 'not_a_number')]
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from freshrec.config.columns import LabelRule, parse_label
from freshrec.events.datasets.delimited import (
    blank_to_null,
    existing_file,
    read_text_csv,
    reject_empty_lines,
    require_columns,
    valid_replay,
)
from freshrec.events.deadletter import DeadLetterSink
from freshrec.events.event import (
    ITEM,
    LABEL,
    STANDARD_COLUMNS,
    TS,
    USER,
    Field,
    FieldKind,
)
from freshrec.events.source import TableReplay
from freshrec.events.validate import RowChecks

__all__ = ["ColumnMapping", "LabelRule", "open_table_log", "parse_label"]

# --------------------------------------------------------------------------- column mapping

_OPS: dict[str, Callable] = {">=": pc.greater_equal, ">": pc.greater, "<=": pc.less_equal,
                             "<": pc.less, "==": pc.equal, "!=": pc.not_equal}


@dataclass(frozen=True)
class ColumnMapping:
    """Which columns of an interaction log are the user, item, time, label and features.

    `label` is a 0/1 column, a threshold expression (`rating>=4`, `watch_time>30`), or
    None: every row is a positive (implicit feedback, label 1.0). `multi` columns hold
    several categories split by `multi_separator`. `delimiter` None = detect from the header.
    `target`: a numeric column kept beside each event, not as a feature (e.g. the rating a label
    rule thresholds, for `FeaturePipeline(target=...)`).

    >>> ColumnMapping("u", "i", "t", label="rating>3").label_rule().threshold
    3.0
    >>> ColumnMapping("u", "i", "t", categorical=("g",), dense=("g",))
    Traceback (most recent call last):
    ...
    ValueError: column 'g' is mapped to more than one feature kind
    """

    user: str
    item: str
    time: str
    label: str | None = None
    categorical: tuple[str, ...] = ()
    dense: tuple[str, ...] = ()
    multi: tuple[str, ...] = ()
    multi_separator: str = "|"
    delimiter: str | None = None
    target: str | None = None

    def __post_init__(self) -> None:
        for kind in ("categorical", "dense", "multi"):
            value = getattr(self, kind)
            object.__setattr__(self, kind, (value,) if isinstance(value, str) else tuple(value))
        for role in ("user", "item", "time"):
            if not isinstance(getattr(self, role), str) or not getattr(self, role):
                raise ValueError(f"{role} must name a column, got {getattr(self, role)!r}")
        features = self.categorical + self.dense + self.multi
        for name in features:
            if features.count(name) > 1:
                raise ValueError(f"column {name!r} is mapped to more than one feature kind")
            if name in STANDARD_COLUMNS:
                raise ValueError(f"feature column {name!r} clashes with a standard column {STANDARD_COLUMNS}")
        if self.label is not None:
            parse_label(self.label)
        if not self.multi_separator:
            raise ValueError("multi_separator must not be empty")

    def label_rule(self) -> LabelRule | None:
        """The parsed `label`, or None when every row is a positive."""
        return None if self.label is None else parse_label(self.label)

    def columns(self) -> list[str]:
        """Every source column the mapping reads, without repeats."""
        rule = self.label_rule()
        names = [self.user, self.item, self.time, *([rule.column] if rule else []), *filter(None, [self.target])]
        return list(dict.fromkeys(names + list(self.categorical + self.dense + self.multi)))

    def fields(self) -> tuple[Field, ...]:
        """The feature columns with their kinds."""
        return ((Field(USER, FieldKind.CATEGORICAL, "user"), Field(ITEM, FieldKind.CATEGORICAL, "item"))
                + tuple(Field(n, FieldKind.CATEGORICAL) for n in self.categorical)
                + tuple(Field(n, FieldKind.MULTI_CATEGORICAL) for n in self.multi)
                + tuple(Field(n, FieldKind.DENSE) for n in self.dense))


# --------------------------------------------------------------------------- the reader


def open_table_log(path: Path, mapping: ColumnMapping, dead_letters: DeadLetterSink,
                   batch_size: int = 65_536, fmt: str = "csv", name: str | None = None,
                   column_names: tuple[str, ...] | None = None) -> TableReplay:
    """Replay an interaction log (CSV, possibly compressed, or Parquet) as events.

    Positions are 1-based physical line numbers for CSV (the header is line 1) and
    row index + 1 for Parquet. `column_names` is for a headerless CSV. Bad rows go to
    `dead_letters`; a mapping that names a missing column raises ValueError.
    """
    path, name = Path(path), name or Path(path).name
    if fmt == "csv":
        text = read_text_csv(path, name, dead_letters, mapping.delimiter, column_names)
        require_columns(text.table.column_names, mapping.columns(), path)
        table, positions, raw = text.table, text.lines, text.raw
    elif fmt == "parquet":
        table = _read_parquet(existing_file(path), mapping)
        positions = np.arange(1, table.num_rows + 1, dtype=np.int64)
        raw = lambda r: _row_text(table, r)
    else:
        raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")
    checks = RowChecks(table.num_rows)
    if fmt == "csv":
        reject_empty_lines(checks, table)
    columns = _mapped_columns(table, mapping, checks)
    return valid_replay(columns, positions, checks, raw, dead_letters, name, mapping.fields(), batch_size)


def _read_parquet(path: Path, mapping: ColumnMapping) -> pa.Table:
    """The mapped columns of a Parquet file; ids must be integers or strings. A file that is not
    Parquet, or is cut short, is a ValueError naming it."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as error:
        raise ValueError(f"{path}: not a readable Parquet file: {error}") from None
    require_columns(schema.names, mapping.columns(), path)
    try:
        table = pq.read_table(path, columns=mapping.columns())
    except (pa.ArrowException, OSError) as error:
        raise ValueError(f"{path}: not a readable Parquet file: {error}") from None
    for role in ("user", "item"):
        column = getattr(mapping, role)
        kind = table.schema.field(column).type
        kind = kind.value_type if pa.types.is_dictionary(kind) else kind
        if not (pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise ValueError(f"{path}: {role} column {column!r} has type {kind}; ids must be integers "
                             "or strings (never floats: large ids lose digits in a float)")
    return table


def _row_text(table: pa.Table, row: int) -> str:
    """A Parquet row as JSON text; a time past the range of Python's datetime as Arrow writes it."""
    values = table.slice(row, 1)
    try:
        return json.dumps(values.to_pylist()[0], default=str)
    except (OverflowError, ValueError):
        return json.dumps({name: (pc.cast(column, pa.string()) if pa.types.is_temporal(column.type) else column)
                           .to_pylist()[0] for name, column in zip(values.column_names, values.columns)}, default=str)


def _array(table: pa.Table, name: str) -> pa.Array:
    """One column as a contiguous array, dictionaries decoded and float NaN as null."""
    values = table.column(name).combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if pa.types.is_floating(values.type):
        values = pc.if_else(pc.is_nan(values), pa.scalar(None, values.type), values)
    if pa.types.is_date(values.type):
        values = pc.cast(values, pa.timestamp("s"))
    return values


def _mapped_columns(table: pa.Table, mapping: ColumnMapping, checks: RowChecks) -> dict[str, pa.Array]:
    """Parse and validate the mapped columns: ids, numbers, time, label, then features."""
    user, item = _array(table, mapping.user), _array(table, mapping.item)
    checks.require(user, mapping.user)
    checks.require(item, mapping.item)
    dense = {n: checks.floats(_array(table, n), n) for n in mapping.dense}
    rule = mapping.label_rule()
    source = _array(table, rule.column) if rule and rule.op else None
    numbers = checks.floats(source, rule.column) if source is not None else None
    ts = checks.times(_array(table, mapping.time), mapping.time)
    label = _label(table, rule, numbers, checks)
    columns = {TS: ts, USER: user, ITEM: item, LABEL: label}
    columns.update({n: blank_to_null(_array(table, n)) for n in mapping.categorical})
    columns.update({n: _multi(_array(table, n), mapping.multi_separator) for n in mapping.multi})
    columns.update({n: pc.cast(v, pa.float64()) for n, v in dense.items()})
    if mapping.target is not None and mapping.target not in columns:   # kept beside the features
        same = numbers is not None and rule.column == mapping.target
        columns[mapping.target] = numbers if same else checks.floats(_array(table, mapping.target), mapping.target)
    return columns


def _label(table: pa.Table, rule: LabelRule | None, numbers: pa.Array | None,
           checks: RowChecks) -> pa.Array:
    """The float32 0/1 label from a 0/1 column, a threshold on parsed numbers, or all ones."""
    if rule is None:
        return pa.array(np.ones(table.num_rows, dtype=np.float32))
    if rule.op is None:
        return checks.binary_label(_array(table, rule.column), rule.column)
    missing = numbers.is_null().to_numpy(zero_copy_only=False)
    checks.reject(missing, "bad_label", lambda r: f"{rule.column} is missing, no label")
    result = _OPS[rule.op](pc.cast(numbers, pa.float64()), rule.threshold)
    return pc.cast(pc.fill_null(result, False), pa.float32())


def _multi(values: pa.Array, separator: str) -> pa.Array:
    """Split text into a list of categories; an empty value is null; lists stay as they are."""
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        return values
    return pc.split_pattern(blank_to_null(pc.cast(values, pa.string())), separator)
