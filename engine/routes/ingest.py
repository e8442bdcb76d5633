"""POST /v1/events: validate each event on its own, append the good ones to the log."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine import metrics
from engine.eventlog import LogUnavailable, group_by_visitor
from engine.logic import events as spec
from engine.routes import error, json_response, svc
from engine.services import Services


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            too_big = int(length) > limit
        except ValueError:
            raise spec.BodyError(400, "content-length", "must be an integer") from None
        if too_big:
            raise spec.BodyError(413, "body", f"must be at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise spec.BodyError(413, "body", f"must be at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def screen(s: Services, raw: list, now_ms: int) -> tuple[list[spec.Event], list[dict]]:
    """Validate each event on its own and count the rejections: (good events, rejections)."""
    good, bad = spec.validate(raw, now_ms)
    if bad:
        for r in bad:
            metrics.EVENTS_REJECTED.labels(metrics.field_label(r.field)).inc()
        if (live := s.extra.get("live")) is not None:
            live.add("rejected", len(bad))
    return good, [r.as_dict() for r in bad]


async def append(s: Services, good: list[spec.Event]) -> Response | None:
    """Append validated events to the log; None once the broker acknowledged them, else a
    503 with Retry-After (nothing was accepted: the client resends, deduped by event_id)."""
    start = time.perf_counter()
    try:
        await s.events.append(group_by_visitor(good))
    except LogUnavailable as exc:
        metrics.PRODUCE_FAILURES.inc()
        return json_response(
            {"error": f"event log unavailable, retry later ({exc})", "accepted": 0},
            503, headers={"Retry-After": str(s.settings.retry_after_s)},
        )
    metrics.PRODUCE.observe(time.perf_counter() - start)
    metrics.EVENTS_ACCEPTED.inc(len(good))
    if (live := s.extra.get("live")) is not None:
        live.add("accepted", len(good))
    return None


async def accept(request: Request, raw: list, now_ms: int) -> tuple[list[spec.Event], list[dict], Response | None]:
    """Validate and append. Returns (accepted, rejected, error response or None)."""
    s = svc(request)
    good, rejected = screen(s, raw, now_ms)
    if not good:
        first = rejected[0]
        return [], rejected, error(400, first["field"], first["reason"], accepted=0, rejected=rejected)
    failure = await append(s, good)
    return ([], rejected, failure) if failure is not None else (good, rejected, None)


async def post_events(request: Request) -> Response:
    now_ms = int(time.time() * 1000)
    try:
        body = await read_body(request, spec.MAX_BODY_BYTES)
        raw = spec.decode_body(body, media_type(request))
    except spec.BodyError as exc:
        metrics.EVENTS_REJECTED.labels(metrics.field_label(exc.field)).inc()
        return error(exc.status, exc.field, exc.reason)
    good, rejected, failure = await accept(request, raw, now_ms)
    if failure is not None:
        return failure
    answer = {"accepted": len(good), "rejected": rejected}
    if (zones := request.query_params.get("decide")) is not None:  # ?decide=zone1,zone2
        from engine.routes.decide import decide_inline  # (decide imports this module)

        answer.update(await decide_inline(request, good, zones, now_ms, time.perf_counter()))
    return json_response(answer)


def routes() -> list[BaseRoute]:
    return [Route("/v1/events", post_events, methods=["POST"])]
