"""`import freshrec`: the public names, loaded on first use, so the import itself needs no torch."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import freshrec

HEAVY = ("torch", "numba", "pyarrow", "numpy", "fastapi", "pydantic")


def test_import_freshrec_loads_none_of_the_heavy_libraries() -> None:
    code = f"import sys, freshrec; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(set(freshrec.__all__) - {"__version__"}))
def test_each_public_name_is_the_object_at_its_home(name: str) -> None:
    home = importlib.import_module(freshrec._EXPORTS[name])
    assert getattr(freshrec, name) is getattr(home, name)
    assert name in dir(freshrec)


def test_a_name_that_is_not_public_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'train_step'"):
        freshrec.train_step  # noqa: B018
    assert not hasattr(freshrec, "_missing")
