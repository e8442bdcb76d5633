"""What the operator endpoints ask: are Redis and the broker reachable, what do workers say."""

from __future__ import annotations

import contextlib
from typing import Any

from engine.eventlog import EventLog
from engine.store.live import LiveStore


class Health:
    def __init__(self, redis: Any, log: EventLog, live: LiveStore) -> None:
        self.redis = redis
        self.log = log
        self.live = live

    async def checks(self) -> dict[str, str]:
        """`{"redis": "ok" | "unreachable: …", "kafka": "ok" | "unreachable"}`."""
        checks: dict[str, str] = {}
        try:
            await self.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"unreachable: {exc}"
        checks["kafka"] = "ok" if await self.log.ready() else "unreachable"
        return checks

    async def workers(self) -> dict[str, Any]:
        """Each worker's own measurements ({} when Redis cannot be read)."""
        workers: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            workers = await self.live.workers()
        return workers
