"""A numba kernel that splits, checks and converts fixed-layout TSV lines in one pass.

The layout is `[label] + n_int integer columns + n_cat text columns`, the Criteo DAC shape.
Each line is checked (column count, integers, 0/1 label). Good lines are written compacted:
label, integers (with validity) and each text column into its own contiguous byte region
(Arrow offsets + data). The fast path takes 64 lines at a time: separator positions from
64-byte vector compares, then labels and integers row by row, then texts column by column (one
output stream at a time) while the lines are still in cache. Any line it does not take goes
through a careful byte-by-byte path. A bad line gets a reason code and its byte span so the
reader can dead-letter its text.

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
from numba.cpython.unsafe.numbers import trailing_zeros

from freshrec._words import load8, match64, store8

OK, COLUMN_COUNT, NOT_A_NUMBER, BAD_LABEL = 0, 1, 2, 3
REASONS = {COLUMN_COUNT: "column_count", NOT_A_NUMBER: "not_a_number", BAD_LABEL: "bad_label"}
_TAB, _NL, _CR, _MINUS, _PLUS, _ZERO = 9, 10, 13, 45, 43, 48
_MAX_DIGITS = 18
_ONES, _HIGHS, _LOW_NIBBLES = np.uint64(0x0101010101010101), np.uint64(0x8080808080808080), np.uint64(
    0x0F0F0F0F0F0F0F0F)
_BATCH = 64


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
def _digits_value(word, n):
    """The value of the first `n` (< 8) ASCII digits of `word` (SWAR)."""
    digits = (word - _ONES * np.uint64(_ZERO)) & ((np.uint64(1) << np.uint64(8 * n)) - np.uint64(1))
    v = (digits << np.uint64(56 - 8 * n)) << np.uint64(8)
    v = ((v & _LOW_NIBBLES) * np.uint64(2561)) >> np.uint64(8)
    v = ((v & np.uint64(0x00FF00FF00FF00FF)) * np.uint64(6553601)) >> np.uint64(16)
    return np.int64(((v & np.uint64(0x0000FFFF0000FFFF)) * np.uint64(42949672960001)) >> np.uint64(32))


@numba.njit
def _small_int(lead, word, size):
    """(value, present, fits) of an integer field of `size` bytes starting with byte `lead`,
    `word` being its 8 bytes after any sign: it fits the fast path when empty or of 1-7 digits."""
    signed = (lead == _MINUS) | (lead == _PLUS)
    n = np.int64(trailing_zeros(((word + _ONES * np.uint64(0x46)) | (word - _ONES * np.uint64(_ZERO)))
                                & _HIGHS) >> np.uint64(3))
    value = _digits_value(word, n & 7)
    fits = (signed + n == size) & (n < 8) & ((n > 0) | (not signed))
    return (-value if lead == _MINUS else value), n > 0, fits


@numba.njit
def _split(buf, pos, seps, newlines):
    """Fill `seps[1:]` with the positions of the tabs and newlines from `pos` (`seps[0]` = pos - 1)
    and `newlines` with those of the newlines, 64 bytes at a time while `seps` has 64 spare and
    80 bytes of `buf` are left; returns how many of each."""
    seps[0], k, m, at = pos - 1, 1, 0, pos
    while k + 64 < len(seps) and at + 80 <= len(buf):
        nl = match64(buf, at, _NL)
        bits = match64(buf, at, _TAB) | nl
        while bits:
            seps[k], k, bits = at + np.int64(trailing_zeros(bits)), k + 1, bits & (bits - np.uint64(1))
        while nl:
            newlines[m], m, nl = at + np.int64(trailing_zeros(nl)), m + 1, nl & (nl - np.uint64(1))
        at += 64
    return k - 1, m


@numba.njit
def _check_rows(buf, seps, newlines, n_lines, n_int, n_text, labelled, line, row, out_lines, labels,
                ints, int_valid):
    """Parse label and integers of the first `n_lines` lines split in `seps` into rows from `row`;
    returns how many leading lines suit the fast path (newline after the right number of tabs,
    0/1 label, integers of at most 7 digits)."""
    first_int = 1 if labelled else 0
    n_fields = first_int + n_int + n_text
    for b in range(n_lines):
        i = 1 + b * n_fields
        if seps[i + n_fields - 1] != newlines[b]:
            return b
        start = seps[i - 1] + 1
        if labelled:
            if seps[i] != start + 1 or (buf[start] != _ZERO and buf[start] != _ZERO + 1):
                return b
            labels[row + b] = buf[start] - _ZERO
            start += 2
        for j in range(n_int):
            end, lead = seps[i + first_int + j], buf[start]
            signed = (lead == _MINUS) | (lead == _PLUS)
            ints[row + b, j], int_valid[row + b, j], fits = _small_int(lead, load8(buf, start + signed),
                                                                       end - start)
            if not fits:
                return b
            start = end + 1
        out_lines[row + b] = line + b
    return n_lines


@numba.njit
def _lines_with_room(seps, n_lines, n_fields, offsets, row, width):
    """How many of the first `n_lines` lines split in `seps` surely leave every text column room
    for the fast path's copies (a column grows by at most the lines' length)."""
    fullest = 0
    for j in range(offsets.shape[0]):
        fullest = max(fullest, offsets[j, row])
    while n_lines > 0 and fullest + seps[n_lines * n_fields] - seps[0] + 16 > width:
        n_lines -= 1
    return n_lines


@numba.njit
def _copy_columns(buf, seps, n_lines, first_text, n_fields, row, offsets, data):
    """Append each text column of the first `n_lines` lines split in `seps` to its row of `data`
    in 8-byte words (16 bytes at least), column by column."""
    width, last = data.shape[1], offsets.shape[0] - 1
    for j in range(offsets.shape[0]):
        at, to = offsets[j, row], j * width
        for b in range(n_lines):
            i = 1 + b * n_fields + first_text + j
            start, end = seps[i - 1] + 1, seps[i]
            store8(data, to + at, load8(buf, start))
            store8(data, to + at + 8, load8(buf, start + 8))
            for c in range(16, end - start, 8):
                store8(data, to + at + c, load8(buf, start + c))
            if j == last and end > start and buf[end - 1] == _CR:
                end -= 1
            at += end - start
            offsets[j, row + b + 1] = at


@numba.njit
def _fast_rows(buf, pos, seps, newlines, n_int, n_text, labelled, line, row, out_lines, labels, ints,
               int_valid, offsets, data):
    """Parse up to `_BATCH` well-formed lines from `pos` straight into rows from `row`; returns
    how many and where the next line starts."""
    first_text = n_int + (1 if labelled else 0)
    n_fields = first_text + n_text
    if n_fields == 0:
        return 0, pos
    n_seps, n_newlines = _split(buf, pos, seps, newlines)
    n_lines = _lines_with_room(seps, min(_BATCH, n_seps // n_fields, n_newlines), n_fields, offsets, row,
                               data.shape[1])
    n_lines = _check_rows(buf, seps, newlines, n_lines, n_int, n_text, labelled, line, row, out_lines,
                          labels, ints, int_valid)
    _copy_columns(buf, seps, n_lines, first_text, n_fields, row, offsets, data)
    return n_lines, seps[n_lines * n_fields] + 1


@numba.njit(nogil=True, cache=True)
def _parse_lines(buf, n_int, n_text, labelled, out_lines, labels, ints, int_valid, offsets, data,
                 bad_line, bad_code, bad_field, bad_start, bad_end):
    first_int = 1 if labelled else 0
    n_fields = first_int + n_int + n_text
    starts = np.empty(n_fields, np.int64)
    ends = np.empty(n_fields, np.int64)
    seps = np.empty(1 + _BATCH * n_fields + 64, np.int64)
    newlines = np.empty_like(seps)
    line, row, bad, pos = 0, 0, 0, 0
    while pos < len(buf):
        good, pos = _fast_rows(buf, pos, seps, newlines, n_int, n_text, labelled, line, row, out_lines,
                               labels, ints, int_valid, offsets, data)
        line, row = line + good, row + good
        if good == _BATCH or pos == len(buf):
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


@numba.njit(nogil=True, cache=True)
def _count_newlines(buf):
    """How many newlines `buf` holds."""
    n = 0
    for byte in buf:
        n += byte == _NL
    return n


@numba.njit(nogil=True, cache=True)
def is_ascii(buf):
    """Whether every byte of `buf` is below 0x80 (8 bytes at a time): then every line is UTF-8."""
    seen, whole = np.uint64(0), len(buf) // 8 * 8
    for i in range(0, whole, 8):
        seen |= load8(buf, i)
    for i in range(whole, len(buf)):
        seen |= np.uint64(buf[i])
    return (seen & _HIGHS) == 0


@numba.njit(nogil=True, cache=True)
def valid_utf8(buf, start, end):
    """Whether `buf[start:end]` is UTF-8 text as Arrow and Python take it (no overlong forms, no
    surrogates, nothing past U+10FFFF)."""
    i = start
    while i < end:
        c = buf[i]
        if c < 0x80:
            i += 1
            continue
        low, high = 0x80, 0xBF
        if 0xC2 <= c <= 0xDF:
            n = 1
        elif 0xE0 <= c <= 0xEF:
            n = 2
            low, high = (0xA0, 0xBF) if c == 0xE0 else (0x80, 0x9F) if c == 0xED else (0x80, 0xBF)
        elif 0xF0 <= c <= 0xF4:
            n = 3
            low, high = (0x90, 0xBF) if c == 0xF0 else (0x80, 0x8F) if c == 0xF4 else (0x80, 0xBF)
        else:
            return False
        if i + n >= end or not low <= buf[i + 1] <= high:
            return False
        for k in range(2, n + 1):
            if not 0x80 <= buf[i + k] <= 0xBF:
                return False
        i += n + 1
    return True


@numba.njit(nogil=True, cache=True)
def utf8_lines(buf, lines):
    """Whether each of the lines numbered `lines` (0-based, ascending) of `buf` is UTF-8 text."""
    ok = np.ones(len(lines), np.bool_)
    line, pos, k = 0, 0, 0
    while k < len(lines) and pos < len(buf):
        stop = pos
        while stop < len(buf) and buf[stop] != _NL:
            stop += 1
        if line == lines[k]:
            ok[k] = valid_utf8(buf, pos, stop)
            k += 1
        line, pos = line + 1, stop + 1
    return ok


def parse_tsv(buf: np.ndarray, n_int: int, n_text: int, labelled: bool) -> ParsedTsv:
    """Parse every line of `buf` (whole lines; a last line without newline counts)."""
    buf = np.ascontiguousarray(buf)
    if len(buf) and buf[-1] != _NL:
        buf = np.append(buf, np.uint8(_NL))
    cap = _count_newlines(buf) + 1
    out_lines, labels = np.empty(cap, np.int64), np.zeros(cap, np.float32)
    ints, int_valid = np.empty((cap, n_int), np.int64), np.empty((cap, n_int), np.bool_)
    offsets = np.empty((n_text, cap + 1), np.int32)
    offsets[:, 0] = 0
    data = np.empty((n_text, 8 * cap), np.uint8)
    bad = [np.empty(cap, t) for t in (np.int64, np.int8, np.int16, np.int64, np.int64)]
    n_lines, rows, n_bad, data = _parse_lines(buf, n_int, n_text, labelled, out_lines, labels, ints,
                                              int_valid, offsets, data, *bad)
    return ParsedTsv(out_lines[:rows], labels[:rows], ints[:rows], int_valid[:rows],
                     offsets[:, :rows + 1], data, *(b[:n_bad] for b in bad), n_lines)
