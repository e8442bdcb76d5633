"""Live numbers, made once per API process: traffic counters and what is trending.

`LiveStats` counts into the current second in memory (`add`, `observe`), flushes finished
seconds to Redis once a second (one pipeline) and keeps the last 15 minutes of the merged
per-second hashes (all processes + the stream) in memory, refreshed once a second
(engine.logic.livestats.LiveWindow). Any number of dashboards read that memory: O(1) Redis
round trips per second per process.

`Trending` answers GET /v1/stats/trending and the dashboard's "hot now": the forward-decayed
tables the stream keeps, two epochs merged, one pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from engine.logic.livestats import LiveWindow, SecondCounters
from engine.logic.trending import decay, merge
from engine.store.live import LiveStore
from engine.store.reco_read import RecoReader

log = logging.getLogger("kairos.stats")


class LiveStats:
    def __init__(self, store: LiveStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.local = SecondCounters()
        self.window = LiveWindow()
        self._task: asyncio.Task[None] | None = None

    def add(self, name: str, n: int = 1, now: float | None = None) -> None:
        self.local.add(int(self.clock() if now is None else now), name, n)

    def observe(self, hist: str, seconds: float, now: float | None = None) -> None:
        self.local.observe(int(self.clock() if now is None else now), hist, seconds)

    async def flush(self, now: float) -> None:
        done = self.local.take(before=int(now))
        if done:
            await self.store.add(done)

    async def refresh(self, now: float) -> None:
        """Re-read the last few seconds (late writers) and fill gaps since the last refresh."""
        wanted = self.window.to_read(now)
        counters, workers = await self.store.read(wanted)
        self.window.update(wanted, counters, workers)

    def snapshot(self, window: int, now: float | None = None) -> dict[str, Any]:
        return self.window.snapshot(window, self.clock() if now is None else now)

    async def run(self) -> None:
        while True:
            now = self.clock()
            try:
                await self.flush(now)
                await self.refresh(now)
            except Exception as exc:  # keep counting while Redis is away
                log.debug("live stats: %s", exc)
            await asyncio.sleep(1.0 - (self.clock() % 1.0) + 0.05)

    async def start(self) -> None:
        with contextlib.suppress(Exception):
            await self.refresh(self.clock())
        self._task = asyncio.create_task(self.run())

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        with contextlib.suppress(Exception):
            await self.flush(self.clock() + 2)


class Trending:
    def __init__(self, reader: RecoReader) -> None:
        self.reader = reader

    async def top(self, dim: str, half_life: str, k: int, now_ms: int) -> dict[str, Any]:
        """`{"dim", "half_life", "items": [{"key", "score"}]}`: the top `k` now."""
        tables = await self.reader.trending(half_life, dim, decay(half_life).read_factors(now_ms), k)
        return {"dim": dim, "half_life": half_life,
                "items": [{"key": key, "score": round(s, 4)} for key, s in merge(tables, k)]}
