"""freshrec: real-time training of recommendation models.

>>> import freshrec
>>> freshrec.__version__
'0.1.0'
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
_EXPORTS = {"Batch": "freshrec.batch", "SparseFeatures": "freshrec.batch", "Event": "freshrec.events",
            "EventChunk": "freshrec.events", "Source": "freshrec.events", "FeaturePipeline": "freshrec.features",
            "FeatureSpec": "freshrec.features"}
__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> object:
    """The public names load on first use, so `freshrec --help` and `freshrec.config` need no torch."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'freshrec' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
