"""`Stream`: the labelled events a search learns from, read once (through the joiner when the
configuration has one), held as one Arrow table in time order, saved beside the study so that its
worker processes replay the same rows.

>>> from freshrec.events.simulator import Simulator, SimulatorConfig
>>> stream = Stream.read(Simulator(SimulatorConfig(total_events=1000, batch_size=300)))
>>> len(stream), len(stream.head(0.8)), [len(chunk) for chunk in stream.replay(400)]
(1000, 800, [400, 400, 200])
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from freshrec.config import FORMATS, ConfigError, FreshrecConfig, with_overrides
from freshrec.engine.build import join_config, open_stream, resolve_data
from freshrec.events.deadletter import DeadLetterSink, MemoryDeadLetters
from freshrec.events.event import EventChunk, Field, FieldKind
from freshrec.events.source import Source, TableReplay
from freshrec.join import Joiner

__all__ = ["Stream", "read_stream"]

POSITIONS = "__position"
"""The column that carries the rows' source positions in a saved stream."""


@dataclass(frozen=True)
class Stream:
    """Labelled events in time order: `table` (an `EventChunk`'s columns), their source `positions`,
    the source's `fields` and `name`."""

    table: pa.Table
    positions: np.ndarray
    fields: tuple[Field, ...]
    name: str

    @classmethod
    def read(cls, source: Source, joiner: Joiner | None = None) -> Stream:
        """Every event of `source` (joined with their later actions by `joiner`), in time order."""
        chunks = [c for c in _joined(source, joiner) if len(c)]
        if not chunks:
            raise ValueError(f"{source.name}: no events to learn from")
        table = pa.concat_tables([c.table for c in chunks], promote_options="default")
        positions = np.concatenate([c.positions for c in chunks]).astype(np.int64)
        order = np.argsort(table.column("ts").to_numpy(), kind="stable")
        return cls(table.take(pa.array(order)), positions[order], tuple(source.fields), source.name)

    def __len__(self) -> int:
        return self.table.num_rows

    def head(self, fraction: float) -> Stream:
        """The first `fraction` of the rows."""
        rows = int(round(len(self) * fraction))
        return Stream(self.table.slice(0, rows), self.positions[:rows], self.fields, self.name)

    def replay(self, chunk_rows: int) -> TableReplay:
        """The rows as a source of chunks of `chunk_rows`."""
        return TableReplay(self.table, self.positions, self.name, self.fields, batch_size=chunk_rows)

    def save(self, path: str | Path) -> None:
        """Write the stream to one Arrow IPC file (fields and name in its metadata)."""
        meta = {"fields": [[f.name, f.kind.value, f.owner] for f in self.fields], "name": self.name}
        table = self.table.append_column(POSITIONS, pa.array(self.positions))
        table = table.replace_schema_metadata({"freshrec": json.dumps(meta)})
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)

    @classmethod
    def load(cls, path: str | Path) -> Stream:
        """The stream `save` wrote (memory-mapped)."""
        table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        meta = json.loads(table.schema.metadata[b"freshrec"])
        fields = tuple(Field(name, FieldKind(kind), owner) for name, kind, owner in meta["fields"])
        positions = table.column(POSITIONS).to_numpy()
        return cls(table.drop_columns([POSITIONS]).replace_schema_metadata(None), positions, fields, meta["name"])


def read_stream(data: Source | FreshrecConfig | str | Path | None, base: FreshrecConfig,
                dead_letters: DeadLetterSink | None = None) -> Stream:
    """The stream `data` names (a source, a configuration whose source to read, a data set's format name
    or a file read as `base` says; None: `base`'s source), read through `base`'s joiner when it has one;
    the records it rejects go to `dead_letters` (None: kept in memory) with their reasons."""
    joiner = Joiner(join) if (join := join_config(base)) is not None else None
    if data is not None and not isinstance(data, (FreshrecConfig, str, Path)):
        return Stream.read(data, joiner)
    settings = data if isinstance(data, FreshrecConfig) else base
    if isinstance(data, (str, Path)):
        key = "source.format" if str(data) in FORMATS else "source.data"
        settings = with_overrides(base, {key: str(data)})
    if settings.source.kind == "kafka" and settings.source.kafka.idle_timeout is None:
        raise ConfigError(["source.kafka.idle_timeout: a search reads its whole stream first; set how long "
                           "the topic may stay quiet before it ends"])
    settings, _ = resolve_data(settings)
    return Stream.read(open_stream(settings, dead_letters or MemoryDeadLetters()), joiner)


def _joined(source: Iterable[EventChunk], joiner: Joiner | None) -> Iterator[EventChunk]:
    if joiner is None:
        yield from source
        return
    for chunk in source:
        if (examples := joiner.process(chunk)) is not None:
            yield examples
    if (rest := joiner.flush()) is not None:
        yield rest
