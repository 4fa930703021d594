"""Kafka source and sink against a real broker: order per user, dead letters, commit and seek, a
commit from another thread while the source waits, a user's JSON and batch messages in one
partition, and a held loop that keeps its consumer in the group."""

from __future__ import annotations

import threading
import time
from zlib import crc32

import orjson
import pyarrow as pa
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from conftest import wait_until

from freshrec.engine.loop import Stages, run_loop
from freshrec.events.deadletter import MemoryDeadLetters
from freshrec.events.event import Event, EventChunk, Field, FieldKind
from freshrec.events.kafka import FAST_GROUP, KafkaDeadLetters, KafkaSink, KafkaSource, create_topic
from freshrec.features import FeaturePipeline, default_specs
from freshrec.metrics.sources import KAFKA_ASSIGNMENTS, KAFKA_EVENTS, KAFKA_LAG

pytestmark = [pytest.mark.integration, pytest.mark.beside]   # a broker and consumers waiting out group timeouts
FIELDS = (Field("genre", FieldKind.CATEGORICAL, "item"), Field("price", FieldKind.DENSE, "item"))


def _events(n: int) -> list[Event]:
    return [Event(f"e{i}", 1000.0 + i, f"u{i % 7}", i % 50, "click", {"genre": f"g{i % 3}", "price": i / 10},
                  float(i % 2)) for i in range(n)]


def _topic_of(broker: str, topic: str, partitions: int, events: int) -> KafkaSink:
    """A new topic holding `events` of `_events`; returns its sink."""
    create_topic(broker, topic, partitions)
    sink = KafkaSink(broker, topic)
    sink.send(_events(events))
    sink.flush()
    return sink


def _answered(call) -> list:
    """`[call()]` made in another thread, or [] if it has not returned within 30 s."""
    answers: list = []
    asking = threading.Thread(target=lambda: answers.append(call()), daemon=True)
    asking.start()
    asking.join(timeout=30)
    return answers


def _drain(source: KafkaSource, rows: int) -> list:
    chunks = []
    for chunk in source:
        chunks.append(chunk)
        if sum(len(c) for c in chunks) >= rows:
            break
    return chunks


def test_every_good_event_arrives_in_user_order_and_bad_ones_are_dead_lettered(broker) -> None:
    create_topic(broker, "events", 4)
    create_topic(broker, "events.dead", 1)
    sink = KafkaSink(broker, "events")
    sink.send(_events(2000))
    for bad in (b"{not json", b"[1, 2]", b'{"user": "u", "item": "i", "colour": 1}',
                b'{"user": "u", "item": "i", "fields": {"price": "cheap"}}', b'{"item": "i"}',
                b'{"user": "u", "item": "i", "label": 7}', b'{"user": "u", "item": "i", "ts": 1e300}'):
        sink.send_raw(bad, "bad")
    sink.flush()
    dead = KafkaDeadLetters(KafkaSink(broker, "events.dead"))
    source = KafkaSource(broker, "events", "trainer", FIELDS, dead, idle_timeout=2.0)
    rows = [r for chunk in source for r in chunk.table.to_pylist()]
    dead.sink.flush()
    assert len(rows) == 2000 and dead.total == 7
    assert dict(dead.counts) == {"not_json": 2, "unknown_key": 1, "bad_field": 1, "missing_id": 1,
                                 "bad_label": 1, "bad_time": 1}
    for user in {r["user_id"] for r in rows}:
        times = [r["ts"] for r in rows if r["user_id"] == user]
        assert times == sorted(times)          # one user, one partition, in order
    assert rows[0]["genre"].startswith("g") and isinstance(rows[0]["price"], float)
    consumer = Consumer({"bootstrap.servers": broker, "group.id": "check"})
    consumer.assign([TopicPartition("events.dead", 0, OFFSET_BEGINNING)])  # no group join to wait for
    letters = []
    while len(letters) < 7:
        letters += [orjson.loads(m.value()) for m in consumer.consume(10, timeout=5.0) if not m.error()]
    consumer.close()
    assert {letter["reason"] for letter in letters} == set(dead.counts)
    source.close()


