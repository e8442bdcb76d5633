"""Privacy requests (scope `privacy`): GET /v1/privacy/subjects/{id} exports everything held
about a visitor or user as one JSON document; DELETE erases it (idempotent, within seconds,
with tombstones so that events still in Kafka never bring it back). Both are audited."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.flows.admin import actor
from engine.routes import client_ip, error, json_response, principal, svc

MAX_ID = 256


def _subject(request: Request) -> str | None:
    sid = request.path_params["subject_id"]
    return sid if 1 <= len(sid) <= MAX_ID else None


async def get_subject(request: Request) -> Response:
    sid = _subject(request)
    if sid is None:
        return error(400, "subject_id", f"must be 1 to {MAX_ID} characters")
    doc = await svc(request).privacy.export(sid, actor=actor(principal(request)),
                                            ip=client_ip(request))
    if doc is None:
        return error(404, "subject_id", "nothing is held about this id")
    return json_response(doc)


async def delete_subject(request: Request) -> Response:
    sid = _subject(request)
    if sid is None:
        return error(400, "subject_id", f"must be 1 to {MAX_ID} characters")
    return json_response(await svc(request).privacy.erase(sid, actor=actor(principal(request)),
                                                          ip=client_ip(request)))


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/privacy/subjects/{subject_id:path}", get_subject, methods=["GET"]),
        Route("/v1/privacy/subjects/{subject_id:path}", delete_subject, methods=["DELETE"]),
    ]
