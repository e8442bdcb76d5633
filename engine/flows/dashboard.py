"""The live dashboard's feed: one snapshot per second per process, for every open dashboard.

`DashboardFeed` builds, once a second, the snapshot that every open `GET /v1/stats/stream`
(Server-Sent Events) receives: traffic from `LiveStats`, segment sizes (one HGETALL), and,
while at least one dashboard listens, trending and campaign stats, asked of the same flows
the endpoints use. Each snapshot is serialised once, whatever the number of listeners.
and, from the learner (`ModelStore`), its newest drift events. `SegmentRates` and `ArmHistory`
(engine.logic.livestats) and `describe_drift` (engine.logic.decisions.monitor) are the pure
parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from engine.confighub import ConfigHub
from engine.flows.campaigns import Campaigns, StatsUnavailable, UnknownCampaign
from engine.flows.stats import LiveStats, Trending
from engine.logic.decisions.monitor import describe_drift
from engine.logic.livestats import ArmHistory, SegmentRates
from engine.logic.trending import HALF_LIVES
from engine.store.decide_read import DecideReader
from engine.store.learning import ModelStore

log = logging.getLogger("kairos.stats")

TRENDING_DIMS = ("category", "brand", "item")
FULL_WINDOW_S = 300  # the traffic series a dashboard gets when it connects
TAIL_S = 5  # then only the last seconds (late writers revise them) each second
RATE_WINDOW_S = 10  # rates and latencies shown as "now"
DRIFT_SHOWN = 20  # the newest drift events in every snapshot


def sse(data: Any, event: str = "snapshot") -> bytes:
    """One Server-Sent Events frame."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class DashboardFeed:
    """The one snapshot per second per process that every open dashboard stream receives."""

    def __init__(self, live: LiveStats, trending: Trending, campaigns: Campaigns, hub: ConfigHub,
                 reader: DecideReader, max_listeners: int = 100,
                 learning: ModelStore | None = None) -> None:
        self.live = live
        self.trending_flow = trending
        self.campaigns_flow = campaigns
        self.hub = hub
        self.reader = reader
        self.learning = learning
        self.drift: list[dict[str, Any]] | None = None
        self.segments = SegmentRates()
        self.history = ArmHistory()
        self.listeners = 0  # admitted streams (`admit` / `release`)
        self.max_listeners = max_listeners
        self.trending: dict[str, dict[str, Any] | None] = {}
        self.campaigns: list[dict[str, Any]] | None = None
        self.delta: bytes = b""
        self.seq = 0
        self.closed = False
        self._tick = asyncio.Event()
        self._full: tuple[int, bytes] | None = None
        self._primed = False
        self._task: asyncio.Task[None] | None = None

    async def refresh_segments(self, now: float) -> None:
        self.segments.observe(now, await self.reader.segment_sizes())

    def segment_rows(self, now: float) -> list[dict[str, Any]]:
        config = self.hub.decisions
        known = {s.id: s.name for s in config.segments.values()} if config else {}
        rep = self.segments.report(now)
        ids = list(known) + [sid for sid in rep if sid not in known]
        zero = 0.0 if len(self.segments.samples) > 1 else None  # watched, never had members
        empty = {"size": 0, "joined_per_min": zero, "left_per_min": zero, "net_per_min": zero}
        return [{"id": sid, "name": known.get(sid, sid), **rep.get(sid, empty)} for sid in ids]

    async def refresh_trending(self) -> None:
        async def one(dim: str, hl: str) -> tuple[str, dict[str, Any] | None]:
            body = await self.trending_flow.top(dim, hl, 10, int(time.time() * 1000))
            return f"{dim}:{hl}", body

        got = await asyncio.gather(*(one(d, h) for d in TRENDING_DIMS for h in HALF_LIVES))
        self.trending = dict(got)

    async def refresh_campaigns(self, now: float) -> None:
        config = self.hub.decisions
        rows = []
        for c in config.campaigns.values() if config else ():
            stats: dict[str, Any] | None
            try:
                stats = await self.campaigns_flow.stats(c.id)
            except (UnknownCampaign, StatsUnavailable):
                stats = None
            if stats is not None:
                self.history.observe(now, c.id, stats.get("arms", []))
            rows.append({"id": c.id, "name": c.name or c.id, "status": c.status,
                         "zones": list(c.zones), "policy": c.policy.kind, "stats": stats})
        self.history.forget_except({r["id"] for r in rows})
        self.campaigns = rows

    async def refresh_drift(self) -> None:
        """The learner's newest drift events, described (newest first)."""
        if self.learning is None:
            return
        config = self.hub.decisions
        policies = {c.id: c.policy.kind for c in config.campaigns.values()} if config else {}
        events = await self.learning.drift_events(DRIFT_SHOWN)
        self.drift = [describe_drift(e, policies) for e in reversed(events)]

    def build(self, now: float, full: bool) -> dict[str, Any]:
        rates = self.live.snapshot(RATE_WINDOW_S, now)
        series = self.live.snapshot(FULL_WINDOW_S if full else TAIL_S, now)["series"]
        return {
            "kind": "full" if full else "delta",
            "seq": self.seq,
            "now": int(now * 1000),
            "series": series,
            "rates": rates["rates"],
            "latency_ms": rates["latency_ms"],
            "workers": rates["workers"],
            "trending": self.trending,
            "segments": self.segment_rows(now),
            "campaigns": self.campaigns,
            "drift": self.drift,
            "campaign_history": {c["id"]: self.history.series(c["id"], None if full else 1)
                                 for c in self.campaigns or []},
        }

    def full(self, now: float) -> bytes:
        """The snapshot a new listener gets first (built at most once per tick)."""
        if self._full is None or self._full[0] != self.seq:
            self._full = (self.seq, sse(self.build(now, full=True)))
        return self._full[1]

    async def refresh_listened(self, now: float) -> None:
        """What only dashboards need: trending, campaigns and drift events (skipped while
        nobody listens)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.refresh_trending(), 0.8)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.refresh_campaigns(now), 0.8)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.refresh_drift(), 0.5)
        self._primed = True

    async def tick(self, now: float) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.refresh_segments(now), 0.5)
        if self.listeners:
            await self.refresh_listened(now)
        self.seq += 1
        if self.listeners:
            self.delta = sse(self.build(now, full=False))
        old, self._tick = self._tick, asyncio.Event()
        old.set()

    async def run(self) -> None:
        while not self.closed:
            # just after LiveStats has refreshed the second that ended
            await asyncio.sleep(1.0 - (time.time() % 1.0) + 0.15)
            try:
                await self.tick(time.time())
            except Exception as exc:  # pragma: no cover - keep serving the last snapshot
                log.debug("dashboard feed: %s", exc)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    def admit(self) -> bool:
        """Take one of the process's `max_listeners` places (False when they are all taken);
        whoever got one gives it back with `release` however the stream ends."""
        if self.listeners >= self.max_listeners:
            return False
        self.listeners += 1
        return True

    def release(self) -> None:
        self.listeners = max(0, self.listeners - 1)

    async def listen(self) -> AsyncIterator[bytes]:
        """One (admitted) dashboard's stream: the full snapshot, then each second's delta."""
        yield b"retry: 2000\n\n"
        if not self._primed:  # first listener since start: fill the caches now
            await self.refresh_listened(time.time())
        yield self.full(time.time())
        while not self.closed:
            ev = self._tick
            await ev.wait()
            if self.closed:
                break
            yield self.delta

    async def close(self) -> None:
        self.closed = True
        self._tick.set()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
