"""fsync helpers shared by the version directories (`snapshot/`) and the event log (`log/`); a leaf
module that imports nothing of ours.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> (folder / "a").write_text("x")
1
>>> fsync_file(folder / "a"); fsync_dir(folder)
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "fsync_file"]


def fsync_file(path: Path) -> None:
    """Make a file's bytes durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (new, renamed or deleted files) durable."""
    fsync_file(path)
