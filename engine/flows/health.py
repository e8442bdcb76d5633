"""What the operator endpoints ask: are Redis and the broker reachable, what do workers say.

Readiness is Redis and the broker: the hot paths need nothing else. The control plane
(PostgreSQL) is reported beside them but does not make the API unready: keys are cached, so
events and decisions keep flowing while it is away (sign-ins and key changes wait for it)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from engine.eventlog import EventLog
from engine.store.live import LiveStore


class Health:
    def __init__(self, redis: Any, log: EventLog, live: LiveStore, control: Any = None) -> None:
        self.redis = redis
        self.log = log
        self.live = live
        self.control = control

    async def control_plane(self) -> str:
        if self.control is None:
            return "not configured"
        try:
            await asyncio.wait_for(self.control.ping(), 2.0)
            return "ok"
        except Exception as exc:
            return f"unreachable: {type(exc).__name__}"

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
