"""What one worker process holds, and the steps the consumer and the app's timers call.

`Worker` makes the Redis client, the profile store, the hooks (streams/hooks) and the
`Applier` once, when the consumer starts; applies batches of records until they are done
(skipping, and counting, a record that cannot be applied: streams/batch.py); claims the
partitions it is assigned and lets go of revoked ones; reports its own measurements (rate, lag,
freshness) to Redis each second, and saves the per-partition models on a timer, when
partitions are revoked and at a clean stop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from engine.settings import Settings
from engine.store.client import new_client
from engine.store.fences import NONE
from engine.store.live import LiveStore
from engine.store.profiles import ProfileStore
from engine.store.writes import Emit
from streams.applier import Ahead, Applier, BatchResult, Lost, Rewind
from streams.batch import apply_isolating, by_record, decode_batch, say_retry, transient
from streams.hooks import Hooks, setup_hooks
from streams.metrics import WorkerMeter
from streams.plan import DECISIONS_MARK_BASE

log = logging.getLogger("kairos.worker")

#: Records skipped one after the other without any applying in between: past this it is not a
#: bad record but something wrong with every record (a bug, a Redis that refuses every write),
#: and the worker stops rather than skip the whole stream.
MAX_SKIPS_IN_A_ROW = 20


class TooManySkips(RuntimeError):
    pass


def chunks(events: Sequence[dict[str, Any]], limit: int) -> list[list[dict[str, Any]]]:
    """The events in parts of at most `limit` (whole records; a bigger record is one part)."""
    if len(events) <= limit:  # one part (most batches): not regrouped record by record
        return [list(events)] if events else []
    out: list[list[dict[str, Any]]] = []
    cur: list[dict[str, Any]] = []
    for rec in by_record(events):
        if cur and len(cur) + len(rec) > limit:
            out.append(cur)
            cur = []
        cur.extend(rec)
    if cur:
        out.append(cur)
    return out


def _overlapping(ap: Applier, part: Sequence[dict[str, Any]], nxt: Ahead
                 ) -> Callable[[Sequence[dict[str, Any]]], Awaitable[BatchResult]]:
    """`ap.apply` for `part` that plans `nxt` while the commit runs (not for the halves of a
    part that failed: those are applied on their own)."""
    def apply(evs: Sequence[dict[str, Any]]) -> Awaitable[BatchResult]:
        return ap.apply(evs, ahead=nxt if evs is part else None)
    return apply


class Worker:
    def __init__(self, settings: Settings, redis_url: str, worker_id: str,
                 emit: Callable[[Sequence[Emit]], Awaitable[None]], *,
                 acked: Callable[[], Awaitable[None]] | None = None,
                 meter: WorkerMeter | None = None) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.worker_id = worker_id
        self.emit = emit
        self.acked = acked  # waits for the acknowledgements of what `emit` sent, if given
        self.meter = meter if meter is not None else WorkerMeter()
        self.redis: Any = None
        self.live: LiveStore | None = None
        self.store: ProfileStore | None = None
        self._applier: Applier | None = None
        self._lock = asyncio.Lock()
        self._skips_in_a_row = 0

    async def applier(self) -> Applier:
        async with self._lock:
            if self._applier is None:
                client = new_client(self.redis_url)
                self.redis = client
                self.live = LiveStore(client, self.settings.group_id)
                parts = max(1, self.settings.partitions)

                def share() -> float:
                    # of the events topic's partitions: the shared tables' writers split their
                    # trim margin by it (engine/store/writes.py `Upkeep`)
                    held = sum(1 for p in store.fences.held if p < DECISIONS_MARK_BASE)
                    return min(1.0, held / parts)

                store = self.store = ProfileStore(client, self.settings.profile_ttl_ms,
                                                  self.settings.group_id, share)

                def epoch_of(p: int) -> int | None:
                    held = store.fences.held.get(p)
                    return held.epoch if held is not None else None

                hooks = await setup_hooks(self.settings, client, epoch_of=epoch_of)
                self._applier = Applier(store, self.settings.affinity, hooks=hooks,
                                        emit=self.emit)
            return self._applier

    async def apply_records(self, records: Sequence[Any], base: Mapping[str, int],
                            more: Callable[[], Awaitable[Sequence[Any]]] | None = None
                            ) -> BatchResult:
        """Decode and apply one batch of Kafka records (of the topics in `base`: topic -> mark
        base), retrying while Redis is away. Raises `Lost` and `Rewind` (streams/applier.py).

        `more()` (the consumer's: records fetched since, without waiting) chains batches: before
        the last part's commit it is asked for what has arrived, which becomes the next part,
        planned while that commit runs (`commit_ahead`), until nothing more has arrived or
        `batch_chain_s` has passed. One-event records make one part per batch, so without the
        chain the worker waited for every commit (measured in the soak: worker + Valkey
        busy one after the other, the knee below 1,000 events/s). The caller keeps the records
        `more` returned: they are applied (or raised for) with this batch.

        The garbage collector is paused while a batch is applied: the batch's events, profiles,
        ops and tables (~50 container objects per event) are all alive until its commit, so
        every young-generation pass during the batch walked them all again (10-35 µs of CPU per
        event, measured by bench/stream_profile.py). Refcounting frees them when the batch is
        done; the cycles among them are collected by the next pass after it."""
        if not gc.isenabled():
            return await self._apply_records(records, base, more)
        gc.disable()
        try:
            return await self._apply_records(records, base, more)
        finally:
            gc.enable()

    def _decode(self, records: Sequence[Any], base: Mapping[str, int]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        by_topic: dict[str, list[Any]] = {}
        for r in records:
            by_topic.setdefault(r.topic, []).append(r)
        for topic, recs in by_topic.items():
            events += decode_batch(recs, base[topic], self.meter)
        return events

    def _chain(self, j: int, parts: list[list[dict[str, Any]]],
               more: Callable[[], Awaitable[Sequence[Any]]], base: Mapping[str, int]
               ) -> Callable[[], Awaitable[list[dict[str, Any]] | None]]:
        """The part after `parts[j]` (the last one), asked for when its commit is about to be
        sent: what `more()` has fetched by then, decoded, becomes the next parts."""
        async def fetch() -> list[dict[str, Any]] | None:
            if len(parts) > j + 1:  # asked again (the commit was retried): the same part
                return parts[j + 1]
            extra = await more()
            if not extra:
                return None
            self.meter.chained_total += 1
            parts.extend(chunks(self._decode(extra, base), self.settings.commit_max_events))
            return parts[j + 1] if len(parts) > j + 1 else None
        return fetch

    async def _apply_records(self, records: Sequence[Any], base: Mapping[str, int],
                             more: Callable[[], Awaitable[Sequence[Any]]] | None = None
                             ) -> BatchResult:
        ap = self._applier or await self.applier()
        limit = self.settings.commit_max_events
        total = BatchResult()
        parts = chunks(self._decode(records, base), limit)
        chain_until = time.monotonic() + self.settings.batch_chain_s
        j = 0
        try:
            while j < len(parts):
                part = parts[j]
                nxt: Ahead | None = None
                if not self.settings.commit_ahead:
                    pass
                elif j + 1 < len(parts):
                    nxt = parts[j + 1]
                elif more is not None and time.monotonic() < chain_until:
                    nxt = self._chain(j, parts, more, base)
                apply = ap.apply if nxt is None else _overlapping(ap, part, nxt)
                j += 1
                applied = duplicates = 0
                for res in await apply_isolating(apply, part, "batch", self._skipped,
                                                 passthrough=(Lost, Rewind, TooManySkips),
                                                 meter=self.meter):
                    self._skips_in_a_row = 0
                    applied += res.applied
                    duplicates += res.duplicates
                    total.unstored += res.unstored + res.erased
                    total.dropped_ops += res.dropped_ops
                total.applied += applied
                total.duplicates += duplicates
                # each record's age when its part is in (a chain's first parts are in before
                # its last one)
                now = time.time()
                sent = {(e["_p"], e["_o"]): e["_t"] for e in part}
                self.meter.record(applied, duplicates, [now - t / 1000.0 for t in sent.values()])
        finally:
            ap.forget_ahead()
        self.meter.unstored_total += total.unstored
        self.meter.dropped_ops_total += total.dropped_ops
        return total

    def _skipped(self, events: Sequence[Any], exc: BaseException) -> None:
        mark = (events[0].get("_p"), events[0].get("_o")) if events else None
        self._skips_in_a_row += 1
        if self._skips_in_a_row > MAX_SKIPS_IN_A_ROW:
            raise TooManySkips(f"{self._skips_in_a_row} records in a row failed on their own, "
                               f"the last at (partition, offset) {mark}: {exc!r}") from exc
        self.meter.bad_records += 1
        log.error("skipping a record that cannot be applied (partition, offset %s): %r", mark, exc)

    async def assigned(self, partitions: set[int]) -> dict[int, int]:
        """Claim newly assigned partitions (waiting while Redis is away); returns what Redis
        has applied of each (partition -> offset of the last record applied, where known)."""
        ap = self._applier or await self.applier()
        delay = 0.1
        while True:
            try:
                held = await ap.fences.claim(partitions)
                break
            except Exception as exc:
                if not transient(exc):
                    raise
                # a full Redis refuses the claim too: named as the batches' retries name it
                say_retry(exc, "partition claim", delay, self.meter)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if self.meter.store_full:
            self.meter.store_full = False
            log.warning("Redis takes the worker's writes again")
        return {p: h.applied for p, h in held.items() if h.applied != NONE}

    async def flush_emits(self) -> None:
        """Wait until what the commits so far emitted is acknowledged (before offsets are
        committed, and when partitions go)."""
        if self.acked is not None:
            await self.acked()

    async def revoked(self, partitions: set[int]) -> None:
        hooks = self.hooks
        if hooks is not None:
            try:
                await hooks.revoked({p for p in partitions if p < DECISIONS_MARK_BASE})
            except Exception as exc:
                if not transient(exc):
                    raise
                log.warning("could not snapshot the models of revoked partitions: %s", exc)
        if self.store is not None:
            self.store.fences.forget(partitions)

    async def report(self, lag: int) -> None:
        """This worker's measurements, for /metrics and the dashboard (best effort)."""
        if self.live is None:
            return
        snapshot = self.meter.snapshot(lag)
        try:
            await self.live.report_worker(self.worker_id, snapshot)
        except Exception as exc:  # pragma: no cover - reporting is best effort
            log.debug("could not report worker stats: %s", exc)

    @property
    def hooks(self) -> Hooks | None:
        return self._applier.hooks if self._applier is not None else None  # type: ignore[return-value]

    async def snapshot_models(self, why: str = "") -> int | None:
        """Per-partition models (online CF) to Redis, so the next owner of a partition resumes."""
        if (hooks := self.hooks) is None:
            return None
        try:
            return await hooks.snapshot()
        except Exception as exc:
            if not transient(exc):
                raise
            log.warning("could not snapshot the models%s: %s", why, exc)
            return None
