"""GET /v1/profiles/{id}: a visitor's (or a known user's) profile, scores decayed to now."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.routes import error, json_response, svc


async def get_profile(request: Request) -> Response:
    some_id = request.path_params["visitor_id"]
    if len(some_id) > 128:
        return error(400, "visitor_id", "must be at most 128 characters")
    q = request.query_params
    explain = q.get("explain", "false").lower() in ("1", "true", "yes")
    with_activity = q.get("activity", "false").lower() in ("1", "true", "yes")
    try:
        top = int(q.get("top", "10"))
        if not 1 <= top <= 100:
            raise ValueError
    except ValueError:
        return error(400, "top", "must be an integer from 1 to 100")
    body = await svc(request).profiles.explain(some_id, int(time.time() * 1000), top=top,
                                               explain=explain, with_activity=with_activity)
    if body is None:
        return error(404, "visitor_id", f"{some_id!r} is not a known visitor or user")
    return json_response(body)


def routes() -> list[BaseRoute]:
    return [Route("/v1/profiles/{visitor_id:path}", get_profile, methods=["GET"])]
