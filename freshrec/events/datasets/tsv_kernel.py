"""A numba kernel that splits, checks and converts fixed-layout TSV lines in one pass.

The layout is `[label] + n_int integer columns + n_cat text columns`, the Criteo DAC shape.
Each line is checked (column count, integers, 0/1 label). Good lines are written compacted:
label, integers (with validity) and each text column into its own contiguous byte region
(Arrow offsets + data), copied while the line is still in cache. A bad line gets a reason code
and its byte span so the reader can dead-letter its text.

>>> import numpy as np
>>> out = parse_tsv(np.frombuffer(b"1\\t-3\\tab\\n0\\tx\\tcd\\n1\\t\\tef\\n", np.uint8), 1, 1, True)
>>> out.lines.tolist(), out.labels.tolist(), out.ints[:, 0].tolist(), out.int_valid[:, 0].tolist()
([0, 2], [1.0, 1.0], [-3, 0], [True, False])
>>> bytes(out.text_data[0, :out.text_offsets[0, -1]]), out.bad_line.tolist(), out.bad_code.tolist()
(b'abef', [1], [2])
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from freshrec._words import load8, store8

OK, COLUMN_COUNT, NOT_A_NUMBER, BAD_LABEL = 0, 1, 2, 3
REASONS = {COLUMN_COUNT: "column_count", NOT_A_NUMBER: "not_a_number", BAD_LABEL: "bad_label"}
_TAB, _NL, _CR, _MINUS, _PLUS, _ZERO = 9, 10, 13, 45, 43, 48
_MAX_DIGITS = 18
_ONES, _HIGHS, _LOW_NIBBLES = np.uint64(0x0101010101010101), np.uint64(0x8080808080808080), np.uint64(
    0x0F0F0F0F0F0F0F0F)
_BYTE_INDEX = np.uint64(0x0001020304050607)


class ParsedTsv(NamedTuple):
    """Good lines compacted (`lines` = their index in the block) and the bad lines apart."""

    lines: np.ndarray
    labels: np.ndarray
    ints: np.ndarray
    int_valid: np.ndarray
    text_offsets: np.ndarray
    text_data: np.ndarray
    bad_line: np.ndarray
    bad_code: np.ndarray
    bad_field: np.ndarray
    bad_start: np.ndarray
    bad_end: np.ndarray
    n_lines: int


@numba.njit
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


@numba.njit
def _scan_line(buf, pos, starts, ends):
    """Field spans of the line at `pos`; returns (field count, end of content, next line start)."""
    n, field_start, size = 0, pos, len(buf)
    i = pos
    while i < size and buf[i] != _NL:
        if buf[i] == _TAB:
            if n < len(starts):
                starts[n], ends[n] = field_start, i
            n += 1
            field_start = i + 1
        i += 1
    end = i - 1 if i > pos and buf[i - 1] == _CR else i
    if n < len(starts):
        starts[n], ends[n] = field_start, end
    return n + 1, end, i + 1


@numba.njit
def _check_line(buf, starts, ends, first_int, n_int, labelled, row, labels, ints, int_valid):
    """Parse label and integers of one split line into `row`; returns (code, bad field)."""
    if labelled:
        if ends[0] - starts[0] == 1 and (buf[starts[0]] == _ZERO or buf[starts[0]] == _ZERO + 1):
            labels[row] = buf[starts[0]] - _ZERO
        else:
            return BAD_LABEL, 0
    for j in range(n_int):
        value, status = _parse_int(buf, starts[first_int + j], ends[first_int + j])
        if status == 2:
            return NOT_A_NUMBER, first_int + j
        ints[row, j], int_valid[row, j] = value, status == 0
    return OK, 0


@numba.njit
def _text_room(starts, ends, first_text, row, offsets):
    """Bytes the line's text fields need in the fullest column."""
    need = 0
    for j in range(offsets.shape[0]):
        need = max(need, offsets[j, row] + ends[first_text + j] - starts[first_text + j])
    return need


@numba.njit
def _copy_texts(buf, starts, ends, first_text, row, offsets, data):
    """Append the line's text fields to their columns (`data` has room)."""
    for j in range(offsets.shape[0]):
        at = offsets[j, row]
        for i in range(starts[first_text + j], ends[first_text + j]):
            data[j, at] = buf[i]
            at += 1
        offsets[j, row + 1] = at


@numba.njit(nogil=True, cache=True)
def _grow(data, need):
    bigger = np.empty((data.shape[0], max(2 * data.shape[1], need)), np.uint8)
    bigger[:, :data.shape[1]] = data
    return bigger


@numba.njit
def _first_byte(mask):
    """Index of the lowest byte whose top bit is set in `mask` (8 when none)."""
    if mask == 0:
        return 8
    return np.int64(((mask & (~mask + np.uint64(1))) >> np.uint64(7)) * _BYTE_INDEX >> np.uint64(56))


@numba.njit
def _separators(word):
    """Top bit set in each byte of `word` that is a tab or newline (exact up to the first one)."""
    tabs, newlines = word ^ (_ONES * np.uint64(_TAB)), word ^ (_ONES * np.uint64(_NL))
    return ((tabs - _ONES) & ~tabs | (newlines - _ONES) & ~newlines) & _HIGHS


