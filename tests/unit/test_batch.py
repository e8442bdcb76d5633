"""streams/batch.py without faust: decoding a batch of records and retrying while Redis is away."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from engine.logic.events import Event, encode_events
from streams.batch import apply_until_done, decode_batch
from streams.metrics import WorkerMeter
from streams.plan import DECISIONS_MARK_BASE


@dataclass
class TP:
    topic: str
    partition: int


@dataclass
class Message:  # the fields of a faust message that decode_batch reads
    value: bytes
    tp: TP
    offset: int
    timestamp: float


@dataclass
class Record:
    message: Message


def record(partition: int, offset: int, *events: Event, ts: float = 1_700_000_000.5) -> Record:
    return Record(Message(encode_events(list(events)), TP("events", partition), offset, ts))


def ev(n: int, vid: str = "v1") -> Event:
    return Event(event_id=f"e{n}", type="page_view", visitor_id=vid, ts=1_700_000_000_000 + n)


def test_each_event_carries_its_records_redelivery_mark() -> None:
    meter = WorkerMeter()
    got = decode_batch([record(2, 40, ev(1), ev(2)), record(3, 7, ev(3, "v2"))], 0, meter)
    assert [e["event_id"] for e in got] == ["e1", "e2", "e3"]
    assert [(e["_p"], e["_o"], e["_t"]) for e in got] == [(2, 40, 1_700_000_000_500)] * 2 + [
        (3, 7, 1_700_000_000_500)]
    assert got[2]["visitor_id"] == "v2" and meter.bad_records == 0


def test_the_decisions_topic_keeps_its_marks_apart() -> None:
    got = decode_batch([record(1, 5, ev(1))], DECISIONS_MARK_BASE, WorkerMeter())
    assert got[0]["_p"] == DECISIONS_MARK_BASE + 1


def test_an_unreadable_record_is_counted_and_skipped() -> None:
    meter = WorkerMeter()
    bad = Record(Message(b"\xc1 not msgpack", TP("events", 0), 9, 1.0))
    got = decode_batch([bad, record(0, 10, ev(1))], 0, meter)
    assert [e["event_id"] for e in got] == ["e1"] and meter.bad_records == 1


async def test_apply_retries_the_same_batch_while_redis_is_unreachable() -> None:
    calls: list[list[dict]] = []
    waits: list[float] = []

    async def apply(events):
        calls.append(list(events))
        if len(calls) < 4:
            raise (RedisConnectionError, OSError, TimeoutError)[len(calls) - 1]("down")
        return "done"

    async def sleep(s: float) -> None:
        waits.append(s)

    batch = [{"event_id": "e1"}]
    assert await apply_until_done(apply, batch, "batch", sleep) == "done"
    assert calls == [batch] * 4
    assert waits == [0.05, 0.1, 0.2]


async def test_apply_lets_a_bug_through() -> None:
    async def apply(events):
        raise KeyError("visitor_id")

    with pytest.raises(KeyError):
        await apply_until_done(apply, [], "batch")
