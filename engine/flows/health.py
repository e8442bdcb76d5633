"""What the operator endpoints ask: are Redis and the broker reachable, is Redis full, what
do workers say.

Readiness is Redis and the broker: the hot paths need nothing else. The control plane
(PostgreSQL) is reported beside them but does not make the API unready: keys are cached, so
events and decisions keep flowing while it is away (sign-ins and key changes wait for it).

`WriteGate` looks at Redis's memory twice a second in the background (engine/store/memory.py)
and says whether ingest should stop acknowledging events (engine/logic/memory.py): while it
does, `/v1/events` and `/readyz` answer 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from engine import metrics
from engine.eventlog import EventLog
from engine.logic.memory import MemoryState, describe, refuse_writes
from engine.store.live import LiveStore
from engine.store.memory import MemoryProbe

log = logging.getLogger("kairos.health")


class WriteGate:
    """Is Redis too full to take what ingest would acknowledge? (`full`, refreshed every
    `every_s`; unknown -> not full: an unreachable Redis is the readiness check's to report)."""

    def __init__(self, probe: MemoryProbe, ratio: float, every_s: float = 0.5,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.probe = probe
        self.ratio = ratio
        self.every_s = every_s
        self.sleep = sleep
        self.full = False
        self.state: MemoryState | None = None
        self._task: asyncio.Task[None] | None = None

    async def check(self) -> bool:
        try:
            state = await self.probe.read()
        except Exception as exc:  # unreachable: /readyz says so through its own check
            log.debug("memory probe: %s", exc)
            return self.full
        full = refuse_writes(state, self.ratio, self.full)
        if full and not self.full:
            log.error("Redis is full (%s): /v1/events answers 503 until memory is freed or "
                      "maxmemory raised; the stream retries what it has", describe(state))
        elif self.full and not full:
            log.warning("Redis takes writes again (%s): accepting events", describe(state))
        self.state, self.full = state, full
        return full

    async def run(self) -> None:
        while True:
            await self.check()
            await self.sleep(self.every_s)

    async def start(self) -> None:
        await self.check()
        self._task = asyncio.create_task(self.run())

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


class Health:
    def __init__(self, redis: Any, log: EventLog, live: LiveStore,
                 gate: WriteGate | None = None, control: Any = None) -> None:
        self.redis = redis
        self.log = log
        self.live = live
        self.gate = gate
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
        if self.gate is not None and self.gate.state is not None:
            checks["redis_memory"] = f"full: {describe(self.gate.state)}" if self.gate.full \
                else "ok"
        return checks

    def store_lines(self) -> bytes:
        """Prometheus lines for Redis's memory and whether ingest refuses (for /metrics)."""
        gate = self.gate
        return metrics.store_lines(gate.state if gate else None, bool(gate and gate.full))

    async def workers(self) -> dict[str, Any]:
        """Each worker's own measurements ({} when Redis cannot be read)."""
        workers: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            workers = await self.live.workers()
        return workers