def test_commit_and_seek_resume_without_loss_or_repeats(broker) -> None:
    _topic_of(broker, "resume", 3, 3000)
    first = KafkaSource(broker, "resume", "group", FIELDS, MemoryDeadLetters(), max_events=500)
    chunks = _drain(first, 1200)
    checkpoint = first.position()
    seen = [int(p) for c in chunks for p in c.positions]
    first.commit(checkpoint)
    assert first.committed() == checkpoint
    first.close()
    again = KafkaSource(broker, "resume", "group", FIELDS, MemoryDeadLetters(), idle_timeout=2.0)
    rest = [int(p) for c in again for p in c.positions]
    again.close()
    assert len(seen) + len(rest) == 3000 and not set(seen) & set(rest)
    replay = KafkaSource(broker, "resume", "other", FIELDS, MemoryDeadLetters(), idle_timeout=2.0)
    replay.seek(checkpoint)
    assert sorted(int(p) for c in replay for p in c.positions) == sorted(rest)
    replay.close()


def test_a_commit_from_another_thread_lands_while_the_source_waits_on_a_quiet_topic(broker) -> None:
    """The engine commits from its write-behind thread while its reader waits in `consume` on a
    topic with nothing new: the call returns at once and the consuming thread makes the commit."""
    sink = _topic_of(broker, "quiet", 2, 100)
    source = KafkaSource(broker, "quiet", "group", FIELDS, MemoryDeadLetters())
    taken, stop = [], threading.Event()

    def read() -> None:
        for chunk in source:
            taken.append(len(chunk))
            if stop.is_set():
                return
    reader = threading.Thread(target=read)
    reader.start()
    wait_until(lambda: sum(taken) == 100, "the source to take the 100 events")
    position = source.position()
    assert _answered(lambda: source.commit(position)) == [None], "commit() blocked while the reader consumed"
    assert _answered(source.lag) == [0], "lag() blocked while the reader waited in consume()"
    check = Consumer({"bootstrap.servers": broker, "group.id": "group"})

    def committed() -> dict:
        parts = check.committed([TopicPartition("quiet", p) for p in range(2)], timeout=10)
        return {str(tp.partition): tp.offset for tp in parts if tp.offset >= 0}
    wait_until(lambda: committed() == position, "the commit to reach the group")
    check.close()
    stop.set()
    sink.send(_events(1))    # the reader takes it and stops
    sink.flush()
    reader.join(timeout=60)
    assert not reader.is_alive()
    source.close()


def test_the_lag_counts_the_messages_not_handed_out_yet(broker) -> None:
    _topic_of(broker, "behind", 1, 100)
    source = KafkaSource(broker, "behind", "group", FIELDS, MemoryDeadLetters(), max_events=10)
    first = next(iter(source))
    assert len(first) == 10 and source.lag() == 90
    source.close()


def test_batch_messages_and_json_messages_mix_in_one_topic_in_order(broker) -> None:
    create_topic(broker, "mixed", 1)
    create_topic(broker, "mixed.dead", 1)
    sink = KafkaSink(broker, "mixed")
    rows = 3000
    table = pa.table({"ts": [2000.0 + i for i in range(rows)], "user_id": [f"u{i % 7}" for i in range(rows)],
                      "item_id": [str(i % 50) for i in range(rows)], "label": [float(i % 2) for i in range(rows)],
                      "genre": ["g"] * rows, "price": [0.5] * rows, "note": ["x" * 400] * rows})
    sink.send(_events(10))
    messages = sink.send_table(table.drop_columns("note"), "click")
    sink.send_table(table.slice(0, 2), "click")                       # a column the source lacks: dead whole
    sink.send_table(table.drop_columns("note").slice(0, 3).set_column(3, "label", pa.array([0.0, 9.0, 1.0])))
    sink.send(_events(5))
    sink.flush()
    assert messages == 1   # about 100 bytes a row: one message; 400 bytes more a row take several
    create_topic(broker, "mixed.big", 1)
    assert KafkaSink(broker, "mixed.big").send_table(table) == 3
    dead = KafkaDeadLetters(KafkaSink(broker, "mixed.dead"))
    source = KafkaSource(broker, "mixed", "trainer", FIELDS, dead, idle_timeout=2.0,
                         settings={"statistics.interval.ms": 100})
    KAFKA_LAG.labels("mixed", "0").set(-7)
    before = {o: KAFKA_EVENTS.labels("mixed", o)._value.get() for o in ("taken", "unknown_field", "bad_label")}
    got = [row for chunk in source for row in chunk.table.to_pylist()]
    source.close()
    assert {o: KAFKA_EVENTS.labels("mixed", o)._value.get() - n for o, n in before.items()} == {
        "taken": 10 + rows + 2 + 5, "unknown_field": 1, "bad_label": 1}
    assert KAFKA_LAG.labels("mixed", "0")._value.get() == 0   # from librdkafka's statistics, all consumed
    assert [r["ts"] for r in got] == ([1000.0 + i for i in range(10)] + [2000.0 + i for i in range(rows)]
                                      + [2000.0, 2002.0] + [1000.0 + i for i in range(5)])
    assert dict(dead.counts) == {"unknown_field": 1, "bad_label": 1}


