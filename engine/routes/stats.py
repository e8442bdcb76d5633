"""Live numbers for the dashboard and for anyone else (Grafana, a notebook): /v1/stats/….

GET /v1/stats/traffic (counters and latencies over a window), /v1/stats/segments (sizes and
join/leave rates) and /v1/stats/stream (Server-Sent Events: one snapshot a second). The
numbers are kept by engine/flows/stats.py and engine/flows/dashboard.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from engine.logic.livestats import WINDOW_S
from engine.routes import error, json_response, svc


async def get_traffic(request: Request) -> Response:
    try:
        window = int(request.query_params.get("window", "60"))
        if not 1 <= window <= WINDOW_S:
            raise ValueError
    except ValueError:
        return error(400, "window", f"must be an integer from 1 to {WINDOW_S} (seconds)")
    return json_response(svc(request).live.snapshot(window))


async def get_segments(request: Request) -> Response:
    feed = svc(request).feed
    return json_response({"window_s": feed.segments.window_s, "segments": feed.segment_rows(time.time())})


class _Held(StreamingResponse):
    """A stream that gives its listener place back however it ends (even unstarted)."""

    def __init__(self, release: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


async def get_stream(request: Request) -> Response:
    feed = svc(request).feed
    if not feed.admit():  # at most settings.sse_max_listeners per process
        return json_response({"error": f"this process serves at most {feed.max_listeners} "
                                       "dashboard streams; retry later",
                              "field": "stream", "reason": "too many listeners"},
                             503, headers={"Retry-After": "5"})
    return _Held(feed.release, feed.listen(), media_type="text/event-stream",
                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/stats/traffic", get_traffic, methods=["GET"]),
        Route("/v1/stats/segments", get_segments, methods=["GET"]),
        Route("/v1/stats/stream", get_stream, methods=["GET"]),
    ]
