"""GET /v1/stats/trending: what is trending now, by dimension and half-life.

`?dim=category|brand|item&half_life=1h|1d&k=20` -> `{"dim", "half_life", "items": [{"key",
"score"}]}`, read from the forward-decayed tables the stream keeps (streams/hooks_reco.py):
two epochs merged, one pipeline.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.logic.trending import DIMENSIONS, HALF_LIVES, EpochDecay, decay, merge
from engine.routes import error, json_response, svc
from engine.store import keys

MAX_K = 200


async def read_trending(redis: Any, dec: EpochDecay, table_key: Any, k: int, now_ms: int
                        ) -> list[tuple[str, float]]:
    """Top `k` of a trending table (`table_key(epoch)` -> key), current and previous epoch."""
    factors = dec.read_factors(now_ms)
    pipe = redis.pipeline(transaction=False)
    for epoch, _ in factors:
        pipe.zrevrange(table_key(epoch), 0, k - 1, withscores=True)
    replies = await pipe.execute()
    tables = [([(m.decode(), s) for m, s in rows], f)
              for rows, (_, f) in zip(replies, factors, strict=True)]
    return merge(tables, k)


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
    now_ms = int(time.time() * 1000)
    rows = await read_trending(svc(request).redis, decay(label),
                               lambda e: keys.trending(label, dim, e), k, now_ms)
    return json_response({"dim": dim, "half_life": label,
                          "items": [{"key": key, "score": round(s, 4)} for key, s in rows]})


def routes() -> list[BaseRoute]:
    return [Route("/v1/stats/trending", get_trending, methods=["GET"])]
