"""The one loop (`loop`: source -> join -> log -> features -> learn -> publish, in stages) and its
configurations: `ingest` and `train_online` (replay), `DataFlowEngine` (`freshrec run`), train and
serve in one process (`train_serve`)."""

from freshrec.engine.ingest import ingest, train_online
from freshrec.engine.summary import IngestSummary

__all__ = ["IngestSummary", "ingest", "train_online"]
