"""The group's commit records: one small JSON file per consistent cut, `STATE/cuts/cut-<step>.json`.

Every rank writes its own checkpoint of a cut (`STATE/rank-R/checkpoints`); once all have, rank 0
writes the cut's record: the step, the world size, the source position (the same on every rank),
the group's counters (events read, logged, learned) and each rank's event-log mark. A cut without a record was never
committed: a restart continues from the newest record, and the checkpoints after it are dropped.
The record also carries the marks of the logs of ranks that are gone (a group that shrank), so their
committed events stay in the log and their uncommitted ones go.

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> write_cut(root, {"step": 3, "world": 2, "position": {"row": 40}, "events": 40, "logs": {"0": 2, "1": 2},
...                   "logged": 40, "learned": 40})
>>> latest_cut(root)["position"], latest_cut(Path(tempfile.mkdtemp()))
({'row': 40}, None)
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from freshrec._durable import fsync_dir, fsync_file

__all__ = ["latest_cut", "rank_root", "write_cut"]

CUTS = "cuts"
_NAME = re.compile(r"^cut-(\d{12})\.json$")
KEEP = 3


def rank_root(state: Path, rank: int) -> Path:
    """Where rank `rank` keeps its log and checkpoints."""
    return Path(state) / f"rank-{rank}"


def _steps(state: Path) -> list[int]:
    folder = Path(state) / CUTS
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _NAME.match(p.name)))


def latest_cut(state: Path) -> dict | None:
    """The newest committed cut's record, or None."""
    steps = _steps(state)
    if not steps:
        return None
    return json.loads((Path(state) / CUTS / f"cut-{steps[-1]:012d}.json").read_text())


def write_cut(state: Path, record: dict) -> None:
    """Commit a cut: its record written atomically (a file fsynced, renamed into place, the folder
    fsynced); the records before the newest `KEEP` go."""
    folder = Path(state) / CUTS
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"cut-{record['step']:012d}.json"
    tmp = folder / f".{final.name}.{os.getpid()}"
    tmp.write_text(json.dumps(record))
    fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(folder)
    for old in _steps(state)[:-KEEP]:
        (folder / f"cut-{old:012d}.json").unlink(missing_ok=True)
