"""POST /v1/decide, GET /v1/campaigns, GET /v1/campaigns/{id}/stats.

The deciding is engine/flows/decide.py; the campaign listing and reports
engine/flows/campaigns.py; the request's parsing engine/logic/decide_request.py.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from engine.flows.campaigns import StatsUnavailable, UnknownCampaign
from engine.logic import events as spec
from engine.logic import trust
from engine.logic.decide_request import RequestError, parse_request
from engine.routes import (
    Bare,
    error,
    json_response,
    receive_body,
    scope_media_type,
    scope_principal,
    scope_svc,
    send_error,
    send_json,
    svc,
)


async def post_decide(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI handler (see engine/routes `Bare`): the hottest route."""
    started = time.perf_counter()
    now_ms = int(time.time() * 1000)
    try:
        body = await receive_body(scope, receive, spec.MAX_BODY_BYTES)
        req = parse_request(body, scope_media_type(scope))
    except spec.BodyError as exc:
        return await send_error(send, exc.status, exc.field, exc.reason)
    except RequestError as exc:
        return await send_error(send, exc.status, exc.field, exc.reason)
    s = scope_svc(scope)
    who = scope_principal(scope)
    vid = req["visitor_id"]
    if not who.may_identify and vid.startswith(trust.RESERVED_VISITOR_PREFIX):
        return await send_error(send, 400, "visitor_id",
                                f"may not start with {trust.RESERVED_VISITOR_PREFIX!r} (reserved)")
    if who.kind == "public_key" and (wait := s.access.rate_visitor(who, vid)) is not None:
        return await send_error(send, 429, "rate", "too many requests for this visitor; retry later",
                                {"Retry-After": str(max(1, math.ceil(wait)))})
    # a public caller naming a user without its hash is answered for the visitor alone
    user_id = trust.trusted_user(who, req["user_id"], req["user_hash"], s.access.identity_ok)
    # the call's events are validated once, appended while the state is read, and seen by
    # the decision
    good, rejected = s.ingest.screen(req["events"], now_ms, who) if req["events"] else ([], [])
    ingest = asyncio.create_task(s.ingest.append(good)) if good else None
    if ingest is not None:
        await asyncio.sleep(0)
    decisions, degraded = await s.decider.decide(
        vid, user_id, req["context"], req["zones"], good, now_ms, started)
    if ingest is not None and (refused := await ingest) is not None:
        # the broker did not take the events: say so (503 + Retry-After) so the client keeps
        # and resends them, rather than a 200 it would read as "delivered"
        return await send_json(send, {"error": refused.error, "accepted": 0}, 503,
                               {"Retry-After": str(refused.retry_after_s)})
    out: dict[str, Any] = {"visitor_id": req["visitor_id"], "decisions": decisions}
    if degraded:
        out["degraded"] = degraded
    if req["events"]:
        out["events"] = {"accepted": len(good), "rejected": rejected}
    await send_json(send, out)


async def get_campaigns(request: Request) -> Response:
    return json_response(await svc(request).campaigns.listing())


async def get_campaign_stats(request: Request) -> Response:
    cid = request.path_params["campaign_id"]
    try:
        return json_response(await svc(request).campaigns.stats(cid))
    except UnknownCampaign:
        return error(404, "campaign_id", f"{cid!r} is not a known campaign")
    except StatsUnavailable as exc:
        return json_response({"error": f"stats store unavailable ({exc})"}, 503)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/decide", Bare(post_decide), methods=["POST"]),
        Route("/v1/campaigns", get_campaigns, methods=["GET"]),
        Route("/v1/campaigns/{campaign_id}/stats", get_campaign_stats, methods=["GET"]),
    ]
