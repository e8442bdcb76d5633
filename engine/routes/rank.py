"""POST /v1/rank, POST /v1/rank/{event_id}/reward, POST /v1/rank/{event_id}/activate.

Thin adapters over engine/flows/rank.py (the logic is engine/logic/rank.py).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.flows.rank import LogUnavailable, Ranker, RankError
from engine.logic import events as spec
from engine.routes import error, json_response, media_type, read_body, svc

MAX_RANK_BYTES = 256 * 1024


async def _doc(request: Request) -> object:
    body = await read_body(request, MAX_RANK_BYTES)
    if not body:
        return None
    return spec.decode_any(body, media_type(request))


def _ranker(request: Request) -> Ranker:
    ranker = svc(request).ranker
    assert ranker is not None  # made in engine/services.py `running`
    return ranker


def _unavailable(exc: LogUnavailable) -> Response:
    return json_response({"error": f"not logged: {exc}"}, 503, headers={"Retry-After": "5"})


async def post_rank(request: Request) -> Response:
    try:
        answer = await _ranker(request).rank(await _doc(request))
    except spec.BodyError as exc:
        return error(exc.status, exc.field, exc.reason)
    except RankError as exc:
        return error(exc.status, exc.field, exc.reason)
    except LogUnavailable as exc:
        return _unavailable(exc)
    return json_response(answer)


async def post_reward(request: Request) -> Response:
    try:
        await _ranker(request).reward(request.path_params["event_id"], await _doc(request))
    except spec.BodyError as exc:
        return error(exc.status, exc.field, exc.reason)
    except RankError as exc:
        return error(exc.status, exc.field, exc.reason)
    except LogUnavailable as exc:
        return _unavailable(exc)
    return json_response({"event_id": request.path_params["event_id"], "accepted": True}, 202)


async def post_activate(request: Request) -> Response:
    try:
        await _ranker(request).activate(request.path_params["event_id"])
    except RankError as exc:
        return error(exc.status, exc.field, exc.reason)
    except LogUnavailable as exc:
        return _unavailable(exc)
    return json_response({"event_id": request.path_params["event_id"], "activated": True}, 202)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/rank", post_rank, methods=["POST"]),
        Route("/v1/rank/{event_id}/reward", post_reward, methods=["POST"]),
        Route("/v1/rank/{event_id}/activate", post_activate, methods=["POST"]),
    ]
