"""Data-set readers by format name, and discovery of the data sets under a folder.

>>> sorted(FORMATS)
['avazu', 'criteo', 'csv', 'movielens-100k', 'open-bandit', 'parquet', 'simulator']
>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> (root / "ml").mkdir(); _ = [(root / "ml" / f).write_text("") for f in ("u.data", "u.item", "u.user")]
>>> [(d.format, d.path.name) for d in discover(root)]
[('movielens-100k', 'ml')]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from freshrec.config.sections import FORMATS
from freshrec.events.datasets.avazu import AVAZU_COLUMNS, open_avazu
from freshrec.events.datasets.criteo import CriteoReplay
from freshrec.events.datasets.delimited import MappingError
from freshrec.events.datasets.movielens import FILES as MOVIELENS_FILES
from freshrec.events.datasets.movielens import open_movielens
from freshrec.events.datasets.open_bandit import open_open_bandit
from freshrec.events.datasets.tabular import ColumnMapping, open_table_log
from freshrec.events.deadletter import DeadLetterSink
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.events.source import Source

__all__ = ["FORMATS", "ColumnMapping", "FoundDataset", "MappingError", "UnknownFormat", "discover", "open_source"]


class UnknownFormat(ValueError):
    """A format name that no reader knows."""


def open_source(fmt: str, path: Path | None, dead_letters: DeadLetterSink, batch_size: int = 65_536,
                mapping: ColumnMapping | None = None, simulator: SimulatorConfig | None = None) -> Source:
    """The reader for `fmt` over `path` (csv/parquet need a `mapping`; the simulator needs no path)."""
    if fmt not in FORMATS:
        raise UnknownFormat(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fmt == "simulator":
        return Simulator(simulator or SimulatorConfig(batch_size=batch_size))
    if path is None:
        raise ValueError(f"--data is required for format {fmt!r}")
    if not Path(path).exists():
        raise FileNotFoundError(f"{fmt}: no file or folder at {path}")
    if fmt in ("csv", "parquet"):
        if mapping is None:
            raise MappingError(f"format {fmt!r} needs a column mapping (--user, --item, --time)")
        return open_table_log(path, mapping, dead_letters, batch_size, fmt=fmt)
    openers = {"criteo": CriteoReplay, "avazu": open_avazu, "movielens-100k": open_movielens,
               "open-bandit": open_open_bandit}
    return openers[fmt](path, dead_letters, batch_size=batch_size)


@dataclass(frozen=True)
class FoundDataset:
    """A data set found on disk: its format, where it is, and a one-line description."""

    format: str
    path: Path
    description: str


def _first_line(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.readline(1 << 16)


def _identify(path: Path) -> FoundDataset | None:
    if path.is_dir():
        if all((path / name).is_file() for name in MOVIELENS_FILES):
            return FoundDataset("movielens-100k", path, "MovieLens-100k ratings + genres + users")
        if (path / "item_context.csv").is_file():
            return FoundDataset("open-bandit", path, "Open Bandit Dataset campaign log + item context")
        return None
    line = _first_line(path)
    if path.suffix == ".txt" and line.count(b"\t") in (38, 39):
        labelled = "labelled" if line.count(b"\t") == 39 else "unlabelled"
        return FoundDataset("criteo", path, f"Criteo DAC TSV ({labelled})")
    if path.suffix == ".csv" and line.decode("utf8", "replace").strip().split(",")[:3] == list(AVAZU_COLUMNS[:3]):
        return FoundDataset("avazu", path, "Avazu CTR CSV")
    if path.suffix in (".csv", ".tsv"):
        return FoundDataset("csv", path, "interaction log; needs --user/--item/--time")
    if path.suffix == ".parquet":
        return FoundDataset("parquet", path, "interaction log; needs --user/--item/--time")
    return None


def discover(root: Path, depth: int = 3) -> list[FoundDataset]:
    """Data sets under `root`, recognised by their files (folders first, then files), sorted by path."""
    found: list[FoundDataset] = []
    if not root.is_dir():
        return found
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        hit = _identify(entry)
        if hit is not None:
            found.append(hit)
        elif entry.is_dir() and depth > 1:
            found.extend(discover(entry, depth - 1))
    return found
