"""Produce benchmark: messages/s from `KafkaSink` to a Tansu broker on 127.0.0.1 (4 partitions),
counted until every message is delivered (`flush`), against the sink as it was before issue 15
(`baseline`: one `orjson.dumps` and one `produce` per event in a Python loop, `linger.ms` 5, no
compression), measured in the same run on the same events.

Streams: the simulator (user-keyed, 4 fields) and a simulated Criteo-format file (39 fields, no user:
unkeyed; `bench/ingest.py`'s cached file), `--rows` events each, sent a chunk of 8,192 at a time.
- `baseline_from_table`: a reader's chunk sent the old way, `send(list(chunk.events()))` (as
  `bench/engine.py` did): the figure `json_table` replaces;
- `baseline_json_per_event`: the old `send(events)` on `Event`s made beforehand (not timed);
- `send_events`: `KafkaSink.send(events)` now, on the same `Event`s (it makes their table);
- `json_table`: `send_table(table, as_json=True)`, what `freshrec produce` does, with `PRODUCER`'s
  settings, and the same without compression (`json_table_uncompressed`) and with the old
  settings (`json_table_old_settings`);
- `batch_messages`: `send_table(table)`, Arrow IPC batch messages (events/s; few messages).
Each figure is the best of `--repeats` (a fresh topic each), after one warm-up run.

    .venv/bin/python bench/produce.py [--rows 200000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from collections.abc import Callable

import orjson
from ingest import criteo_file  # bench/ is on sys.path when run as a script

from freshrec.events.datasets.criteo import CriteoReplay
from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.events.event import Event
from freshrec.events.kafka import PRODUCER, KafkaSink, create_topic, local_broker
from freshrec.events.simulator import Simulator, SimulatorConfig

CHUNK = 8192
OLD_SETTINGS = {"linger.ms": 5, "batch.num.messages": 10_000, "compression.type": "none"}   # librdkafka's, linger 5


def baseline(sink: KafkaSink, events: list[Event]) -> int:
    """The sink's `send` before issue 15: one message at a time."""
    for event in events:
        value = orjson.dumps({"event_id": event.event_id, "ts": event.ts, "user": event.user_id,
                              "item": event.item_id, "kind": event.kind, "label": event.label, "fields": event.fields})
        sink.send_raw(value, None if event.user_id is None else str(event.user_id))
    return len(events)


def timed(bootstrap: str, topic: str, settings: dict, send: Callable[[KafkaSink], int], events: int) -> dict:
    """events/s and messages/s of `send` to a new topic, until delivered."""
    create_topic(bootstrap, topic, 4)
    sink = KafkaSink(bootstrap, topic, settings)
    sink.partitions()   # the topic's metadata, before the clock starts
    started = time.perf_counter()
    messages = send(sink)
    sink.flush(120)
    seconds = time.perf_counter() - started
    return {"events_per_s": round(events / seconds), "messages_per_s": round(messages / seconds),
            "messages": messages, "seconds": round(seconds, 3)}


def measure(bootstrap: str, name: str, chunks: list, repeats: int) -> dict:
    """Every way of sending `chunks`, the best of `repeats` each (interleaved)."""
    events = [list(chunk.events()) for chunk in chunks]
    rows = sum(len(chunk) for chunk in chunks)
    ways = {
        "baseline_from_table": (OLD_SETTINGS, lambda sink: sum(baseline(sink, list(c.events())) for c in chunks)),
        "baseline_json_per_event": (OLD_SETTINGS, lambda sink: sum(baseline(sink, part) for part in events)),
        "send_events": ({}, lambda sink: sum(sink.send(part) for part in events)),
        "json_table": ({}, lambda sink: sum(sink.send_table(c.table, c.kind, as_json=True) for c in chunks)),
        "json_table_uncompressed": ({"compression.type": "none"},
                                    lambda sink: sum(sink.send_table(c.table, c.kind, as_json=True) for c in chunks)),
        "json_table_old_settings": (OLD_SETTINGS,
                                    lambda sink: sum(sink.send_table(c.table, c.kind, as_json=True) for c in chunks)),
        "batch_messages": ({}, lambda sink: sum(sink.send_table(c.table, c.kind) for c in chunks)),
    }
    runs: dict[str, list[dict]] = {way: [] for way in ways}
    topics = itertools.count()
    timed(bootstrap, f"{name}-warm", {}, ways["json_table"][1], rows)
    for _ in range(repeats):
        for way, (settings, send) in ways.items():
            runs[way].append(timed(bootstrap, f"{name}-{next(topics)}", settings, send, rows))
    best = {way: max(results, key=lambda r: r["events_per_s"]) for way, results in runs.items()}
    def ratio(way: str, baseline: str) -> float:
        return round(best[way]["messages_per_s"] / best[baseline]["messages_per_s"], 2)
    return {"rows": rows, **best, "json_table_vs_baseline": ratio("json_table", "baseline_from_table"),
            "send_events_vs_baseline": ratio("send_events", "baseline_json_per_event")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    simulated = list(Simulator(SimulatorConfig(batch_size=CHUNK, total_events=args.rows)))
    criteo = list(itertools.islice(CriteoReplay(criteo_file(200_000), MemoryDeadLetters(), batch_size=CHUNK),
                                   -(-args.rows // CHUNK)))
    load_before = os.getloadavg()[0]
    with local_broker() as bootstrap:
        figures = {"benchmark": "produce", "chunk": CHUNK, "producer": PRODUCER, "old_settings": OLD_SETTINGS,
                   "simulator": measure(bootstrap, "sim", simulated, args.repeats),
                   "criteo": measure(bootstrap, "criteo", criteo, args.repeats)}
    figures.update({"cpus": len(os.sched_getaffinity(0)), "load_avg_before": load_before,
                    "load_avg_after": os.getloadavg()[0]})
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
