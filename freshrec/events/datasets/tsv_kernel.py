"""A numba kernel that splits, checks and converts fixed-layout TSV lines in one pass.

The layout is `[label] + n_int integer columns + n_cat text columns`, the Criteo DAC shape.
Each line is checked (column count, integers, 0/1 label); a bad line gets a reason code and
its byte span so the reader can dead-letter its text. Text columns come back as per-column
Arrow-style (offsets, data) buffers, built without a Python loop per value.

>>> import numpy as np
>>> out = parse_tsv(np.frombuffer(b"1\\t-3\\tab\\n0\\tx\\tcd\\n", np.uint8), 1, 1, True)
>>> out.labels.tolist(), out.ints[:, 0].tolist(), out.bad_code.tolist()
([1.0, 0.0], [-3, 0], [0, 2])
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

OK, COLUMN_COUNT, NOT_A_NUMBER, BAD_LABEL = 0, 1, 2, 3
REASONS = {COLUMN_COUNT: "column_count", NOT_A_NUMBER: "not_a_number", BAD_LABEL: "bad_label"}
_TAB, _NL, _CR, _MINUS, _PLUS, _ZERO = 9, 10, 13, 45, 43, 48
_MAX_DIGITS = 18


class ParsedTsv(NamedTuple):
    """Per line: label, ints (+ validity), text spans; bad_code != 0 marks a rejected line."""

    labels: np.ndarray
    ints: np.ndarray
    int_valid: np.ndarray
    cat_start: np.ndarray
    cat_end: np.ndarray
    bad_code: np.ndarray
    bad_field: np.ndarray
    line_start: np.ndarray
    line_end: np.ndarray


@numba.njit(nogil=True, cache=True)
def _parse_int(buf, start, end):
    """(value, status): status 0 ok, 1 empty, 2 not an integer."""
    if start == end:
        return 0, 1
    negative = buf[start] == _MINUS
    i = start + 1 if (negative or buf[start] == _PLUS) else start
    if i == end or end - i > _MAX_DIGITS:
        return 0, 2
    value = 0
    while i < end:
        d = buf[i] - _ZERO
        if d < 0 or d > 9:
            return 0, 2
        value = value * 10 + d
        i += 1
    return (-value if negative else value), 0


@numba.njit(nogil=True, cache=True)
def _split_fields(buf, start, end, starts, ends):
    """Field spans of one line into starts/ends; returns the field count (may exceed capacity)."""
    n, field_start = 0, start
    for i in range(start, end + 1):
        if i == end or buf[i] == _TAB:
            if n < len(starts):
                starts[n] = field_start
                ends[n] = i
            n += 1
            field_start = i + 1
    return n


@numba.njit(nogil=True, cache=True)
def _parse_lines(buf, n_int, n_cat, labelled, labels, ints, int_valid, cat_start, cat_end,
                 bad_code, bad_field, line_start, line_end):
    n_fields = n_int + n_cat + (1 if labelled else 0)
    starts = np.empty(n_fields, np.int64)
    ends = np.empty(n_fields, np.int64)
    row, pos, size = 0, 0, len(buf)
    while pos < size:
        stop = pos
        while stop < size and buf[stop] != _NL:
            stop += 1
        end = stop - 1 if stop > pos and buf[stop - 1] == _CR else stop
        line_start[row], line_end[row] = pos, end
        if _split_fields(buf, pos, end, starts, ends) != n_fields:
            bad_code[row] = COLUMN_COUNT
        else:
            f = 0
            if labelled:
                if ends[0] - starts[0] == 1 and (buf[starts[0]] == _ZERO or buf[starts[0]] == _ZERO + 1):
                    labels[row] = buf[starts[0]] - _ZERO
                else:
                    bad_code[row], bad_field[row] = BAD_LABEL, 0
                f = 1
            for j in range(n_int):
                value, status = _parse_int(buf, starts[f + j], ends[f + j])
                ints[row, j], int_valid[row, j] = value, status == 0
                if status == 2 and bad_code[row] == OK:
                    bad_code[row], bad_field[row] = NOT_A_NUMBER, f + j
            for j in range(n_cat):
                cat_start[row, j], cat_end[row, j] = starts[f + n_int + j], ends[f + n_int + j]
        row += 1
        pos = stop + 1
    return row


@numba.njit(nogil=True, cache=True)
def _gather(buf, starts, ends, kept_rows, offsets, base, data):
    for k in range(len(kept_rows)):
        r = kept_rows[k]
        for j in range(starts.shape[1]):
            at = base[j] + offsets[j, k]
            for i in range(starts[r, j], ends[r, j]):
                data[at] = buf[i]
                at += 1


def gather_texts(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                 keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copy the kept rows' text spans into per-column contiguous buffers, one pass over the rows.

    Returns `offsets` (n_cat, kept + 1) int32 relative to each column's region, `base` (n_cat + 1)
    the start of each column's region in `data`, and `data` (uint8).
    """
    kept_rows = np.flatnonzero(keep)
    widths = (ends - starts)[kept_rows].T
    offsets = np.zeros((widths.shape[0], len(kept_rows) + 1), np.int32)
    np.cumsum(widths, axis=1, out=offsets[:, 1:])
    base = np.zeros(widths.shape[0] + 1, np.int64)
    np.cumsum(offsets[:, -1], out=base[1:])
    data = np.empty(int(base[-1]), np.uint8)
    _gather(buf, starts, ends, kept_rows, offsets, base, data)
    return offsets, base, data


def parse_tsv(buf: np.ndarray, n_int: int, n_cat: int, labelled: bool) -> ParsedTsv:
    """Parse every line of `buf` (whole lines; a last line without newline counts)."""
    rows = int(np.count_nonzero(buf == _NL)) + (1 if len(buf) and buf[-1] != _NL else 0)
    out = ParsedTsv(np.zeros(rows, np.float32), np.zeros((rows, n_int), np.int64),
                    np.zeros((rows, n_int), np.bool_), np.zeros((rows, n_cat), np.int64),
                    np.zeros((rows, n_cat), np.int64), np.zeros(rows, np.int8), np.zeros(rows, np.int16),
                    np.zeros(rows, np.int64), np.zeros(rows, np.int64))
    _parse_lines(buf, n_int, n_cat, labelled, *out)
    return out
