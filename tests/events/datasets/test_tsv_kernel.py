"""The numba TSV kernel against a plain-Python reference on random, often malformed, lines."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from freshrec.events.datasets.tsv_kernel import (
    BAD_LABEL,
    COLUMN_COUNT,
    NOT_A_NUMBER,
    parse_tsv,
)

N_INT, N_TEXT = 2, 3
FIELD = st.one_of(st.sampled_from(["", "0", "1", "-7", "+3", "12345678", "123456789012", "9" * 19, "x",
                                   "1.5", "-", "0f3a9c2e", "abc", "a" * 17, "1\r"]),
                  st.integers(-10**12, 10**12).map(str), st.text("0123456789abcdef-", max_size=12))
LINE = st.lists(FIELD, min_size=0, max_size=8).map("\t".join)


def _reference(lines: list[str]) -> tuple[list, list]:
    """(good rows, bad rows) as a careful line-by-line parser sees them."""
    good, bad = [], []
    for index, line in enumerate(lines):
        fields = line[:-1].split("\t") if line.endswith("\r") else line.split("\t")
        if len(fields) != 1 + N_INT + N_TEXT:
            bad.append((index, COLUMN_COUNT))
            continue
        if fields[0] not in ("0", "1"):
            bad.append((index, BAD_LABEL))
            continue
        ints, code = [], None
        for text in fields[1:1 + N_INT]:
            digits = text[1:] if text[:1] in "+-" else text
            if text == "":
                ints.append(None)
            elif digits.isdigit() and digits.isascii() and len(digits) <= 18:
                ints.append(int(text))
            else:
                code = NOT_A_NUMBER
                break
        if code is not None:
            bad.append((index, code))
            continue
        good.append((index, float(fields[0]), ints, fields[1 + N_INT:]))
    return good, bad


@settings(max_examples=300, deadline=None)
@given(st.lists(LINE, min_size=1, max_size=30), st.booleans())
def test_kernel_matches_reference(lines: list[str], final_newline: bool) -> None:
    text = "\n".join(lines) + ("\n" if final_newline else "")
    out = parse_tsv(np.frombuffer(text.encode(), np.uint8), N_INT, N_TEXT, True)
    if not final_newline and lines[-1] == "":
        lines = lines[:-1]  # the join left a trailing newline (or nothing): no last line
    good, bad = _reference(lines)
    assert list(zip(out.bad_line.tolist(), out.bad_code.tolist())) == bad
    assert out.lines.tolist() == [g[0] for g in good]
    assert out.labels.tolist() == [g[1] for g in good]
    ints = [[v if ok else None for v, ok in zip(row, valid)]
            for row, valid in zip(out.ints.tolist(), out.int_valid.tolist())]
    assert ints == [g[2] for g in good]
    for j in range(N_TEXT):
        offsets = out.text_offsets[j]
        data = bytes(out.text_data[j, :offsets[-1]])
        values = [data[offsets[k]:offsets[k + 1]].decode() for k in range(len(good))]
        assert values == [g[3][j] for g in good]
