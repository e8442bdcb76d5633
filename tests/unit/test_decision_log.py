"""engine.eventlog.DecisionLog without a broker: how a flush groups the decision records of
many requests into one Kafka record per partition."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from engine.eventlog import DecisionLog
from engine.logic.decisions.select import Decision
from engine.logic.decisions.state import decision_record
from streams.batch import decode_batch
from streams.metrics import WorkerMeter
from streams.plan import DECISIONS_MARK_BASE

NOW = 1_700_000_000_000


@dataclass
class Record:  # the fields of an aiokafka ConsumerRecord that decode_batch reads
    topic: str
    partition: int
    offset: int
    timestamp: int
    value: bytes


def records(vid: str, n: int = 2) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        d = Decision(f"zone{i}", f"c{i}", "C", "a", False, 0.5, {"title": "t"})
        rec = decision_record(d, f"c{i}.a.{vid}{i}", vid, None, NOW, "web")
        out.append(rec)
    return out


def test_each_visitor_goes_where_the_producer_would_put_a_record_keyed_by_it() -> None:
    log = DecisionLog(None, "decisions")  # type: ignore[arg-type]  # no broker needed
    partitions = [0, 1, 2, 3]
    batch = [(f"v{i}".encode(), records(f"v{i}")) for i in range(200)]
    got = log.by_partition(batch, partitions)
    assert len({p for p, _ in got}) == len(got) <= 4  # one record per partition
    want = {f"v{i}": DefaultPartitioner()(f"v{i}".encode(), partitions, partitions)
            for i in range(200)}
    seen = []
    for part, value in got:
        events = decode_batch([Record("decisions", part, 7, NOW, value)], DECISIONS_MARK_BASE,
                              WorkerMeter())
        for e in events:
            assert want[e["visitor_id"]] == part
            assert (e["_p"], e["_o"]) == (DECISIONS_MARK_BASE + part, 7)
        seen += [e["event_id"] for e in events]
    assert sorted(seen) == sorted(r["event_id"] for _, rs in batch for r in rs)


def test_a_large_flush_is_split_into_records_of_a_bounded_size() -> None:
    log = DecisionLog(None, "decisions")  # type: ignore[arg-type]
    batch = [(b"same-visitor", records("v", 3)) for _ in range(400)]  # 1,200 records
    got = log.by_partition(batch, [0, 1])
    assert len({p for p, _ in got}) == 1
    sizes = [len(decode_batch([Record("decisions", p, 1, NOW, v)], 0, WorkerMeter()))
             for p, v in got]
    assert sizes == [DecisionLog.MAX_PER_RECORD, DecisionLog.MAX_PER_RECORD, 200]


def test_the_partitions_are_found_again_when_the_topic_changes() -> None:
    log = DecisionLog(None, "decisions")  # type: ignore[arg-type]
    key = b"v42"
    (first, _), = log.by_partition([(key, records("v42"))], [0])
    (again, _), = log.by_partition([(key, records("v42"))], list(range(8)))
    assert first == 0
    assert again == DefaultPartitioner()(key, list(range(8)), list(range(8)))
