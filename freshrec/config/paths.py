"""Where data and caches live: `data_root()`, `cache_dir()`.

>>> import os
>>> os.environ["FRESHREC_DATA"] = "/tmp/my-data"
>>> str(data_root())
'/tmp/my-data'
>>> del os.environ["FRESHREC_DATA"]
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "data_root"]


def data_root() -> Path:
    """The folder of real data sets: `$FRESHREC_DATA`, else `../shared/data` from the working directory."""
    return Path(os.environ.get("FRESHREC_DATA", "../shared/data"))


def cache_dir() -> Path:
    """Where downloads are cached: `$FRESHREC_CACHE`, else `$XDG_CACHE_HOME/freshrec` or `~/.cache/freshrec`."""
    if "FRESHREC_CACHE" in os.environ:
        return Path(os.environ["FRESHREC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "freshrec"
