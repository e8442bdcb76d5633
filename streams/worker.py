"""What one worker process holds, and the steps faust's agents and timers call (streams/app.py).

`Worker` makes the Redis client, the hooks (streams/hooks) and the `Applier` once, when the
first agent starts (both agents share them); applies batches until they are done, reports its
own measurements (rate, lag, freshness) to Redis each second, and saves the per-partition
models on a timer, when partitions are revoked and at a clean stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from engine.settings import Settings
from engine.store.live import LiveStore
from engine.store.profiles import ProfileStore, new_client
from engine.store.writes import Emit
from streams.applier import Applier, BatchResult
from streams.batch import UNAVAILABLE, apply_until_done, decode_batch
from streams.hooks import Hooks, setup_hooks
from streams.metrics import WorkerMeter

log = logging.getLogger("kairos.worker")


class Worker:
    def __init__(self, settings: Settings, redis_url: str, worker_id: str,
                 emit: Callable[[Sequence[Emit]], Awaitable[None]]) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.worker_id = worker_id
        self.emit = emit
        self.meter = WorkerMeter()
        self.redis: Any = None
        self.live: LiveStore | None = None
        self._applier: Applier | None = None
        self._lock = asyncio.Lock()

    async def applier(self) -> Applier:
        async with self._lock:  # two agents share one Applier
            if self._applier is None:
                client = new_client(self.redis_url)
                self.redis = client
                self.live = LiveStore(client, self.settings.group_id)
                hooks = await setup_hooks(self.settings, client)
                self._applier = Applier(ProfileStore(client, self.settings.profile_ttl_ms),
                                        self.settings.affinity, hooks=hooks, emit=self.emit)
            return self._applier

    async def apply(self, batch: Sequence[Any], partition_base: int, what: str) -> BatchResult:
        """Decode and apply one batch of faust events, retrying while Redis is away."""
        ap = self._applier or await self.applier()
        return await apply_until_done(ap.apply, decode_batch(batch, partition_base, self.meter),
                                      what, meter=self.meter)

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
        except UNAVAILABLE as exc:
            log.warning("could not snapshot the models%s: %s", why, exc)
            return None

    async def revoked(self, partitions: set[int]) -> None:
        if (hooks := self.hooks) is None:
            return
        try:
            await hooks.revoked(partitions)
        except UNAVAILABLE as exc:
            log.warning("could not snapshot the models of revoked partitions: %s", exc)
