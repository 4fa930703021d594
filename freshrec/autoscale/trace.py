"""A recorded metric trace, replayed through the policy by `freshrec autoscale --dry-run TRACE`.

`read_trace` reads a CSV file with a header naming `t` (or `time`) and `value` (and optionally
`workers`), or JSON lines `{"t": .., "value": .., "workers": ..}` (by the suffix .csv / .jsonl / .json,
else by the first character). Times are seconds (relative or epoch) or ISO-8601 (UTC when no zone is
given), never decreasing; an empty value (null in JSON) is a missed reading. `dry_run` replays the
samples: the group starts at `start` (else the first sample's workers, else `policy.min`) and follows
each decision at once, since the point is to see what the policy would do. For a `PER_WORKER` metric
(lag) the value is the group's total.

>>> import pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "trace.csv"
>>> _ = path.write_text("t,value\\n0,12000\\n15,\\n60,30000\\n")
>>> [(s.t, s.value) for s in read_trace(path)]
[(0.0, 12000.0), (15.0, None), (60.0, 30000.0)]
>>> [(d.current, d.desired) for d in dry_run(Policy(threshold=5000), read_trace(path))]
[(1, 3), (3, 3), (3, 4)]
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from freshrec.autoscale.policy import Autoscaler, Decision, Policy

__all__ = ["Sample", "dry_run", "read_trace"]


@dataclass(frozen=True)
class Sample:
    """One reading: its time (seconds), the metric's value (None: missed) and the group's size if recorded."""

    t: float
    value: float | None
    workers: int | None = None


def read_trace(path: str | Path) -> list[Sample]:
    """The samples of a CSV or JSON-lines trace; ValueError names the file, the line and what is wrong."""
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    is_json = suffix in (".jsonl", ".json") or (suffix != ".csv" and text.lstrip()[:1] == "{")
    samples: list[Sample] = []
    for line, row in _json_rows(path, text) if is_json else _csv_rows(path, text):
        try:
            sample = Sample(_time(row.get("t", row.get("time"))), _value(row["value"]), _workers(row.get("workers")))
        except ValueError as error:
            raise ValueError(f"{path} line {line}: {error}") from None
        if samples and sample.t < samples[-1].t:
            raise ValueError(f"{path} line {line}: time {sample.t:g} is before the previous sample's "
                             f"{samples[-1].t:g} (times must not decrease)")
        samples.append(sample)
    return samples


def dry_run(policy: Policy, samples: list[Sample], start: int | None = None) -> list[Decision]:
    """The decisions the policy takes on the samples, the group following each one at once."""
    if start is None:
        start = samples[0].workers if samples and samples[0].workers is not None else policy.min
    scaler, current, decisions = Autoscaler(policy), start, []
    for sample in samples:
        decisions.append(decision := scaler.decide(sample.t, current, sample.value))
        current = decision.desired
    return decisions


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, Mapping[str, object]]]:
    reader = csv.DictReader(text.splitlines())
    columns = [name.strip() for name in reader.fieldnames or ()]
    if not {"t", "time"} & set(columns) or "value" not in columns:
        raise ValueError(f"{path} line 1: the header must name t (or time) and value, got {','.join(columns)!r}")
    reader.fieldnames = columns
    for row in reader:
        yield reader.line_num, row


def _json_rows(path: Path, text: str) -> Iterator[tuple[int, Mapping[str, object]]]:
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} line {line}: not JSON ({error.msg})") from None
        if not isinstance(row, dict) or not {"t", "time"} & row.keys() or "value" not in row:
            raise ValueError(f"{path} line {line}: expected an object with t (or time) and value "
                             f"(null for a missed reading), got {raw.strip()[:80]!r}")
        yield line, row


def _time(raw: object) -> float:
    """Seconds: a number, or an ISO-8601 time as seconds since the epoch."""
    try:
        return _number("time", raw)
    except ValueError:
        if not isinstance(raw, str):
            raise
    text = raw.strip()
    try:   # Python 3.10's fromisoformat does not read the Z suffix
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise ValueError(f"time {raw!r} is neither seconds nor an ISO-8601 time") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def _value(raw: object) -> float | None:
    return None if raw is None or (isinstance(raw, str) and not raw.strip()) else _number("value", raw)


def _workers(raw: object) -> int | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    count = _number("workers", raw)
    if count != int(count) or count < 0:
        raise ValueError(f"workers {raw!r} is not a whole number of workers")
    return int(count)


def _number(name: str, raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise ValueError(f"{name} {raw!r} is not a number")
    try:
        number = float(raw)
    except ValueError:
        raise ValueError(f"{name} {raw!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} {raw!r} is not a finite number")
    return number
