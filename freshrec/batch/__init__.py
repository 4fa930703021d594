"""Jagged micro-batches: `Batch` and `SparseFeatures` (KeyedJaggedTensor semantics)."""

from freshrec.batch.batch import Batch
from freshrec.batch.sparse import JaggedTensor, SparseFeatures

__all__ = ["Batch", "JaggedTensor", "SparseFeatures"]
