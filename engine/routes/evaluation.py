"""GET /v1/campaigns/{campaign_id}/evaluation: off-policy evaluation of a learning campaign.

The flow is engine/flows/evaluation.py; the estimators engine/logic/decisions/evaluation.py.
Query: `last` (rows, at most 20,000), `bootstrap` (resamples, 10-1000), `seed`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.flows.campaigns import UnknownCampaign
from engine.flows.evaluation import MAX_ROWS, Evaluations, NotLearning
from engine.routes import error, json_response, svc


def _int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise ValueError(f"must be an integer from {lo} to {hi}")
    return int(raw)


async def get_evaluation(request: Request) -> Response:
    cid = request.path_params["campaign_id"]
    params = {}
    for name, default, lo, hi in (("last", MAX_ROWS, 1, MAX_ROWS), ("bootstrap", 200, 10, 1000),
                                  ("seed", 0, 0, 2**31)):
        try:
            params[name] = _int(request, name, default, lo, hi)
        except ValueError as exc:
            return error(400, name, str(exc))
    evaluations: Evaluations | None = svc(request).evaluations
    assert evaluations is not None  # made in engine/services.py `running`
    try:
        doc = await evaluations.campaign(cid, params["last"], params["bootstrap"], params["seed"])
    except UnknownCampaign:
        return error(404, "campaign_id", f"{cid!r} is not a known campaign")
    except NotLearning:
        return error(404, "campaign_id", f"{cid!r} uses a fixed split (no policy): nothing is "
                     "logged to evaluate")
    return json_response(doc)


def routes() -> list[BaseRoute]:
    return [Route("/v1/campaigns/{campaign_id}/evaluation", get_evaluation, methods=["GET"])]
