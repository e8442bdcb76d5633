"""Live numbers for the dashboard and for anyone else (Grafana, a notebook): /v1/stats/….

`LiveStats` runs in each API process: it counts into the current second in memory, flushes
finished seconds to Redis once a second (one pipeline), and keeps the last 15 minutes of the
merged per-second hashes (all processes + the stream) in memory, refreshed once a second. Any
number of dashboards read that memory: O(1) Redis round trips per second per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine import keys
from engine.livestats import SecondCounters, by_prefix, histogram, merge, quantile
from engine.routes import error, json_response, svc
from engine.services import Services

log = logging.getLogger("kairos.stats")
WINDOW_S = 900
SECOND_TTL_MS = 3_600_000


class LiveStats:
    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.local = SecondCounters()
        self.seconds: deque[tuple[int, Counter[str]]] = deque(maxlen=WINDOW_S)
        self.workers: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, name: str, n: int = 1, now: float | None = None) -> None:
        self.local.add(int(time.time() if now is None else now), name, n)

    def observe(self, hist: str, seconds: float, now: float | None = None) -> None:
        self.local.observe(int(time.time() if now is None else now), hist, seconds)

    async def flush(self, now: float) -> None:
        done = self.local.take(before=int(now))
        if not done:
            return
        pipe = self.redis.pipeline(transaction=False)
        for second, counts in done.items():
            key = keys.live_second(second)
            for name, n in counts.items():
                pipe.hincrby(key, name, n)
            pipe.pexpire(key, SECOND_TTL_MS)
        await pipe.execute()

    async def refresh(self, now: float) -> None:
        """Re-read the last few seconds (late writers) and fill gaps since the last refresh."""
        current = int(now) - 1
        have = {s for s, _ in self.seconds}
        start = current - 4 if have else current - WINDOW_S + 1
        wanted = [s for s in range(start, current + 1)]
        pipe = self.redis.pipeline(transaction=False)
        for s in wanted:
            pipe.hgetall(keys.live_second(s))
        pipe.hgetall(keys.WORKERS)
        *hashes, workers = await pipe.execute()
        fresh = {s: Counter({k.decode(): int(v) for k, v in h.items()}) for s, h in zip(wanted, hashes, strict=True)}
        kept = [(s, c) for s, c in self.seconds if s < start]
        merged = kept + sorted(fresh.items())
        self.seconds = deque(merged[-WINDOW_S:], maxlen=WINDOW_S)
        self.workers = {k.decode(): orjson.loads(v) for k, v in workers.items()}

    async def run(self) -> None:
        while True:
            now = time.time()
            try:
                await self.flush(now)
                await self.refresh(now)
            except Exception as exc:  # keep counting while Redis is away
                log.debug("live stats: %s", exc)
            await asyncio.sleep(1.0 - (time.time() % 1.0) + 0.05)

    def snapshot(self, window: int, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        last = int(now) - 1
        series = [(s, c) for s, c in self.seconds if last - window < s <= last]
        total = merge(c for _, c in series)
        per_s = max(1, len(series)) if series else 1
        decide = histogram(total, "route:/v1/decide")
        ingest = histogram(total, "route:/v1/events")
        live = {w: s for w, s in self.workers.items() if now - float(s.get("ts", 0)) < 15}
        return {
            "window_s": window,
            "now": int(now * 1000),
            "series": [{"t": s * 1000, "applied": c.get("applied", 0), "accepted": c.get("accepted", 0),
                        "rejected": c.get("rejected", 0), "by_type": by_prefix(c, "t:"),
                        "by_channel": by_prefix(c, "c:")} for s, c in series],
            "rates": {
                "applied_per_s": total.get("applied", 0) / per_s,
                "accepted_per_s": total.get("accepted", 0) / per_s,
                "rejected_per_s": total.get("rejected", 0) / per_s,
                "by_type": {k: v / per_s for k, v in by_prefix(total, "t:").items()},
                "by_channel": {k: v / per_s for k, v in by_prefix(total, "c:").items()},
            },
            "latency_ms": {
                "decide": {"p50": _ms(quantile(decide, 0.5)), "p99": _ms(quantile(decide, 0.99))},
                "ingest": {"p50": _ms(quantile(ingest, 0.5)), "p99": _ms(quantile(ingest, 0.99))},
            },
            "workers": {
                "live": len(live),
                "lag": sum(int(s.get("lag", 0)) for s in live.values()),
                "freshness_p50_ms": max((float(s.get("freshness_p50_ms", 0)) for s in live.values()), default=None),
                "freshness_p99_ms": max((float(s.get("freshness_p99_ms", 0)) for s in live.values()), default=None),
            },
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


async def startup(s: Services) -> None:
    live = LiveStats(s.redis)
    s.extra["live"] = live
    with contextlib.suppress(Exception):
        await live.refresh(time.time())
    live._task = asyncio.create_task(live.run())


async def shutdown(s: Services) -> None:
    live: LiveStats | None = s.extra.get("live")
    if live and live._task:
        live._task.cancel()
        with contextlib.suppress(BaseException):
            await live._task
        with contextlib.suppress(Exception):
            await live.flush(time.time() + 2)


async def get_traffic(request: Request) -> Response:
    try:
        window = int(request.query_params.get("window", "60"))
        if not 1 <= window <= WINDOW_S:
            raise ValueError
    except ValueError:
        return error(400, "window", f"must be an integer from 1 to {WINDOW_S} (seconds)")
    return json_response(svc(request).extra["live"].snapshot(window))


def routes() -> list[BaseRoute]:
    return [Route("/v1/stats/traffic", get_traffic, methods=["GET"])]
