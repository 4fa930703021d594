"""Shared fixtures: `real_data` finds a file of the real data sets in $FRESHREC_DATA."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

DATA = Path(os.environ.get("FRESHREC_DATA", Path(__file__).resolve().parents[1] / "../shared/data"))


def need_real_data(relative: str) -> Path:
    """`$FRESHREC_DATA/relative`; skips when absent, but fails under CI, where the data must be."""
    path = DATA / relative
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"real data missing in CI: {path} (set FRESHREC_DATA)")
        pytest.skip(f"real data not found: {path} (set FRESHREC_DATA)")
    return path


@pytest.fixture
def real_data() -> Callable[[str], Path]:
    return need_real_data
