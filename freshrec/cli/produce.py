"""`freshrec produce`: read a data set with the readers `replay` and `run` use (the same source
options) and produce its events to a Kafka topic, created if missing, as the messages `freshrec run
--source kafka` consumes: one JSON message an event keyed by user id, or `--batch-messages` (Arrow
IPC, thousands of events each, grouped by the partition of their user). Only the columns a consumer
of that format takes are sent (the stream's fields: not e.g. MovieLens' `rating`, kept beside the
events for `--target`). The figures: events, messages, seconds, events/s (`--json`: one line)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from freshrec.cli.errors import UsageError, guarded
from freshrec.cli.options import KAFKA, SOURCE, build_config, overriding
from freshrec.config import FreshrecConfig

__all__ = ["produce_command"]


@guarded
@overriding(SOURCE, KAFKA)
def produce_command(
    partitions: Annotated[int | None, typer.Option(help="Partitions of the topic if it is created "
                                                        "(default: 4, as `run` creates it).")] = None,
    batch_messages: Annotated[bool, typer.Option("--batch-messages", help="Arrow IPC batch messages, thousands "
                                                                          "of events each, not JSON events.")]
    = False,
    dead_letters: Annotated[Path, typer.Option(help="JSONL file for rejected records.")]
    = Path("dead_letters.jsonl"),
    as_json: Annotated[bool, typer.Option("--json", help="Last stdout line: one JSON object.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Produce a data set's events to a Kafka topic (created if missing), as `run --source kafka` reads them."""
    from freshrec.cli.output import emit, note
    from freshrec.engine.build import KAFKA_PARTITIONS, resolve_data

    settings = build_config(None, overrides or {})
    if partitions is not None and partitions < 1:
        raise UsageError(f"--partitions: expected a number >= 1, got {partitions}")
    settings, found = resolve_data(settings)
    if found:
        note(found)
    figures = _produce(settings, partitions or KAFKA_PARTITIONS, batch_messages, dead_letters, quiet)
    s = settings.source
    figures.update({"format": s.format, "data": str(s.data) if s.data else None, "dead_letter_file":
                    str(dead_letters) if figures["dead_letters"] else None})
    emit(figures, as_json, f"produce {s.kafka.topic}")


def _produce(settings: FreshrecConfig, partitions: int, batch_messages: bool, dead_letter_path: Path,
             quiet: bool) -> dict:
    """Send every chunk of the stream; the figures, once every message is delivered."""
    from confluent_kafka import KafkaException
    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    from freshrec.cli.output import err
    from freshrec.cli.replay import READ_ROWS
    from freshrec.engine.build import open_stream
    from freshrec.events.deadletter import JsonlDeadLetters
    from freshrec.events.event import STANDARD_COLUMNS
    from freshrec.events.kafka import KafkaSink, create_topic

    kafka, started = settings.source.kafka, time.perf_counter()
    with JsonlDeadLetters(dead_letter_path) as letters:
        source = open_stream(settings, letters, READ_ROWS)
        try:
            sink = KafkaSink(kafka.bootstrap, kafka.topic, kafka.settings)
        except KafkaException as error:   # e.g. no such librdkafka property
            raise UsageError(f"--kafka-setting (source.kafka.settings): {error.args[0].str()}") from None
        create_topic(kafka.bootstrap, kafka.topic, partitions, kafka.settings)
        columns = {*STANDARD_COLUMNS, *(field.name for field in source.fields)}
        events = messages = 0
        with Progress(TextColumn("{task.description}"), TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                      console=err, disable=quiet or not err.is_terminal, transient=True) as bar:
            task = bar.add_task(f"produce {settings.source.format} to {kafka.topic}", status="")
            for chunk in source:
                table = chunk.table.select([name for name in chunk.table.column_names if name in columns])
                messages += sink.send_table(table, chunk.kind, as_json=not batch_messages)
                events += len(chunk)
                rate = events / max(time.perf_counter() - started, 1e-9)
                bar.update(task, status=f"{events:,} events  {rate:,.0f}/s")
            sink.flush(timeout=120.0)
        seconds = time.perf_counter() - started
    return {"events": events, "messages": messages, "seconds": seconds,
            "events_per_s": events / seconds if seconds > 0 else 0.0, "topic": kafka.topic,
            "partitions": sink.partitions(), "batch_messages": batch_messages, "dead_letters": letters.total}
