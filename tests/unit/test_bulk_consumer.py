"""BulkConsumer's bookkeeping around a rebalance, with a stand-in for aiokafka's consumer
(only `assignment()` and `pause()` are used here) and for the worker."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

from aiokafka import TopicPartition

from engine.settings import Settings
from streams.consumer import BulkConsumer
from tests.unit import aio

Record = namedtuple("Record", "topic partition offset value timestamp")


class Assigned:
    def __init__(self, tps: set[TopicPartition]) -> None:
        self.tps = tps

    def assignment(self) -> set[TopicPartition]:
        return set(self.tps)


class Applies:
    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    async def apply_records(self, records: Any, base: Any, more: Any = None) -> None:
        self.batches.append([(r.partition, r.offset) for r in records])


def test_records_of_a_partition_revoked_since_they_were_fetched_are_left_to_its_new_owner() -> None:
    s = Settings()
    worker = Applies()
    c = BulkConsumer(s, "127.0.0.1:1", worker)
    c.consumer = Assigned({TopicPartition(s.events_topic, 1)})  # type: ignore[assignment]
    fetched = [Record(s.events_topic, p, o, b"", 0) for p in (0, 1) for o in (7, 8)]
    aio.run(c.apply(fetched))
    assert worker.batches == [[(1, 7), (1, 8)]]
    assert c.positions == {(s.events_topic, 1): 9}
    assert set(c._pending) == {TopicPartition(s.events_topic, 1)}  # nothing for partition 0


def test_a_batch_of_revoked_partitions_only_applies_nothing() -> None:
    s = Settings()
    worker = Applies()
    c = BulkConsumer(s, "127.0.0.1:1", worker)
    c.consumer = Assigned(set())  # type: ignore[assignment]
    aio.run(c.apply([Record(s.events_topic, 0, 3, b"", 0)]))
    assert worker.batches == [] and c.positions == {} and not c._pending


class Fetches(Assigned):
    """`assignment()` and one more fetch of `then`, then nothing (aiokafka's getmany)."""

    def __init__(self, tps: set[TopicPartition], then: list[Record]) -> None:
        super().__init__(tps)
        self.then = then

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, list[Record]]:
        assert timeout_ms == 0  # never waits: the batch's commit is about to be sent
        got, self.then = self.then, []
        out: dict[Any, list[Record]] = {}
        for r in got:
            out.setdefault(TopicPartition(r.topic, r.partition), []).append(r)
        return out


class Chains:
    """A worker that asks for more while it applies (as Worker.apply_records does)."""

    def __init__(self) -> None:
        self.extra: list[list[tuple[int, int]]] = []

    async def apply_records(self, records: Any, base: Any, more: Any = None) -> None:
        while got := await more():
            self.extra.append([(r.partition, r.offset) for r in got])


def test_records_fetched_while_a_batch_commits_go_on_with_it_and_are_marked_applied() -> None:
    s = Settings()
    worker = Chains()
    c = BulkConsumer(s, "127.0.0.1:1", worker)
    tp1 = TopicPartition(s.events_topic, 1)
    later = [Record(s.events_topic, 1, 9, b"", 0), Record(s.events_topic, 0, 4, b"", 0)]
    c.consumer = Fetches({tp1}, later)  # type: ignore[assignment]
    aio.run(c.apply([Record(s.events_topic, 1, 8, b"", 0)]))
    assert worker.extra == [[(1, 9)]]  # partition 0 is not held: left to its owner
    assert c.positions == {(s.events_topic, 1): 10}
    assert c._pending == {tp1: 10}
