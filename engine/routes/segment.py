"""Segment's HTTP Tracking API: POST /v1/{batch,b,import,track,t,page,p,screen,s,identify,i,
alias,a,group,g}, and the same under /segment/v1, for the Segment, RudderStack and Jitsu-style
SDKs pointed at Kairos (docs/segment.md).

Read the body (streamed up to the endpoint's limit: Android sends it chunked, without a
Content-Length), decode it (gzip, JSON), find the key (HTTP Basic, from the gate, else the
body's `writeKey`: the policy is `body_key`), and hand it to the tracking flow
(engine/flows/segment.py). POST /v1/m takes analytics-next's own counters and drops them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine import metrics
from engine.logic import events as spec
from engine.logic import segment as seg
from engine.routes import (
    body_key,
    error,
    json_response,
    media_type,
    principal,
    read_body,
    svc,
)


def _endpoint(name: str) -> Callable[[Request], Awaitable[Response]]:
    async def post(request: Request) -> Response:
        now_ms = int(time.time() * 1000)
        started = time.perf_counter()
        try:
            body = await read_body(request, seg.body_limit(name))
            doc = seg.decode_body(body, endpoint=name, media_type=media_type(request),
                                  content_encoding=request.headers.get("content-encoding", ""))
            who = await body_key(request, seg.write_key(doc))
            if isinstance(who, Response):
                return who
            out = await svc(request).tracking.take(doc, name, who, now_ms, started)
        except spec.BodyError as exc:
            if principal(request).authenticated:  # a caller with no key counts nothing
                metrics.EVENTS_REJECTED.labels(metrics.field_label(exc.field)).inc()
            return error(exc.status, exc.field, exc.reason, success=False)
        headers = {"Retry-After": str(out.retry_after_s)} if out.retry_after_s else None
        return json_response(out.body, out.status, headers)

    post.__name__ = f"segment_{name}"
    return post


async def client_metrics(request: Request) -> Response:
    """analytics-next's counters about itself (when its metrics are not turned off)."""
    return json_response({"success": True})


def routes() -> list[BaseRoute]:
    out: list[BaseRoute] = [Route(path, _endpoint(name), methods=["POST"])
                            for path, name in seg.api_paths()]
    out += [Route(f"{prefix}/{seg.METRICS_ENDPOINT}", client_metrics, methods=["POST"])
            for prefix in seg.PREFIXES]
    return out
