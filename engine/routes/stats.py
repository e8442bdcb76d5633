"""Live numbers for the dashboard and for anyone else (Grafana, a notebook): /v1/stats/….

`LiveStats` runs in each API process: it counts into the current second in memory, flushes
finished seconds to Redis once a second (one pipeline), and keeps the last 15 minutes of the
merged per-second hashes (all processes + the stream) in memory, refreshed once a second. Any
number of dashboards read that memory: O(1) Redis round trips per second per process.

`DashboardFeed` builds, once a second per process, the snapshot that every open
`GET /v1/stats/stream` (Server-Sent Events) receives: traffic from `LiveStats`, segment sizes
(one HGETALL), and, while at least one dashboard listens, trending and campaign stats read
in-process from their own public endpoints. Each snapshot is serialised once, whatever the
number of listeners. `SegmentRates` and `ArmHistory` are the pure parts (time passed in).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from engine.logic.livestats import SecondCounters, by_prefix, histogram, merge, quantile
from engine.routes import error, json_response, svc
from engine.services import Services
from engine.store import keys

log = logging.getLogger("kairos.stats")
WINDOW_S = 900
SECOND_TTL_MS = 3_600_000


class LiveStats:
    def __init__(self, redis: Any, group_id: str) -> None:
        self.redis = redis
        self.group_id = group_id
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
        pipe.hgetall(keys.workers(self.group_id))
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


class SegmentRates:
    """Each segment's live size over time, and how fast members join and leave. Pure.

    `observe(now, sizes)` once a second with the sizes the stream keeps; `report(now)` gives
    per segment the size and, over the last `window_s`, members joined and left per minute.
    Joins and leaves come from second-to-second size changes, so a join and a leave within
    the same second cancel out: they are lower bounds, the net change is exact. Until the
    process has watched a whole window, the rates count what it saw (never extrapolated).
    """

    def __init__(self, window_s: int = 60, keep_s: int = WINDOW_S) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=keep_s)

    def observe(self, now: float, sizes: Mapping[str, int]) -> None:
        self.samples.append((now, dict(sizes)))

    def report(self, now: float) -> dict[str, dict[str, float | int | None]]:
        recent = [(t, s) for t, s in self.samples if now - t <= self.window_s + 0.5]
        latest = self.samples[-1][1] if self.samples else {}
        ids = sorted({k for _, s in recent for k in s} | set(latest))
        span = recent[-1][0] - recent[0][0] if len(recent) > 1 else 0.0
        out: dict[str, dict[str, float | int | None]] = {}
        for sid in ids:
            joined = left = 0
            for (_, a), (_, b) in zip(recent, recent[1:], strict=False):
                d = b.get(sid, 0) - a.get(sid, 0)
                if d > 0:
                    joined += d
                else:
                    left -= d
            # over the window, or over what this process has seen when that is shorter
            per_min = 60.0 / max(span, self.window_s) if span > 0 else None
            out[sid] = {
                "size": latest.get(sid, 0),
                "joined_per_min": None if per_min is None else round(joined * per_min, 3),
                "left_per_min": None if per_min is None else round(left * per_min, 3),
                "net_per_min": None if per_min is None else round((joined - left) * per_min, 3),
            }
        return out


class ArmHistory:
    """Campaign arms' cumulative conversion rate sampled every `every_s`, last `keep` samples. Pure.

    The stats endpoint gives totals only; this keeps the curve since the process started, so
    the dashboard can draw conversion over time per variant with bounded memory.
    """

    def __init__(self, every_s: float = 10.0, keep: int = 360) -> None:
        self.every_s = every_s
        self.keep = keep
        self.points: dict[str, deque[dict[str, Any]]] = {}

    def observe(self, now: float, campaign: str, arms: Sequence[Mapping[str, Any]]) -> bool:
        """Record a sample when the last one is `every_s` old; True when one was recorded."""
        pts = self.points.setdefault(campaign, deque(maxlen=self.keep))
        if pts and now - pts[-1]["t"] / 1000 < self.every_s:
            return False
        pts.append({"t": int(now * 1000),
                    "arms": {str(a["arm"]): {"conversion_rate": a.get("conversion_rate"),
                                             "conversions": int(a.get("conversions") or 0),
                                             "impressions": int(a.get("impressions") or 0)}
                             for a in arms}})
        return True

    def series(self, campaign: str, last: int | None = None) -> list[dict[str, Any]]:
        pts = list(self.points.get(campaign, ()))
        return pts[-last:] if last else pts

    def forget_except(self, campaigns: set[str]) -> None:
        for cid in [c for c in self.points if c not in campaigns]:
            del self.points[cid]


TRENDING_DIMS = ("category", "brand", "item")
HALF_LIVES = ("1h", "1d")
FULL_WINDOW_S = 300  # the traffic series a dashboard gets when it connects
TAIL_S = 5  # then only the last seconds (late writers revise them) each second
RATE_WINDOW_S = 10  # rates and latencies shown as "now"


class DashboardFeed:
    """The one snapshot per second per process that every open dashboard stream receives."""

    def __init__(self, services: Services) -> None:
        self.svc = services
        self.segments = SegmentRates()
        self.history = ArmHistory()
        self.listeners = 0
        self.client: httpx.AsyncClient | None = None
        self.trending: dict[str, dict[str, Any] | None] = {}
        self.campaigns: list[dict[str, Any]] | None = None
        self.delta: bytes = b""
        self.seq = 0
        self.closed = False
        self._tick = asyncio.Event()
        self._full: tuple[int, bytes] | None = None
        self._primed = False
        self._task: asyncio.Task[None] | None = None

    def bind(self, app: Any) -> None:
        """Read the public endpoints in-process (no socket), through the same app."""
        if self.client is None:
            self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                            base_url="http://kairos.internal", timeout=2.0)

    async def _get(self, path: str, **params: str) -> tuple[int, Any]:
        assert self.client is not None
        r = await self.client.get(path, params=params)
        return r.status_code, (r.json() if r.headers.get("content-type", "").startswith(JSON_CT) else None)

    async def refresh_segments(self, now: float) -> None:
        raw = await self.svc.redis.hgetall(keys.SEGMENT_SIZES)
        self.segments.observe(now, {k.decode(): int(v) for k, v in raw.items()})

    def segment_rows(self, now: float) -> list[dict[str, Any]]:
        hub = self.svc.extra.get("confighub")
        config = getattr(hub, "decisions", None) if hub is not None else None
        known = {s.id: s.name for s in config.segments.values()} if config else {}
        rep = self.segments.report(now)
        ids = list(known) + [sid for sid in rep if sid not in known]
        zero = 0.0 if len(self.segments.samples) > 1 else None  # watched, never had members
        empty = {"size": 0, "joined_per_min": zero, "left_per_min": zero, "net_per_min": zero}
        return [{"id": sid, "name": known.get(sid, sid), **rep.get(sid, empty)} for sid in ids]

    async def refresh_trending(self) -> None:
        async def one(dim: str, hl: str) -> tuple[str, dict[str, Any] | None]:
            status, body = await self._get("/v1/stats/trending", dim=dim, half_life=hl, k="10")
            return f"{dim}:{hl}", body if status == 200 and isinstance(body, dict) else None

        got = await asyncio.gather(*(one(d, h) for d in TRENDING_DIMS for h in HALF_LIVES))
        self.trending = dict(got)

    async def refresh_campaigns(self, now: float) -> None:
        status, body = await self._get("/v1/campaigns")
        if status != 200 or not isinstance(body, dict):
            self.campaigns = None
            return
        rows = []
        for c in body.get("campaigns", []):
            st, stats = await self._get(f"/v1/campaigns/{c['id']}/stats")
            if st == 200 and isinstance(stats, dict):
                self.history.observe(now, c["id"], stats.get("arms", []))
            rows.append({"id": c["id"], "name": c.get("name") or c["id"], "status": c.get("status"),
                         "zones": c.get("zones", []), "stats": stats if st == 200 else None})
        self.history.forget_except({r["id"] for r in rows})
        self.campaigns = rows

    def build(self, now: float, full: bool) -> dict[str, Any]:
        live: LiveStats = self.svc.extra["live"]
        rates = live.snapshot(RATE_WINDOW_S, now)
        series = live.snapshot(FULL_WINDOW_S if full else TAIL_S, now)["series"]
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
            "campaign_history": {c["id"]: self.history.series(c["id"], None if full else 1)
                                 for c in self.campaigns or []},
        }

    def full(self, now: float) -> bytes:
        """The snapshot a new listener gets first (built at most once per tick)."""
        if self._full is None or self._full[0] != self.seq:
            self._full = (self.seq, sse(self.build(now, full=True)))
        return self._full[1]

    async def refresh_listened(self, now: float) -> None:
        """What only dashboards need: trending and campaigns (skipped while nobody listens)."""
        if self.client is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.refresh_trending(), 0.8)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.refresh_campaigns(now), 0.8)
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

    async def listen(self) -> AsyncIterator[bytes]:
        """One dashboard's stream: the full snapshot, then each second's delta."""
        self.listeners += 1
        try:
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
        finally:
            self.listeners -= 1

    async def close(self) -> None:
        self.closed = True
        self._tick.set()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self.client is not None:
            await self.client.aclose()


JSON_CT = "application/json"


def sse(data: Any, event: str = "snapshot") -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def startup(s: Services) -> None:
    live = LiveStats(s.redis, s.settings.group_id)
    s.extra["live"] = live
    with contextlib.suppress(Exception):
        await live.refresh(time.time())
    live._task = asyncio.create_task(live.run())
    feed = DashboardFeed(s)
    s.extra["dashboard_feed"] = feed
    feed._task = asyncio.create_task(feed.run())


async def shutdown(s: Services) -> None:
    feed: DashboardFeed | None = s.extra.get("dashboard_feed")
    if feed:
        await feed.close()
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


async def get_segments(request: Request) -> Response:
    feed: DashboardFeed = svc(request).extra["dashboard_feed"]
    return json_response({"window_s": feed.segments.window_s, "segments": feed.segment_rows(time.time())})


async def get_stream(request: Request) -> Response:
    feed: DashboardFeed = svc(request).extra["dashboard_feed"]
    feed.bind(request.app)
    return StreamingResponse(feed.listen(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/stats/traffic", get_traffic, methods=["GET"]),
        Route("/v1/stats/segments", get_segments, methods=["GET"]),
        Route("/v1/stats/stream", get_stream, methods=["GET"]),
    ]
