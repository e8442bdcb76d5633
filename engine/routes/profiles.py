"""GET /v1/profiles/{id}: a visitor's (or a known user's) profile, scores decayed to now."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.routes import error, json_response, svc
from models.affinity import view
from streams.hooks_activity import decode_entry


async def get_profile(request: Request) -> Response:
    s = svc(request)
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
    found = await s.profiles.find(some_id)
    if found is None or found[1].profile is None:
        return error(404, "visitor_id", f"{some_id!r} is not a known visitor or user")
    pid, stored = found
    assert stored.profile is not None
    body = view(stored.profile, int(time.time() * 1000), s.settings.affinity, top=top, explain=explain)
    kind, _, ident = pid.partition(":")
    body = {"profile_id": pid, "visitor_id": some_id if kind == "v" else None, **body}
    if kind == "u":
        body["user_id"] = ident
    if with_activity:
        body["activity"] = [decode_entry(raw) for raw in await s.profiles.activity(pid)]
    return json_response(body)


def routes() -> list[BaseRoute]:
    return [Route("/v1/profiles/{visitor_id:path}", get_profile, methods=["GET"])]
