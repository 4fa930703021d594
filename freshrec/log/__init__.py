"""The durable event log (the article's "batch storage", input of offline retraining): `EventLog`
appends chunks to Parquet segments partitioned by event hour and reads a time range back."""

from freshrec.log.eventlog import EventLog, LogRetry, LogWriteError, Recovery
from freshrec.log.segment import CorruptSegment, SegmentInfo, log_schema

__all__ = ["CorruptSegment", "EventLog", "LogRetry", "LogWriteError", "Recovery", "SegmentInfo", "log_schema"]
