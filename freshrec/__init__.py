"""freshrec: real-time training of recommendation models.

The names a user needs to open a stream, build and train a model, run the engine and serve
it. They load on first use (PEP 562), so `import freshrec` (and the `freshrec` command's
start) does not import torch, numba or pyarrow.

>>> import freshrec
>>> freshrec.__version__
'0.1.0'
>>> freshrec.build_model.__module__
'freshrec.models.factory'
>>> freshrec.fit
Traceback (most recent call last):
...
AttributeError: module 'freshrec' has no attribute 'fit'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "Batch": "freshrec.batch", "SparseFeatures": "freshrec.batch",
    "Event": "freshrec.events", "EventChunk": "freshrec.events", "Source": "freshrec.events",
    "MemoryDeadLetters": "freshrec.events", "SimulatorConfig": "freshrec.events",
    "open_source": "freshrec.events.datasets",
    "FeaturePipeline": "freshrec.features", "FeatureSpec": "freshrec.features", "default_specs": "freshrec.features",
    "ModelConfig": "freshrec.models", "build_model": "freshrec.models",
    "OnlineTrainer": "freshrec.train", "TrainerConfig": "freshrec.train",
    "DataFlowEngine": "freshrec.engine.dataflow", "EngineConfig": "freshrec.engine.dataflow",
    "ModelRegistry": "freshrec.snapshot", "Snapshot": "freshrec.snapshot",
    "ModelService": "freshrec.serve", "create_app": "freshrec.serve",
    "FreshrecConfig": "freshrec.config", "load_config": "freshrec.config",
    "RecommenderAutoML": "freshrec.automl",
    "FederatedConfig": "freshrec.federated", "FederatedTrainer": "freshrec.federated",
}
__all__ = [*sorted(_EXPORTS), "__version__"]

if TYPE_CHECKING:
    from freshrec.automl import RecommenderAutoML  # noqa: F401 (for type checkers)
    from freshrec.batch import Batch, SparseFeatures  # noqa: F401 (for type checkers)
    from freshrec.config import FreshrecConfig, load_config  # noqa: F401 (for type checkers)
    from freshrec.engine.dataflow import DataFlowEngine, EngineConfig  # noqa: F401 (for type checkers)
    from freshrec.events import Event, EventChunk, MemoryDeadLetters, SimulatorConfig, Source  # noqa: F401 (for type checkers)
    from freshrec.events.datasets import open_source  # noqa: F401 (for type checkers)
    from freshrec.features import FeaturePipeline, FeatureSpec, default_specs  # noqa: F401 (for type checkers)
    from freshrec.federated import FederatedConfig, FederatedTrainer  # noqa: F401 (for type checkers)
    from freshrec.models import ModelConfig, build_model  # noqa: F401 (for type checkers)
    from freshrec.serve import ModelService, create_app  # noqa: F401 (for type checkers)
    from freshrec.snapshot import ModelRegistry, Snapshot  # noqa: F401 (for type checkers)
    from freshrec.train import OnlineTrainer, TrainerConfig  # noqa: F401 (for type checkers)


def __getattr__(name: str) -> object:
    """Import the module that holds `name` on first use and keep the name here."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'freshrec' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
