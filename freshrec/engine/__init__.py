"""The loop that moves events through the pipeline; for now the ingestion path (`ingest`)."""

from freshrec.engine.ingest import IngestSummary, ingest

__all__ = ["IngestSummary", "ingest"]
