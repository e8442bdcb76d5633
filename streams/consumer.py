"""The Kafka edge of the worker: the events and decisions topics read in bulk.

faust delivers each record through its stream machinery at ~85 µs of CPU per record
(measured: an agent that takes batches and does nothing, 40,000 one-event records), which is
most of a one-event record's budget; aiokafka's `getmany` hands over whole fetches at ~1-2 µs
per record. So the worker is a faust app (its CLI, lifecycle, timers and producer) whose one
task runs `BulkConsumer`: an aiokafka consumer of the group with manual commits.

- A batch is what the consumer has fetched, topped up for at most `batch_within_s` while it is
  below `batch_max` records: small batches when caught up, large ones when behind. While its
  last part commits, what has been fetched since goes on as its next part (planned during that
  commit: `Worker.apply_records`'s `more`), for at most `batch_chain_s`.
- Offsets are committed only after a batch is applied (at most every `commit_interval_s`, and
  when partitions are revoked or the worker stops), and after what the applied batches emitted
  is acknowledged (`Worker.flush_emits`: the worker does not wait for it after each commit).
- When partitions are assigned, the worker claims them in Redis (engine/store/fences.py: a
  newer epoch, so a stalled previous owner's commits are refused), and each partition resumes
  from what Redis has applied when that is behind the committed offset (Redis restarted from
  an AOF that lost its last second).
- `Lost` (a newer owner holds a partition): its records are dropped here and the partition is
  paused until the group reassigns it. `Rewind` (Redis rolled back under the worker): the
  batch's partitions are read again from where Redis is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from engine.eventlog import ensure_topics
from engine.settings import Settings
from streams.applier import Lost, Rewind
from streams.plan import DECISIONS_MARK_BASE

log = logging.getLogger("kairos.worker")


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: BulkConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.owner.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.owner.assigned(set(assigned))


class BulkConsumer:
    def __init__(self, settings: Settings, bootstrap: str, worker: Any,
                 commit_interval_s: float = 0.5) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.worker = worker
        self.base = {settings.events_topic: 0, settings.decisions_topic: DECISIONS_MARK_BASE}
        self.commit_interval_s = commit_interval_s
        self.consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._pending: dict[TopicPartition, int] = {}  # offsets to commit
        self._last_commit = 0.0
        self._stopping = False
        self._done = asyncio.Event()
        self.positions: dict[tuple[str, int], int] = {}  # next offset to apply, per partition

    def mark(self, tp: TopicPartition) -> int:
        """The partition's id in the redelivery marks and fences (decisions apart)."""
        return self.base[tp.topic] + tp.partition

    def _tp(self, mark: int) -> TopicPartition:
        if mark >= DECISIONS_MARK_BASE:
            return TopicPartition(self.settings.decisions_topic, mark - DECISIONS_MARK_BASE)
        return TopicPartition(self.settings.events_topic, mark)

    async def run(self) -> None:
        s = self.settings
        delay = 0.2
        while True:  # the topics exist before the group forms (an unknown topic has no partitions)
            try:
                await ensure_topics(self.bootstrap, {t: s.partitions for t in self.base}, 10.0)
                break
            except (KafkaError, OSError) as exc:
                log.warning("could not make sure the topics exist (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        c = self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=s.group_id,
            client_id=f"kairos-{self.worker.worker_id}", enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=s.batch_max,
            fetch_max_wait_ms=s.fetch_max_wait_ms, session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_partition_fetch_bytes=4 << 20, metadata_max_age_ms=30_000,
        )
        c.subscribe(list(self.base), listener=_Listener(self))
        await c.start()
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping:
                got = await c.getmany(timeout_ms=500, max_records=s.batch_max)
                records = [m for msgs in got.values() for m in msgs]
                if records:
                    deadline = loop.time() + s.batch_within_s
                    while len(records) < s.batch_max and not self._stopping:
                        left = deadline - loop.time()
                        if left <= 0:
                            break
                        more = await c.getmany(timeout_ms=max(1, int(left * 1000)),
                                               max_records=s.batch_max - len(records))
                        records += [m for msgs in more.values() for m in msgs]
                    await self.apply(records)
                if self._pending and time.monotonic() - self._last_commit >= self.commit_interval_s:
                    await self.commit()
        finally:
            try:
                with contextlib.suppress(IllegalStateError):
                    await self.revoked(set(c.assignment()))  # commit, snapshot, let go
            finally:
                await c.stop()
                self._done.set()

    async def stop(self, timeout: float = 20.0) -> None:
        """Finish the batch in flight, commit, let go of the partitions, leave the group."""
        self._stopping = True
        if self.consumer is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._done.wait(), timeout)

    async def apply(self, records: Sequence[Any]) -> None:
        """Apply one batch (records of several partitions, in order per partition)."""
        assert self.consumer is not None
        async with self._lock:
            # Records fetched before a rebalance that took their partition away (a batch
            # topped up across a stall or a revocation) belong to the next owner, who reads
            # them from the committed offset: applying them here would find no claim, and
            # would mark offsets as pending for a partition this worker no longer holds.
            held = self._held()
            if any((r.topic, r.partition) not in held for r in records):
                dropped = len(records)
                records = [r for r in records if (r.topic, r.partition) in held]
                log.info("dropped %d records of partitions revoked since they were fetched",
                         dropped - len(records))
            records = list(records)

            async def more() -> list[Any]:
                # what has been fetched since, without waiting: the worker plans it while the
                # batch's last commit runs, as the batch's next part (streams/worker.py)
                if self._stopping:
                    return []
                try:
                    got = await c.getmany(timeout_ms=0, max_records=self.settings.batch_max)
                except (IllegalStateError, KafkaError):
                    return []
                held = self._held()
                extra = [m for msgs in got.values() for m in msgs
                         if (m.topic, m.partition) in held]
                records.extend(extra)
                return extra

            c = self.consumer
            while records:
                try:
                    await self.worker.apply_records(records, self.base, more)
                except Lost as lost:
                    tps = [self._tp(m) for m in lost.partitions]
                    log.warning("partitions %s are held by a newer owner: not applying them here",
                                sorted(lost.partitions))
                    self.worker.meter.fenced_total += 1
                    with contextlib.suppress(IllegalStateError):
                        self.consumer.pause(*tps)
                    records[:] = [r for r in records if self.mark(_tp_of(r)) not in lost.partitions]
                    for tp in tps:
                        self._pending.pop(tp, None)
                    continue
                except Rewind as rw:
                    self.worker.meter.fenced_total += 1
                    first: dict[TopicPartition, int] = {}
                    for r in records:
                        first.setdefault(_tp_of(r), r.offset)
                    for tp, off in first.items():
                        to = rw.offsets.get(self.mark(tp), off)
                        log.warning("redis has applied %s only up to %s: reading from there",
                                    tp, to - 1)
                        with contextlib.suppress(IllegalStateError):
                            self.consumer.seek(tp, to)
                        self._pending.pop(tp, None)
                    return
                break
            for r in records:
                tp = _tp_of(r)
                self._pending[tp] = r.offset + 1
                self.positions[(tp.topic, tp.partition)] = r.offset + 1

    def _held(self) -> set[tuple[str, int]]:
        assert self.consumer is not None
        try:
            return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        except IllegalStateError:
            return set()

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        if self.consumer is None or not self._pending:
            return
        await self.worker.flush_emits()  # what the applied batches emitted is out first
        offsets = {tp: off for tp, off in self._pending.items() if only is None or tp in only}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            log.warning("could not commit offsets (%s): the next owner re-reads them, and "
                        "Redis's marks skip what was applied", exc)
        for tp in offsets:
            if self._pending.get(tp) == offsets[tp]:
                del self._pending[tp]
        self._last_commit = time.monotonic()

    async def revoked(self, tps: set[TopicPartition]) -> None:
        async with self._lock:  # the batch in flight finishes first
            await self.commit(tps)
            for tp in tps:
                self._pending.pop(tp, None)
                self.positions.pop((tp.topic, tp.partition), None)
            await self.worker.revoked({self.mark(tp) for tp in tps if tp.topic in self.base})

    async def assigned(self, tps: set[TopicPartition]) -> None:
        # The batch in flight finishes first, as on revocation: it was planned with the owner
        # epochs held before this claim, so were it to commit after the claim it would be
        # refused as stale and its partitions paused although this worker holds them now
        # (seen: a partition left paused until the next rebalance, its lag never back to 0).
        async with self._lock:
            await self._assigned(tps)

    async def _assigned(self, tps: set[TopicPartition]) -> None:
        assert self.consumer is not None
        tps = {tp for tp in tps if tp.topic in self.base}
        if not tps:
            return
        applied = await self.worker.assigned({self.mark(tp) for tp in tps})
        for tp in tps:
            with contextlib.suppress(IllegalStateError):
                self.consumer.resume(tp)
            a = applied.get(self.mark(tp))
            committed = await self.consumer.committed(tp)
            start = committed if committed is not None else 0
            if a is not None and (committed is None or a + 1 < committed):
                if committed is not None:
                    log.warning("redis has applied %s only up to offset %d, the group had "
                                "committed %d: resuming from redis", tp, a, committed - 1)
                self.consumer.seek(tp, a + 1)
                start = a + 1
            self.positions[(tp.topic, tp.partition)] = start

    def lag(self) -> int:
        """Records behind the high-water marks of the partitions this worker holds."""
        c = self.consumer
        if c is None:
            return 0
        lag = 0
        with contextlib.suppress(IllegalStateError):
            for tp in c.assignment():
                hw = c.highwater(tp)
                if hw is None:
                    continue
                pos = self.positions.get((tp.topic, tp.partition), hw)
                lag += max(0, hw - pos)
        return lag


def _tp_of(record: Any) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


def split_by_topic(records: Sequence[Any], base: Mapping[str, int]) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for r in records:
        out.setdefault(base[r.topic], []).append(r)
    return out
