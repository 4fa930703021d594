"""A worker group's Kafka input: every rank reads the same chunks of the topic, each keeps its users'.

Rank 0 consumes the topic in the consumer group (`KafkaLeader`, a `KafkaSource`: the group's
offsets are committed after each cut, its lag is the group's) and, for each batch of messages it
takes, writes the batch's outline to the group's store (`Group.store`): the runs of messages, as
(partition, first offset, last offset), in the order it took them. Every other rank
(`KafkaFollower`) reads exactly those messages with a consumer of its own (the partitions
assigned, no group, nothing committed) and decodes them in that order: chunk k is the same on
every rank, what `RankShare` needs to keep each rank's users and line the ranks' chunks up
(checkpoint cuts fall after the same chunk, at the same offsets). When rank 0's stream ends
(`source.kafka.idle_timeout`), it says so in the store and every rank ends after the same chunk.
The stream is read once per rank, as a replayed file is (`RankShare`); the bytes cost little
beside training. A restart reads on from the cut's offsets, which every rank holds.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Iterator

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from freshrec.events.event import EventChunk
from freshrec.events.kafka import KafkaSource
from freshrec.events.source import Position

__all__ = ["KafkaFollower", "KafkaLeader", "outline"]

_END = b"end"
READ_TIMEOUT = 300.0   # seconds a follower waits for messages rank 0 has taken
OUTLINE_POLL = 0.002   # seconds between a follower's looks for rank 0's next outline


def _key(chunk: int) -> str:
    return f"kafka/{chunk}"


def outline(partitions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The runs of a batch of messages (their partitions and offsets, in the order taken):
    `[run, 3]` int64 rows of (partition, first offset, last offset).

    >>> outline(np.array([0, 0, 1, 1, 0]), np.array([5, 6, 9, 10, 7])).tolist()
    [[0, 5, 6], [1, 9, 10], [0, 7, 7]]
    """
    starts = np.flatnonzero(np.r_[True, partitions[1:] != partitions[:-1]])
    ends = np.r_[starts[1:], len(partitions)] - 1
    return np.stack([partitions[starts], offsets[starts], offsets[ends]], axis=1).astype(np.int64)


class KafkaLeader(KafkaSource):
    """Rank 0's consumer: a `KafkaSource` that writes each batch's outline to `store`."""

    def __init__(self, *args, store, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.store, self._chunks = store, 0

    def __iter__(self) -> Iterator[EventChunk]:
        yield from super().__iter__()
        self.store.set(_key(self._chunks), _END)

    def _took(self, partitions: np.ndarray, offsets: np.ndarray) -> None:
        super()._took(partitions, offsets)
        self.store.set(_key(self._chunks), outline(partitions, offsets).tobytes())
        self._chunks += 1


class KafkaFollower(KafkaSource):
    """Another rank's consumer: reads the messages of each batch rank 0 outlines in `store`, in its order."""

    def __init__(self, *args, store, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.store, self._chunks = store, 0
        self._buffers: dict[int, deque] = defaultdict(deque)   # partition -> messages fetched, not yet taken

    def _consumer_ready(self) -> Consumer:
        if self._consumer is None:
            consumer = Consumer(self._config)
            partitions = consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
            consumer.assign([TopicPartition(self.topic, p, self._seek_to.get(p, self._next.get(p, OFFSET_BEGINNING)))
                             for p in sorted(partitions)])
            self._consumer = consumer
        return self._consumer

    def __iter__(self) -> Iterator[EventChunk]:
        consumer = self._consumer_ready()
        while (runs := self._outline()) is not None:
            chunk = self._chunk([m for partition, first, last in runs.tolist()
                                 for m in self._run(consumer, partition, first, last)])
            if chunk is not None:
                yield chunk

    def _outline(self) -> np.ndarray | None:
        """The next batch's runs, once rank 0 has written them (None: its stream has ended)."""
        key = _key(self._chunks)
        while not self.store.check([key]):   # a quiet topic may keep rank 0 waiting for long
            time.sleep(OUTLINE_POLL)
        self._chunks += 1
        value = self.store.get(key)
        return None if value == _END else np.frombuffer(value, np.int64).reshape(-1, 3)

    def _run(self, consumer: Consumer, partition: int, first: int, last: int) -> list:
        """The messages of `partition` from offset `first` to `last`, fetching as needed."""
        buffer, taken = self._buffers[partition], []
        deadline = time.monotonic() + READ_TIMEOUT
        while not taken or taken[-1].offset() < last:
            if not buffer:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"kafka: partition {partition} of {self.topic} gave no message up to offset "
                                       f"{last} in {READ_TIMEOUT:.0f} s (rank 0 took it)")
                self._fetch(consumer)
                continue
            message = buffer.popleft()
            if message.offset() > last:
                buffer.appendleft(message)
                break
            if message.offset() >= first:
                taken.append(message)
        return taken

    def _fetch(self, consumer: Consumer) -> None:
        for message in consumer.consume(self.max_events, timeout=0.5):
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"kafka: {message.error()}")
                continue
            self._buffers[message.partition()].append(message)

    def keep_alive(self) -> None:
        """Nothing to do: no group to stay in."""

    def commit(self, position: Position) -> None:
        """Nothing: rank 0 commits the group's offsets."""

    def lag(self) -> int:
        """Rank 0's to tell."""
        return 0
