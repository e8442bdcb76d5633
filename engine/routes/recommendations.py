"""GET /v1/recommendations: a recipe applied to the state the stream keeps in Redis.

`?visitor_id=…&recipe=default&item_id=…&category=…&n=10`. Reads: the profile
(`profiles.find`), one script call for the neighbour and trending tables with the neighbours'
popularity, one script call for the catalog records (cached in-process for 2 s); then the pure
`engine.logic.recipes.apply`. Recipes come from `config/recipes/*.yaml`, validated, and are
hot-reloaded through the config hub. The `cf` ingredient re-ranks the union of the other
ingredients' candidates with the online model the worker keeps (streams/hooks_cf.py): the
visitor's vector comes with the first script call, the candidates' vectors with one HMGET sent
beside the catalog read. A visitor the model has not learnt yet gets no `cf` candidates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.confighub import ConfigHub
from engine.logic.catalog import CachedCatalog, CatalogStore
from engine.logic.recipes import Recipe, RecipeError, apply, parse_recipe
from engine.logic.trending import EpochDecay, decay, merge
from engine.routes import error, json_response, svc
from engine.services import Services
from engine.store import keys
from models.reco.base import Candidate
from models.reco.cf import score_exported
from models.reco.online import (
    history_candidates,
    neighbour_candidates,
    seed_weights,
    top_categories,
    visitor_state,
)
from streams.hooks_reco import RECO_HALF_LIFE

MAX_N = 100
CATALOG_CACHE_S = 2.0  # catalog changes show in recommendations within this
SHOWN = ("name", "url", "image", "price", "currency", "categories", "brand")


NEIGHBOURS_PER_SEED = 30

# One round trip for the tables a request reads: KEYS = n neighbour tables, then ranked
# (trending) tables, then the popularity hash, then (optional) the visitor's CF vector;
# ARGV = n, rows per neighbour table, rows per ranked table, number of tables. Returns each
# table's flat [member, score, ...], then the distinct neighbour ids, their popularity counts
# and the CF vector (or false). (Global keys: on a Redis Cluster, split by slot.)
_READ = """
local n, kn, kt, t = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out, seen, ids = {}, {}, {}
for i = 1, t do
  local rows = redis.call('ZREVRANGE', KEYS[i], 0, (i <= n and kn or kt) - 1, 'WITHSCORES')
  out[i] = rows
  if i <= n then
    for j = 1, #rows, 2 do
      local m = rows[j]
      if not seen[m] then seen[m] = true; ids[#ids + 1] = m end
    end
  end
end
local pops = {}
if #ids > 0 then pops = redis.call('HMGET', KEYS[t + 1], unpack(ids)) end
out[t + 1] = ids
out[t + 2] = pops
out[t + 3] = KEYS[t + 2] and redis.call('GET', KEYS[t + 2]) or false
return out
"""


class RecipesError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def load_recipes(config_dir: Path) -> dict[str, Recipe]:
    """Every `recipes/*.yaml` under the config folder, validated (errors name file and field)."""
    out: dict[str, Recipe] = {}
    problems = []
    for path in sorted((Path(config_dir) / "recipes").glob("*.y*ml")):
        try:
            recipe = parse_recipe(yaml.safe_load(path.read_text(encoding="utf-8")), path.stem)
        except (yaml.YAMLError, RecipeError, OSError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        if recipe.name in out:
            problems.append(f"{path}: name: recipe {recipe.name!r} is defined twice")
        out[recipe.name] = recipe
    if problems:
        raise RecipesError(problems)
    return out


class Recommender:
    """Reads the online state for one request and applies a recipe."""

    def __init__(self, services: Services, recipes: Callable[[], dict[str, Recipe] | None],
                 problems: Callable[[], list[str]] = list) -> None:
        self.s = services
        self.r = services.redis
        self.catalog = CatalogStore(services.redis)
        self.cached = CachedCatalog(self.catalog, ttl_s=CATALOG_CACHE_S)
        self.recipes = recipes
        self.problems = problems  # why the recipe files did not load, if they did not
        self.decay: EpochDecay = decay(RECO_HALF_LIFE)
        self._read = services.redis.register_script(_READ)


    async def recommend(self, recipe: Recipe, visitor_id: str | None, item_id: str | None,
                        category: str | None, n: int, now_ms: int) -> list[dict[str, Any]]:
        found = await self.s.profiles.find(visitor_id) if visitor_id else None
        profile = found[1].profile if found else None
        pid = found[0] if found else None
        visitor = visitor_state(profile, now_ms, self.s.settings.affinity)
        recent = [iid for iid, _ in visitor["recent"]]
        needed = set(recipe.needed())
        k = min(100, max(20, 2 * n))
        seeds = seed_weights(item_id, recent)
        factors = self.decay.read_factors(now_ms)
        if item_id and not category:
            page = (await self.cached.get_many([item_id], now_ms / 1000.0)).get(item_id)
            cats = (page or {}).get("categories") or []
            category = cats[0] if cats else None
        cat = category.strip("/").lower() if category else None
        if cat is None and "trending_in_category" in needed:
            tops = top_categories(visitor, 1)
            cat = tops[0] if tops else None
        aff_cats = top_categories(visitor, 3) if "affinity" in needed else []

        # round trip 1: neighbour and trending tables, and the neighbours' popularity
        tables: list[tuple[str, str, float, str]] = []  # (what, via, factor, key)
        for kind, name in (("v", "co_view"), ("b", "co_buy"), ("t", "next_item")):
            if name in needed:
                tables += [(name, seed, 1.0, keys.neighbours(kind, seed)) for seed in seeds]
        n_neigh = len(tables)
        for epoch, f in factors:
            if "trending" in needed:
                tables.append(("trending", "", f, keys.trending(RECO_HALF_LIFE, "item", epoch)))
            for c in dict.fromkeys([*([cat] if cat and "trending_in_category" in needed else []),
                                    *aff_cats]):
                tables.append(("in_category", c, f,
                               keys.trending_in_category(RECO_HALF_LIFE, c, epoch)))
        neigh: dict[str, dict[str, list[tuple[str, float]]]] = {"co_view": {}, "co_buy": {},
                                                                 "next_item": {}}
        trend: list[tuple[list[tuple[str, float]], float]] = []
        in_cat: dict[str, list[tuple[list[tuple[str, float]], float]]] = {}
        pop: dict[str, float] = {}
        cf_user: bytes | None = None
        want_cf = "cf" in needed and pid is not None
        if tables or want_cf:
            rkeys = [t[3] for t in tables] + [keys.ITEM_POPULARITY]
            if want_cf:
                rkeys.append(keys.cf_visitor(pid))  # type: ignore[arg-type]
            replies = await self._read(keys=rkeys, args=[n_neigh, NEIGHBOURS_PER_SEED, k,
                                                         len(tables)])
            for (what, via, f, _), flat in zip(tables, replies, strict=False):
                pairs = [(flat[j].decode(), float(flat[j + 1])) for j in range(0, len(flat), 2)]
                if what in neigh:
                    neigh[what][via] = pairs
                elif what == "trending":
                    trend.append((pairs, f))
                else:
                    in_cat.setdefault(via, []).append((pairs, f))
            ids, counts = replies[len(tables)], replies[len(tables) + 1]
            pop = {i.decode(): float(c) for i, c in zip(ids, counts, strict=True) if c is not None}
            cf_user = replies[len(tables) + 2] or None
        cands: dict[str, list[Candidate]] = {}
        for name in ("co_view", "co_buy", "next_item"):
            if name in needed:
                cands[name] = neighbour_candidates(seeds, neigh[name], pop, k)
        if "history" in needed:
            cands["history"] = history_candidates(recent)[:k]
        if "trending" in needed:
            cands["trending"] = [Candidate(i, s) for i, s in merge(trend, k)]
        if cat and "trending_in_category" in needed:
            cands["trending_in_category"] = [Candidate(i, s, cat)
                                             for i, s in merge(in_cat.get(cat, []), k)]
        if aff_cats:
            shares = visitor["categories"]
            top_share = max(shares.values(), default=1.0) or 1.0
            scores: dict[str, tuple[float, str]] = {}
            for c in aff_cats:
                rows = merge(in_cat.get(c, []), k)
                best = rows[0][1] if rows else 1.0
                for i, s in rows:
                    v = shares.get(c, 0.0) / top_share * s / best
                    if v > scores.get(i, (0.0, ""))[0]:
                        scores[i] = (v, c)
            ranked = sorted(scores.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
            cands["affinity"] = [Candidate(i, v, c) for i, (v, c) in ranked]

        # round trip 3: the catalog records of every candidate and seed, and beside it the CF
        # vectors of the candidates (the model the visitor's partition keeps)
        pool = list(dict.fromkeys(c.item_id for lst in cands.values() for c in lst))
        wanted = list(dict.fromkeys([*seeds, *pool]))
        catalog = self.cached.get_many(wanted, now_ms / 1000.0)
        if cf_user is not None and len(cf_user) > 2 and pool:
            partition = int.from_bytes(cf_user[:2], "little")
            records, vectors = await asyncio.gather(
                catalog, self.r.hmget(keys.cf_items(self.s.settings.group_id, partition), pool))
            scores = score_exported(cf_user[2:], dict(zip(pool, vectors, strict=True)))
            cands["cf"] = [Candidate(i, s) for i, s in
                           sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]
        else:
            records = await catalog
        context = {"item_id": item_id, "category": cat, "now_ms": now_ms}
        recs = apply(recipe, cands, records.get, visitor, context, n)
        out = []
        for rec in recs:
            record = records.get(rec.item_id) or {}
            row = {"id": rec.item_id, "score": round(rec.score, 6), "reason": rec.reason,
                   "ingredient": rec.ingredient}
            row.update({f: record[f] for f in SHOWN if f in record})
            out.append(row)
        return out


async def get_recommendations(request: Request) -> Response:
    q = request.query_params
    rec: Recommender = svc(request).extra["recommender"]
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
    now_ms = int(time.time() * 1000)
    items = await rec.recommend(recipe, q.get("visitor_id") or None, q.get("item_id") or None,
                                q.get("category") or None, n, now_ms)
    return json_response({"recipe": recipe.name, "visitor_id": q.get("visitor_id"),
                          "items": items})


async def startup(s: Services) -> None:
    hub: ConfigHub | None = s.extra.get("confighub")
    if hub is None:  # no decision module: our own hub
        hub = ConfigHub(s.settings.config_dir, debounce_ms=s.settings.config_reload_debounce_ms)
        hub.register("recipes", load_recipes, ("recipes",))
        await hub.start()
        s.extra["recipes_hub"] = hub
    else:
        hub.register("recipes", load_recipes, ("recipes",))
    s.extra["recommender"] = Recommender(s, lambda: hub.get("recipes"),
                                         lambda: hub.errors.get("recipes", []))


async def shutdown(s: Services) -> None:
    if "recipes_hub" in s.extra:
        await s.extra["recipes_hub"].stop()


def routes() -> list[BaseRoute]:
    return [Route("/v1/recommendations", get_recommendations, methods=["GET"])]