@numba.njit
def _digits_value(word, n):
    """The value of the first `n` (< 8) ASCII digits of `word` (SWAR)."""
    digits = (word - _ONES * np.uint64(_ZERO)) & ((np.uint64(1) << np.uint64(8 * n)) - np.uint64(1))
    v = (digits << np.uint64(56 - 8 * n)) << np.uint64(8)
    v = ((v & _LOW_NIBBLES) * np.uint64(2561)) >> np.uint64(8)
    v = ((v & np.uint64(0x00FF00FF00FF00FF)) * np.uint64(6553601)) >> np.uint64(16)
    return np.int64(((v & np.uint64(0x0000FFFF0000FFFF)) * np.uint64(42949672960001)) >> np.uint64(32))


@numba.njit
def _fast_int(buf, i, row, j, ints, int_valid):
    """Parse the integer field at `i` into (row, j); returns where it stops, or -1 (careful path)."""
    negative = buf[i] == _MINUS
    signed = negative or buf[i] == _PLUS
    first = i + 1 if signed else i
    if first + 8 > len(buf):
        return -1
    word = load8(buf, first)
    n = _first_byte(((word + _ONES * np.uint64(0x46)) | (word - _ONES * np.uint64(_ZERO))) & _HIGHS)
    if n == 8 or (signed and n == 0):
        return -1
    value = _digits_value(word, n)
    ints[row, j], int_valid[row, j] = (-value if negative else value), n > 0
    return first + n


@numba.njit
def _fast_text(buf, i, at, column, data):
    """Copy the text field at `i` to `data[column, at:]`; returns (its end, new at), end -1 when
    out of room or too near the end of `buf`."""
    base = column * data.shape[1]
    while i + 8 <= len(buf) and at + 8 <= data.shape[1]:
        word = load8(buf, i)
        n = _first_byte(_separators(word))
        store8(data, base + at, word)
        i, at = i + n, at + n
        if n < 8:
            return i, at
    return -1, at


@numba.njit
def _fast_line(buf, pos, n_int, n_text, labelled, row, labels, ints, int_valid, offsets, data):
    """Parse a well-formed line at `pos` straight into `row`; returns the index of its newline,
    or -1 when anything is off (the careful path then deals with the line)."""
    i, last = pos, n_int + n_text - 1
    if last < 0:
        return -1
    if labelled:
        if (buf[i] != _ZERO and buf[i] != _ZERO + 1) or buf[i + 1] != _TAB:
            return -1
        labels[row] = buf[i] - _ZERO
        i += 2
    for j in range(n_int):
        i = _fast_int(buf, i, row, j, ints, int_valid)
        if i < 0 or (buf[i] == _NL) != (j == last) or (buf[i] != _NL and buf[i] != _TAB):
            return -1
        i += 1
    for j in range(n_text):
        begin = i
        i, at = _fast_text(buf, i, offsets[j, row], j, data)
        if i < 0 or (buf[i] == _NL) != (n_int + j == last):
            return -1
        if n_int + j == last and i > begin and buf[i - 1] == _CR:
            at -= 1
        offsets[j, row + 1] = at
        i += 1
    return i - 1


@numba.njit(nogil=True, cache=True)
def _parse_lines(buf, n_int, n_text, labelled, out_lines, labels, ints, int_valid, offsets, data,
                 bad_line, bad_code, bad_field, bad_start, bad_end):
    first_int = 1 if labelled else 0
    n_fields = first_int + n_int + n_text
    starts = np.empty(n_fields, np.int64)
    ends = np.empty(n_fields, np.int64)
    line, row, bad, pos = 0, 0, 0, 0
    while pos < len(buf):
        stop = _fast_line(buf, pos, n_int, n_text, labelled, row, labels, ints, int_valid, offsets, data)
        if stop >= 0:
            out_lines[row] = line
            row += 1
            line += 1
            pos = stop + 1
            continue
        line_begin = pos
        count, line_stop, pos = _scan_line(buf, pos, starts, ends)
        code, field = COLUMN_COUNT, 0
        if count == n_fields:
            code, field = _check_line(buf, starts, ends, first_int, n_int, labelled, row, labels, ints,
                                      int_valid)
        if code == OK:
            need = _text_room(starts, ends, first_int + n_int, row, offsets)
            if need > data.shape[1]:
                data = _grow(data, need)
            _copy_texts(buf, starts, ends, first_int + n_int, row, offsets, data)
            out_lines[row] = line
            row += 1
        else:
            bad_line[bad], bad_code[bad], bad_field[bad] = line, code, field
            bad_start[bad], bad_end[bad] = line_begin, line_stop
            bad += 1
        line += 1
    return line, row, bad, data


def parse_tsv(buf: np.ndarray, n_int: int, n_text: int, labelled: bool) -> ParsedTsv:
    """Parse every line of `buf` (whole lines; a last line without newline counts)."""
    buf = np.ascontiguousarray(buf)
    if len(buf) and buf[-1] != _NL:
        buf = np.append(buf, np.uint8(_NL))
    cap = int(np.count_nonzero(buf == _NL)) + 1
    out_lines, labels = np.empty(cap, np.int64), np.zeros(cap, np.float32)
    ints, int_valid = np.zeros((cap, n_int), np.int64), np.zeros((cap, n_int), np.bool_)
    offsets = np.zeros((n_text, cap + 1), np.int32)
    data = np.empty((n_text, 8 * cap), np.uint8)
    bad = [np.empty(cap, t) for t in (np.int64, np.int8, np.int16, np.int64, np.int64)]
    n_lines, rows, n_bad, data = _parse_lines(buf, n_int, n_text, labelled, out_lines, labels, ints,
                                              int_valid, offsets, data, *bad)
    return ParsedTsv(out_lines[:rows], labels[:rows], ints[:rows], int_valid[:rows],
                     offsets[:, :rows + 1], data, *(b[:n_bad] for b in bad), n_lines)
