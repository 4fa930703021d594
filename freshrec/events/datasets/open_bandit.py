"""Open Bandit Dataset (ZOZOTOWN) logs as a replay of impression events with clicks.

A campaign folder (`<policy>/<campaign>/`) holds the log `<campaign>.csv[.gz]` and
`item_context.csv`; the item features are joined on `item_id` (column-wise, no per-row
Python). Items missing from `item_context.csv` keep null item features.

Ids. OBD has no user id: the pseudo user id is the four hashed user features joined by
"-" (`user_feature_0-...-user_feature_3`), i.e. users with the same context are one user.
The item id is OBD's `item_id` (int64). The label is `click`; `timestamp` (ISO with zone)
is the event time. Fields: `position`, `user_feature_0..3`, `item_feature_1..3`
categorical; `item_feature_0` and the `user-item_affinity_<k>`
columns dense. The unnamed row-index column is dropped (positions are line numbers).

>>> import tempfile, pathlib
>>> from freshrec.events.deadletter import MemoryDeadLetters
>>> folder = pathlib.Path(tempfile.mkdtemp()) / "men"; folder.mkdir()
>>> _ = (folder / "item_context.csv").write_text(
...     ",item_id,item_feature_0,item_feature_1,item_feature_2,item_feature_3\\n0,0,-0.5,a,b,c\\n")
>>> _ = (folder / "men.csv").write_text(
...     ",timestamp,item_id,position,click,propensity_score,user_feature_0,user_feature_1,"
...     "user_feature_2,user_feature_3,user-item_affinity_0\\n"
...     "0,2019-11-24 00:00:34.762830+00:00,0,3,1,0.0125,u0,u1,u2,u3,0.0\\n")
>>> chunk = next(iter(open_open_bandit(folder, MemoryDeadLetters())))
>>> row = next(chunk.events())
>>> row.ts, row.user_id, row.item_id, row.label, row.fields["item_feature_1"]
(1574553634.76283, 'u0-u1-u2-u3', 0, 1.0, 'a')
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from freshrec.events.datasets.delimited import (
    blank_to_null,
    read_text_csv,
    reject_empty_lines,
    require_columns,
    valid_replay,
)
from freshrec.events.deadletter import DeadLetterSink
from freshrec.events.event import ITEM, LABEL, TS, USER, Field, FieldKind
from freshrec.events.source import TableReplay
from freshrec.events.validate import RowChecks

__all__ = ["open_open_bandit", "read_item_context"]

USER_FEATURES = tuple(f"user_feature_{k}" for k in range(4))
ITEM_CATEGORICAL = ("item_feature_1", "item_feature_2", "item_feature_3")
ITEM_DENSE = "item_feature_0"
AFFINITY_PREFIX = "user-item_affinity_"
LOG_COLUMNS = ("timestamp", "item_id", "position", "click", "propensity_score") + USER_FEATURES


def open_open_bandit(path: Path, dead_letters: DeadLetterSink, batch_size: int = 65_536,
                     name: str = "open_bandit") -> TableReplay:
    """Replay one OBD log: `path` is a campaign folder or the log file (`.csv` or `.csv.gz`).

    Positions are physical line numbers of the log (the header is line 1).
    """
    log_path, context_path = _paths(Path(path))
    context = read_item_context(context_path)
    text = read_text_csv(log_path, name, dead_letters)
    table = text.table
    require_columns(table.column_names, LOG_COLUMNS, log_path)
    affinity = tuple(c for c in table.column_names if c.startswith(AFFINITY_PREFIX))
    checks = RowChecks(table.num_rows)
    reject_empty_lines(checks, table)
    column = lambda n: table.column(n).combine_chunks()
    for feature in USER_FEATURES:
        checks.require(column(feature), feature)
    item = checks.integers(column("item_id"), "item_id", required=True)
    position = checks.integers(column("position"), "position")
    dense = {n: checks.floats(column(n), n) for n in ("propensity_score",) + affinity}
    ts = checks.times(column("timestamp"), "timestamp")
    label = checks.binary_label(column("click"), "click")
    users = [column(f) for f in USER_FEATURES]
    columns = {TS: ts, USER: pc.binary_join_element_wise(*users, "-"), ITEM: item, LABEL: label,
               "position": position}
    columns.update({f: blank_to_null(v) for f, v in zip(USER_FEATURES, users)})
    columns.update(_item_features(item, context))
    columns.update(dense)
    return valid_replay(columns, text.lines, checks, text.raw, dead_letters, name,
                        _fields(affinity), batch_size)


def _fields(affinity: tuple[str, ...]) -> tuple[Field, ...]:
    """User features describe the user, item features and `item_id` the item; the slot `position`
    and the user-item affinities are context."""
    def owner(name: str) -> str:
        return "user" if name in (USER, *USER_FEATURES) else "item" if name in (
            ITEM, *ITEM_CATEGORICAL, ITEM_DENSE) else "context"
    categorical = (USER, ITEM, "position") + USER_FEATURES + ITEM_CATEGORICAL
    dense = (ITEM_DENSE,) + affinity
    return (tuple(Field(n, FieldKind.CATEGORICAL, owner(n)) for n in categorical)
            + tuple(Field(n, FieldKind.DENSE, owner(n)) for n in dense))


def _paths(path: Path) -> tuple[Path, Path]:
    """(log file, item_context.csv) for a campaign folder or a log file."""
    if not path.exists():
        raise FileNotFoundError(f"Open Bandit Dataset path not found: {path}")
    if path.is_dir():
        names = [f"{path.name}.csv.gz", f"{path.name}.csv", "all.csv.gz", "all.csv"]
        found = [path / n for n in names if (path / n).is_file()]
        if not found:
            raise FileNotFoundError(f"no Open Bandit log in {path} (looked for {', '.join(names)})")
        path = found[0]
    context = path.parent / "item_context.csv"
    if not context.is_file():
        raise FileNotFoundError(f"Open Bandit item context not found: {context}")
    return path, context


def read_item_context(path: Path) -> pa.Table:
    """`item_context.csv`: item_id int64, item_feature_0 float64, item_feature_1..3 strings.

    A malformed context file raises ValueError (it is metadata, not part of the stream).
    """
    types = {"item_id": pa.int64(), ITEM_DENSE: pa.float64()}
    types.update({n: pa.string() for n in ITEM_CATEGORICAL})
    try:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
        names = table.column_names
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:   # (column names that are not UTF-8)
        raise ValueError(f"{path}: malformed item context: {error}") from error
    require_columns(names, tuple(types), path)
    return table.select(list(types))


def _item_features(item: pa.Array, context: pa.Table) -> dict[str, pa.Array]:
    """Item features of each row by `item_id` (null where the item is not in the context)."""
    index = pc.index_in(item, value_set=context.column("item_id").combine_chunks())
    return {n: context.column(n).combine_chunks().take(index) for n in (ITEM_DENSE,) + ITEM_CATEGORICAL}
