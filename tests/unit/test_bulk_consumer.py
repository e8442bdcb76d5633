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

    async def apply_records(self, records: Any, base: Any) -> None:
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
