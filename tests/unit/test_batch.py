"""streams/batch.py without a broker: decoding records, retrying while Redis is away, and
isolating a record that cannot be applied."""

from __future__ import annotations

from dataclasses import dataclass

import msgpack
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ResponseError

from engine.logic.events import Event, encode_events
from streams.batch import (
    apply_isolating,
    apply_until_done,
    by_record,
    decode_batch,
    say_retry,
    transient,
)
from streams.metrics import WorkerMeter
from streams.plan import DECISIONS_MARK_BASE


@dataclass
class Record:  # the fields of an aiokafka ConsumerRecord that decode_batch reads
    topic: str
    partition: int
    offset: int
    timestamp: int  # ms
    value: bytes


def record(partition: int, offset: int, *events: Event, ts: int = 1_700_000_000_500) -> Record:
    return Record("events", partition, offset, ts, encode_events(list(events)))


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
    bad = Record("events", 0, 9, 1, b"\xc1 not msgpack")
    not_a_list = Record("events", 0, 10, 1, msgpack.packb({"event_id": "x"}))
    got = decode_batch([bad, not_a_list, record(0, 11, ev(1))], 0, meter)
    assert [e["event_id"] for e in got] == ["e1"] and meter.bad_records + meter.bad_events == 2


def test_events_that_do_not_fit_the_spec_are_skipped_and_their_siblings_kept() -> None:
    """A record written straight to the topic, not by the API: each event is checked again."""
    meter = WorkerMeter()
    value = msgpack.packb([
        {"event_id": "ok", "type": "page_view", "visitor_id": "v", "ts": 5},
        {"event_id": "no-visitor", "type": "page_view", "ts": 5},
        {"event_id": "ts-text", "type": "page_view", "visitor_id": "v", "ts": "yesterday"},
        {"event_id": "bad-items", "type": "purchase", "visitor_id": "v", "ts": 5, "items": 7},
    ])
    got = decode_batch([Record("events", 1, 3, 1, value)], 0, meter)
    assert [e["event_id"] for e in got] == ["ok"]
    assert meter.bad_events == 3 and meter.bad_records == 0


async def test_apply_retries_the_same_batch_while_redis_is_unreachable() -> None:
    calls: list[list[dict]] = []
    waits: list[float] = []
    failures = [RedisConnectionError("down"), OSError("refused"), TimeoutError(),
                OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
                ResponseError("Error running script: OOM command not allowed")]

    async def apply(events):
        calls.append(list(events))
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return "done"

    async def sleep(s: float) -> None:
        waits.append(s)

    batch = [{"event_id": "e1"}]
    assert await apply_until_done(apply, batch, "batch", sleep) == "done"
    assert calls == [batch] * 6
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.8]


def test_what_counts_as_redis_being_away() -> None:
    assert transient(RedisConnectionError("x")) and transient(OSError())
    assert not transient(ResponseError("WRONGTYPE Operation against a key"))
    assert not transient(KeyError("visitor_id"))


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


def _events(*marks: tuple[int, int]) -> list[dict]:
    return [{"event_id": f"e{p}.{o}", "_p": p, "_o": o} for p, o in marks]


def test_events_group_by_record() -> None:
    evs = _events((0, 1), (0, 1), (1, 5), (0, 2))
    assert [len(r) for r in by_record(evs)] == [2, 1, 1]


async def test_a_record_that_cannot_be_applied_is_isolated_and_skipped() -> None:
    applied: list[str] = []
    skipped: list[list[str]] = []

    async def apply(events):
        if any(e["event_id"] == "e0.3" for e in events):
            raise ValueError("msgpack nesting too deep")
        applied.extend(e["event_id"] for e in events)
        return len(events)

    evs = _events((0, 1), (0, 2), (0, 3), (0, 3), (1, 1), (1, 2), (0, 4))
    got = await apply_isolating(apply, evs, "batch",
                                lambda es, exc: skipped.append([e["event_id"] for e in es]))
    assert skipped == [["e0.3", "e0.3"]]
    assert sorted(applied) == sorted(e["event_id"] for e in evs if e["event_id"] != "e0.3")
    assert sum(got) == 5


async def test_isolating_passes_some_exceptions_through() -> None:
    class Stop(Exception):
        pass

    async def apply(events):
        raise Stop()

    with pytest.raises(Stop):
        await apply_isolating(apply, _events((0, 1), (0, 2)), "batch", lambda *a: None,
                              passthrough=(Stop,))


async def test_a_part_is_applied_with_the_next_one_ahead_but_its_halves_are_not() -> None:
    """streams/worker.py: the part the worker applies plans the next part ahead; when it fails
    and is split in halves to find a bad record, the halves apply on their own."""
    from streams.worker import _overlapping

    calls: list[tuple[int, int | None]] = []

    class Ap:
        async def apply(self, evs, ahead=None):  # type: ignore[no-untyped-def]
            calls.append((len(evs), None if ahead is None else len(ahead)))
            if len(evs) == 4:
                raise ValueError("a bad record in this part")
            return len(evs)

    part = [{"_p": 0, "_o": i} for i in range(4)]
    nxt = [{"_p": 0, "_o": i} for i in range(4, 7)]
    got = await apply_isolating(_overlapping(Ap(), part, nxt), part, "batch",  # type: ignore[arg-type]
                                lambda evs, exc: None)
    assert got == [2, 2]
    assert calls == [(4, 3), (2, None), (2, None)]


def test_a_full_redis_is_named_once_and_counted_whatever_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    meter = WorkerMeter()
    oom = OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
    with caplog.at_level("WARNING", logger="kairos.worker"):
        say_retry(oom, "partition claim", 0.1, meter)
        say_retry(oom, "batch", 0.2, meter)
        say_retry(RedisConnectionError("refused"), "batch", 0.4, meter)
    named = [r for r in caplog.records if "Redis is out of memory" in r.getMessage()]
    assert len(named) == 1 and "partition claim" in named[0].getMessage()
    assert meter.store_full and meter.store_full_retries_total == 2
    assert "redis unavailable" in caplog.records[-1].getMessage()


def test_chunks_are_whole_records_of_at_most_the_limit():
    from streams.worker import chunks

    events = [{"_p": 0, "_o": o, "i": i} for i, o in enumerate([0, 0, 1, 2, 2, 2, 3, 4, 4])]
    assert chunks(events, 100) == [events]  # all of it fits: one part
    assert chunks([], 3) == []
    parts = chunks(events, 3)
    assert [e for part in parts for e in part] == events
    assert [[e["_o"] for e in part] for part in parts] == [[0, 0, 1], [2, 2, 2], [3, 4, 4]]
    assert [len(p) for p in chunks(events, 2)] == [2, 1, 3, 1, 2]  # a bigger record: one part
