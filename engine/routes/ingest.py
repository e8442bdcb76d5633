"""POST /v1/events: validate each event on its own, append the good ones to the log.

`?decide=zone1,zone2` adds the decisions for the batch's (last) visitor to the answer.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine import metrics
from engine.logic import events as spec
from engine.routes import (
    error,
    json_response,
    media_type,
    principal,
    read_body,
    svc,
    too_many,
    unavailable,
)


async def post_events(request: Request) -> Response:
    now_ms = int(time.time() * 1000)
    try:
        body = await read_body(request, spec.MAX_BODY_BYTES)
        raw = spec.decode_body(body, media_type(request))
    except spec.BodyError as exc:
        metrics.EVENTS_REJECTED.labels(metrics.field_label(exc.field)).inc()
        return error(exc.status, exc.field, exc.reason)
    s = svc(request)
    who = principal(request)
    good, rejected = s.ingest.screen(raw, now_ms, who)
    if (wait := s.ingest.visitor_rate(who, good)) is not None:
        return too_many(wait)
    if not good:
        first = rejected[0]
        return error(400, first["field"], first["reason"], accepted=0, rejected=rejected)
    if (refused := await s.ingest.append(good)) is not None:
        return unavailable(refused)
    answer: dict[str, Any] = {"accepted": len(good), "rejected": rejected}
    if (zones := request.query_params.get("decide")) is not None:  # ?decide=zone1,zone2
        answer.update(await s.decider.decide_after(good, zones, now_ms, time.perf_counter()))
    return json_response(answer)


def routes() -> list[BaseRoute]:
    return [Route("/v1/events", post_events, methods=["POST"])]
