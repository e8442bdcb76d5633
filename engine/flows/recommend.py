"""Recommending, made once per API process: `Recommender`.

A request reads the profile (`ProfileStore.find`), one script call for the neighbour and
trending tables with the neighbours' popularity and the visitor's CF vector
(engine/store/reco_read.py), and the catalog records (cached in-process for 2 s), beside
them the candidates' CF vectors; then the pure `engine.logic.recipes.apply`. Recipes come
from `config/recipes/*.yaml` through the config hub (hot-reloaded). The `cf` ingredient
re-ranks the union of the other ingredients' candidates with the online model the worker
keeps (streams/hooks/cf.py); a visitor the model has not learnt yet gets no `cf` candidates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from engine.logic.candidates import (
    NEIGHBOURS_PER_SEED,
    answer_row,
    candidate_lists,
    categories_wanted,
    category_tables,
    cf_candidates,
    page_category,
    pool_size,
)
from engine.logic.recipes import Recipe, apply
from engine.logic.trending import RECO_HALF_LIFE, EpochDecay, decay
from engine.store.catalog import CachedCatalog
from engine.store.profiles import ProfileStore
from engine.store.reco_read import RecoReader
from models.affinity import AffinityConfig
from models.reco.online import seed_weights, visitor_state

CATALOG_CACHE_S = 2.0  # catalog changes show in recommendations within this


class Recommender:
    """Reads the online state for one request and applies a recipe."""

    def __init__(self, profiles: ProfileStore, reader: RecoReader, catalog: CachedCatalog,
                 cfg: AffinityConfig, recipes: Callable[[], dict[str, Recipe] | None],
                 problems: Callable[[], list[str]] = list) -> None:
        self.profiles = profiles
        self.reader = reader
        self.cached = catalog
        self.cfg = cfg
        self.recipes = recipes
        self.problems = problems  # why the recipe files did not load, if they did not
        self.decay: EpochDecay = decay(RECO_HALF_LIFE)

    async def recommend(self, recipe: Recipe, visitor_id: str | None, item_id: str | None,
                        category: str | None, n: int, now_ms: int) -> list[dict[str, Any]]:
        found = await self.profiles.find(visitor_id) if visitor_id else None
        profile = found[1].profile if found else None
        pid = found[0] if found else None
        visitor = visitor_state(profile, now_ms, self.cfg)
        recent = [iid for iid, _ in visitor["recent"]]
        needed = set(recipe.needed())
        k = pool_size(n)
        seeds = seed_weights(item_id, recent)
        if item_id and not category:
            page = (await self.cached.get_many([item_id], now_ms / 1000.0)).get(item_id)
            category = page_category(page)
        cat, aff_cats = categories_wanted(needed, category, visitor)

        # round trip 1: neighbour and trending tables, the neighbours' popularity, CF vector
        tables = await self.reader.tables(
            neighbours=needed, seeds=list(seeds), trending="trending" in needed,
            categories=category_tables(needed, cat, aff_cats), half_life=RECO_HALF_LIFE,
            factors=self.decay.read_factors(now_ms), rows_per_seed=NEIGHBOURS_PER_SEED, rows=k,
            cf_pid=pid if "cf" in needed else None)
        cands = candidate_lists(needed, seeds, recent, cat, aff_cats, visitor, k,
                                neighbours=tables.neighbours, trending=tables.trending,
                                in_category=tables.in_category, popularity=tables.popularity)

        # round trip 2: the catalog records of every candidate and seed, and beside it the CF
        # vectors of the candidates (the model the visitor's partition keeps)
        pool = list(dict.fromkeys(c.item_id for lst in cands.values() for c in lst))
        wanted = list(dict.fromkeys([*seeds, *pool]))
        catalog = self.cached.get_many(wanted, now_ms / 1000.0)
        cf_user = tables.cf_user
        if cf_user is not None and len(cf_user) > 2 and pool:
            partition = int.from_bytes(cf_user[:2], "little")
            records, vectors = await asyncio.gather(catalog, self.reader.cf_items(partition, pool))
            cands["cf"] = cf_candidates(cf_user[2:], vectors)
        else:
            records = await catalog
        context = {"item_id": item_id, "category": cat, "now_ms": now_ms}
        recs = apply(recipe, cands, records.get, visitor, context, n)
        return [answer_row(rec, records.get(rec.item_id)) for rec in recs]
