"""GET /v1/recommendations: a recipe applied to the state the stream keeps in Redis.

`?visitor_id=…&recipe=default&item_id=…&category=…&n=10`; the recommending is
engine/flows/recommend.py, the recipes `config/recipes/*.yaml` (hot-reloaded).
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.logic import trust
from engine.routes import error, json_response, principal, svc

MAX_N = 100


async def get_recommendations(request: Request) -> Response:
    q = request.query_params
    rec = svc(request).recommender
    recipes = rec.recipes() or {}
    name = q.get("recipe", "default")
    recipe = recipes.get(name)
    if recipe is None:
        problems = rec.problems()
        if not recipes and problems:  # nothing loaded yet: the server's config is at fault
            return error(503, "recipe", "no recipe could be loaded: " + "; ".join(problems))
        why = f" (recipe files not loaded: {'; '.join(problems)})" if problems else ""
        return error(404, "recipe",
                     f"is not a known recipe (known: {', '.join(sorted(recipes))}){why}")
    try:
        n = int(q.get("n", "10"))
    except ValueError:
        return error(400, "n", "must be an integer")
    if not 1 <= n <= MAX_N:
        return error(400, "n", f"must be between 1 and {MAX_N}")
    for field in ("visitor_id", "item_id", "category"):
        if len(q.get(field, "")) > 256:
            return error(400, field, "must be at most 256 characters")
    if (not principal(request).may_identify
            and q.get("visitor_id", "").startswith(trust.RESERVED_VISITOR_PREFIX)):
        return error(400, "visitor_id", f"may not start with {trust.RESERVED_VISITOR_PREFIX!r} (reserved)")
    now_ms = int(time.time() * 1000)
    items = await rec.recommend(recipe, q.get("visitor_id") or None, q.get("item_id") or None,
                                q.get("category") or None, n, now_ms)
    return json_response({"recipe": recipe.name, "visitor_id": q.get("visitor_id"),
                          "items": items})


def routes() -> list[BaseRoute]:
    return [Route("/v1/recommendations", get_recommendations, methods=["GET"])]
