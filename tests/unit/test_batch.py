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


async def test_out_of_memory_is_retried_counted_and_cleared() -> None:
    from redis.exceptions import OutOfMemoryError, ResponseError

    meter = WorkerMeter()
    errors = [OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'."),
              ResponseError("OOM command not allowed when used memory > 'maxmemory'. script: x")]
    seen: list[bool] = []

    async def apply(events):
        seen.append(meter.store_full)
        if errors:
            raise errors.pop(0)
        return len(events)

    async def no_sleep(_: float) -> None:
        return None

    assert await apply_until_done(apply, [{"e": 1}], "batch", no_sleep, meter=meter) == 1
    assert seen == [False, True, True]  # full while refused, the same batch retried
    assert meter.store_full is False and meter.store_full_retries_total == 2
    assert meter.snapshot(0)["store_full_retries_total"] == 2


def test_memory_state_refuses_with_hysteresis() -> None:
    from engine.logic.memory import MemoryState, describe, refuse_writes

    mb = 1_000_000

    def st(used: int, writable: bool = True) -> MemoryState:
        return MemoryState(used * mb, 50 * mb, "noeviction", writable)

    assert refuse_writes(st(40), 0.95, False) is False
    assert refuse_writes(st(48), 0.95, False) is True  # 96 %
    assert refuse_writes(st(47), 0.95, True) is True  # still above 93 % once refusing
    assert refuse_writes(st(46), 0.95, True) is False
    assert refuse_writes(st(10, writable=False), 0.95, False) is True
    assert refuse_writes(MemoryState(10**12, 0, "noeviction", True), 0.95, False) is False
    assert describe(st(48, False)) == "writes refused: used 48.0 MB of 50.0 MB (noeviction)"
