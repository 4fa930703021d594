"""`IngestSummary`: the figures of one run of the loop (rows, micro-batches, ids, labels, time)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from freshrec.batch import Batch

__all__ = ["IngestSummary"]


@dataclass
class IngestSummary:
    """Figures of one run of the ingestion path."""

    rows: int = 0
    batches: int = 0
    ids: int = 0
    positives: int = 0
    labelled: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    seconds: float = 0.0
    dead_letters: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def positive_rate(self) -> float | None:
        return self.positives / self.labelled if self.labelled else None

    def as_dict(self) -> dict:
        return {**asdict(self), "rows_per_s": self.rows_per_s, "positive_rate": self.positive_rate}

    def add(self, batch: Batch, batches: int = 1) -> None:
        """Count `batch` (which the caller cut into `batches` micro-batches)."""
        labelled = ~torch.isnan(batch.labels)
        self.rows += len(batch)
        self.batches += batches
        self.ids += batch.sparse.values().numel()
        self.labelled += int(labelled.sum())
        self.positives += int((batch.labels[labelled] > 0.5).sum())
        if len(batch):
            self.first_ts = float(batch.ts[0]) if self.first_ts is None else self.first_ts
            self.last_ts = float(batch.ts[-1])
