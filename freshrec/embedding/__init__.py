"""Collisionless dynamic embedding tables: hash index, storage, admission, eviction, row-wise
optimizers, deltas and snapshots."""

from freshrec.embedding.admission import (
    CountAdmission,
    CountMinSketch,
    ProbabilisticAdmission,
)
from freshrec.embedding.collection import EmbeddingCollection, pool
from freshrec.embedding.index import IdIndex
from freshrec.embedding.optimizers import (
    FTRL,
    SGD,
    Adagrad,
    Adam,
    RowOptimizer,
    optimizer_from_name,
)
from freshrec.embedding.snapshot import load_delta, load_table, save_delta, save_table
from freshrec.embedding.storage import RowStorage
from freshrec.embedding.table import DynamicEmbedding, TableConfig, TableDelta

__all__ = ["FTRL", "SGD", "Adagrad", "Adam", "CountAdmission", "CountMinSketch", "DynamicEmbedding",
           "EmbeddingCollection",
           "IdIndex", "ProbabilisticAdmission", "RowOptimizer", "RowStorage", "TableConfig",
           "TableDelta", "load_delta", "load_table", "optimizer_from_name", "pool", "save_delta", "save_table"]