def test_a_users_json_and_batch_messages_go_to_one_partition_in_order(broker) -> None:
    create_topic(broker, "placed", 3)
    sink = KafkaSink(broker, "placed")
    events = _events(700)
    sink.send(events[:300])
    users = {e.user_id for e in events}   # 7, over 2 of the 3 partitions (CRC-32 of the key, as librdkafka)
    sent = sink.send_table(EventChunk.from_events(events[300:], "t").table, "click")
    assert sent == len({crc32(user.encode()) % 3 for user in users}) == 2   # a message per partition of users
    sink.flush()
    source = KafkaSource(broker, "placed", "trainer", FIELDS, MemoryDeadLetters(), idle_timeout=2.0)
    chunks = list(source)
    source.close()
    partitions: dict[str, set[int]] = {}
    for chunk in chunks:
        for user, position in zip(chunk.table.column("user_id").to_pylist(), chunk.positions.tolist()):
            partitions.setdefault(user, set()).add(position >> 40)
    assert set(partitions) == users and all(len(p) == 1 for p in partitions.values())
    rows = [row for chunk in chunks for row in chunk.table.to_pylist()]
    for user in partitions:
        assert [r["ts"] for r in rows if r["user_id"] == user] == [e.ts for e in events if e.user_id == user]


@pytest.mark.parametrize("keep_alive", [True, False], ids=["keep-alive", "idle-reader"])
def test_a_held_loop_keeps_its_partitions_and_takes_every_message_once(broker, keep_alive: bool) -> None:
    """The trainer holds its first chunk while the reader's queue is full, for 2.5 x
    `max.poll.interval.ms` (a precondition timed by the clock; the assertions are on what happened).
    With the source's `keep_alive` the consumer keeps its partitions and every message arrives once;
    a reader that waits idle (a plain iterator hides `keep_alive`) is dropped from the group."""
    topic = f"held-{keep_alive}"
    _topic_of(broker, topic, 2, 3000)
    interval = FAST_GROUP["session.timeout.ms"] / 1000   # the least max.poll.interval.ms librdkafka takes
    source = KafkaSource(broker, topic, "trainer", FIELDS, MemoryDeadLetters(), max_events=100, idle_timeout=3.0,
                         settings={"max.poll.interval.ms": int(interval * 1000)})
    assigned = KAFKA_ASSIGNMENTS.labels(topic)._value.get()
    held, release, positions, errors = threading.Event(), threading.Event(), [], []

    def after(work, steps, done) -> None:
        positions.extend(work.examples.positions.tolist() if work.examples is not None else [])
        held.set()
        release.wait()

    def run() -> None:
        stream = source if keep_alive else (chunk for chunk in source)
        try:
            run_loop(Stages(stream, FeaturePipeline(default_specs(FIELDS)), read_ahead=1), after=after)
        except RuntimeError as error:
            errors.append(error)

    loop = threading.Thread(target=run)
    loop.start()
    try:
        wait_until(held.is_set, "the first chunk at the trainer")
        since = time.monotonic()
        wait_until(lambda: time.monotonic() - since > 2.5 * interval, "the hold")
        handed_out = sum(source.position().values())   # next offsets, from 0: messages handed to the loop
        assert handed_out <= 4 * 100   # what the trainer, the queue and the reader hold: nothing read unboundedly
    finally:
        release.set()
        loop.join()
        source.close()
    if keep_alive:
        assert errors == [] and KAFKA_ASSIGNMENTS.labels(topic)._value.get() - assigned == 1   # no rebalance
        assert len(positions) == len(set(positions)) == 3000
    else:
        assert len(errors) == 1 and "maximum poll interval" in str(errors[0])
