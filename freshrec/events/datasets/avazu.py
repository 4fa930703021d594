"""Avazu CTR logs (Kaggle 2014 `train.csv`, plain or gzip) as a replay of click events.

Event time is `hour` (`YYMMDDHH`, UTC) as epoch seconds, with the rows of one hour spread
evenly over it in file order (`spread_over_hours`: the file is in time order, the time within
the hour is not recorded, and a whole hour at one instant would make the stream look like one
burst to anything cut by event time); the label is `click`; `id` (an unsigned 64-bit integer)
is kept as a string column.

Ids. Avazu has no user id; `device_id` is the usual proxy, but most rows carry the
anonymous device id `a99f214a`, and for those the user is `device_ip + "-" + device_model`
(the common Avazu user proxy; the hyphen keeps it apart from the 8-hex device ids). The
item is the ad creative: `C14` (an anonymised integer id with about 2,600 values in the
full data, the usual ad id in Avazu work); the site/app columns describe the publisher,
not the ad, so they stay features. Every column except `id`, `click` and `hour` is a
categorical field (the user/item source columns included); the integer ones (`C1`,
`banner_pos`, `device_type`, `device_conn_type`, `C14`..`C21`) are validated and kept
as int64, the hashed ones as strings.

>>> import tempfile, pathlib
>>> from freshrec.events.deadletter import MemoryDeadLetters
>>> header = ",".join(AVAZU_COLUMNS)
>>> row = "1000009418151094273,0,14102100,1005,0,1fbe01fe,f3845767,28905ebd,ecad2386,"\\
...       "7801e8d9,07d7df22,a99f214a,ddd2926e,44956a24,1,2,15706,320,50,1722,0,35,-1,79"
>>> path = pathlib.Path(tempfile.mkdtemp()) / "train.csv"
>>> _ = path.write_text(header + "\\n" + row + "\\n" + row.replace(",14102100,", ",141021,") + "\\n")
>>> dead = MemoryDeadLetters()
>>> chunk = next(iter(open_avazu(path, dead)))
>>> chunk.table.column("ts").to_pylist(), chunk.table.column("user_id").to_pylist()
([1413849600.0], ['ddd2926e-44956a24'])
>>> chunk.table.column("item_id").to_pylist(), [(l.position, l.reason) for l in dead.letters]
([15706], [(3, 'bad_time')])
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
from freshrec.events.validate import RowChecks, blank_mask

__all__ = ["ANONYMOUS_DEVICE", "AVAZU_COLUMNS", "open_avazu", "spread_over_hours"]

AVAZU_COLUMNS = (
    "id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
    "app_domain", "app_category", "device_id", "device_ip", "device_model", "device_type",
    "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21")
ANONYMOUS_DEVICE = "a99f214a"
ITEM_COLUMN = "C14"
_INTEGER_FIELDS = frozenset({"C1", "banner_pos", "device_type", "device_conn_type", "C14", "C15", "C16",
                             "C17", "C18", "C19", "C20", "C21"})
_FIELD_NAMES = tuple(c for c in AVAZU_COLUMNS if c not in ("id", "click", "hour", ITEM_COLUMN))
FIELDS = (Field(USER, FieldKind.CATEGORICAL, "user"), Field(ITEM, FieldKind.CATEGORICAL, "item")) + tuple(
    Field(name, FieldKind.CATEGORICAL) for name in _FIELD_NAMES)


def open_avazu(path: Path, dead_letters: DeadLetterSink, batch_size: int = 65_536,
               name: str = "avazu") -> TableReplay:
    """Replay an Avazu `train.csv` (or `.csv.gz`); bad rows go to `dead_letters`.

    Positions are physical line numbers (the header is line 1).
    """
    text = read_text_csv(Path(path), name, dead_letters)
    require_columns(text.table.column_names, AVAZU_COLUMNS, Path(path))
    table = text.table
    checks = RowChecks(table.num_rows)
    reject_empty_lines(checks, table)
    column = lambda n: table.column(n).combine_chunks()
    checks.require(column("id"), "id")
    user = _user_ids(column("device_id"), column("device_ip"), column("device_model"), checks)
    item = checks.integers(column(ITEM_COLUMN), ITEM_COLUMN, required=True)
    features = {n: checks.integers(column(n), n) if n in _INTEGER_FIELDS else blank_to_null(column(n))
                for n in _FIELD_NAMES}
    ts = spread_over_hours(hour_seconds(column("hour"), checks))
    label = checks.binary_label(column("click"), "click")
    columns = {TS: ts, USER: user, ITEM: item, LABEL: label, "id": column("id")}
    columns.update(features)
    return valid_replay(columns, text.lines, checks, text.raw, dead_letters, name, FIELDS, batch_size)


def _user_ids(device: pa.Array, ip: pa.Array, model: pa.Array, checks: RowChecks) -> pa.Array:
    """`device_id`, or `device_ip-device_model` where the device id is the anonymous one."""
    anonymous = pc.fill_null(pc.equal(device, ANONYMOUS_DEVICE), False)
    proxy = pc.binary_join_element_wise(ip, model, "-")
    missing = blank_mask(device) | (anonymous.to_numpy(zero_copy_only=False)
                                    & (blank_mask(ip) | blank_mask(model)))
    checks.reject(missing, "missing_id",
                  lambda r: "device_id is missing" if blank_mask(device[r:r + 1])[0]
                  else "anonymous device_id and device_ip or device_model is missing")
    return pc.if_else(anonymous, proxy, device)


def spread_over_hours(seconds: pa.Array) -> pa.Array:
    """Hour starts (epoch seconds, null where invalid) -> the k-th of an hour's n rows at
    `hour + 3600 * k / n`, in the order given.

    >>> spread_over_hours(pa.array([7200.0, 7200.0, None, 7200.0, 10800.0])).to_pylist()
    [7200.0, 8400.0, None, 9600.0, 10800.0]
    """
    values = seconds.to_numpy(zero_copy_only=False).astype(np.float64)
    valid = ~np.isnan(values)
    hours = values[valid]
    _, group, counts = np.unique(hours, return_inverse=True, return_counts=True)
    order = np.argsort(group, kind="stable")
    rank = np.empty(len(hours), np.int64)
    rank[order] = np.arange(len(hours)) - np.repeat(np.cumsum(counts) - counts, counts)
    values[valid] = hours + 3600.0 * rank / counts[group]
    return pa.array(values, mask=~valid)


def hour_seconds(hour: pa.Array, checks: RowChecks) -> pa.Array:
    """`YYMMDDHH` text (UTC) -> float64 epoch seconds; anything else, or a time `time_problem`
    refuses (e.g. far in the future), -> `bad_time`.

    >>> checks = RowChecks(3)
    >>> hour_seconds(pa.array(["14102100", "14102124", "1410210"]), checks).to_pylist()
    [1413849600.0, None, None]
    >>> checks.bad.tolist()
    [False, True, True]
    """
    text = pc.utf8_trim_whitespace(hour)
    well_formed = pc.fill_null(pc.match_substring_regex(text, r"^[0-9]{8}$"), False)
    parsed = pc.strptime(pc.if_else(well_formed, text, pa.scalar(None, pa.string())),
                         format="%y%m%d%H", unit="s", error_is_null=True)
    seconds = pc.cast(pc.cast(parsed, pa.int64()), pa.float64())
    bad = seconds.is_null().to_numpy(zero_copy_only=False)
    checks.reject(bad, "bad_time", lambda r: f"hour={hour[r].as_py()!r} is not YYMMDDHH")
    checks.out_of_range(seconds, "hour")
    return seconds
