"""GET /v1/stats/trending: what is trending now, by dimension and half-life.

`?dim=category|brand|item&half_life=1h|1d&k=20` -> `{"dim", "half_life", "items": [{"key",
"score"}]}`, read from the forward-decayed tables the stream keeps (streams/hooks/reco.py)
by engine/flows/stats.py.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.logic.trending import DIMENSIONS, HALF_LIVES
from engine.routes import error, json_response, svc

MAX_K = 200


async def get_trending(request: Request) -> Response:
    q = request.query_params
    dim = q.get("dim", "item")
    if dim not in DIMENSIONS:
        return error(400, "dim", f"must be one of {', '.join(DIMENSIONS)}")
    label = q.get("half_life", "1h")
    if label not in HALF_LIVES:
        return error(400, "half_life", f"must be one of {', '.join(HALF_LIVES)}")
    try:
        k = int(q.get("k", "20"))
    except ValueError:
        return error(400, "k", "must be an integer")
    if not 1 <= k <= MAX_K:
        return error(400, "k", f"must be between 1 and {MAX_K}")
    return json_response(await svc(request).trending.top(dim, label, k, int(time.time() * 1000)))


def routes() -> list[BaseRoute]:
    return [Route("/v1/stats/trending", get_trending, methods=["GET"])]
