"""Jagged micro-batches: `Batch` and `SparseFeatures` (KeyedJaggedTensor semantics)."""

from freshrec.batch.batch import Batch, micro_batch_sizes
from freshrec.batch.sparse import JaggedTensor, SparseFeatures

__all__ = ["Batch", "JaggedTensor", "SparseFeatures", "micro_batch_sizes"]
