"""Recommending, made once per API process: `Recommender`.

A request reads the profile (`ProfileStore.find`), one script call for the neighbour and
trending tables with the neighbours' popularity and the visitor's CF vector
(engine/store/reco_read.py), and the catalog records (cached in-process for 2 s), beside
them the candidates' CF vectors; then the pure `engine.logic.recipes.apply`. Recipes come
from `config/recipes/*.yaml` through the config hub (hot-reloaded). The `cf` ingredient
re-ranks the union of the other ingredients' candidates with the online model the worker
keeps (streams/hooks/cf.py); a visitor the model has not learnt yet gets no `cf` candidates.

Bought items go through the repurchase rule (`exclusions.purchased` with `exclusions.repurchase`,
models/reco/repurchase.py): the bought items' catalog records are read beside the tables, their
levels' counter rows beside the candidates' records, and a kept item is shown "often bought
again". The `session_knn` ingredient reads the sessions that held the current session's items
(with the tables), then those sessions' items (with the candidates' records), and the records
of its own candidates the other ingredients did not bring (a third, usually cached, read).
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
from models.reco.online import (
    current_session,
    sample_sessions,
    seed_weights,
    session_candidates,
    visitor_state,
    with_repurchase,
)
from models.reco.repurchase import Repurchase, levels_of, stored_row, visitor_horizon_ms
from models.reco.sessionknn import SessionKNN

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
        # the learners' settings (their state is the stream's, read from Redis per request)
        self.rules = {mode: Repurchase(mode=mode) for mode in ("learnt", "exclude", "keep")}
        self.knn = SessionKNN()

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
        rule = self.rules[recipe.exclusions.repurchase]
        bought = visitor["bought"] if recipe.exclusions.purchased and rule.mode == "learnt" else []
        uid, current = (current_session(profile, pid, item_id, now_ms, self.knn.max_session_items)
                        if "session_knn" in needed else (None, []))

        # round trip 1: neighbour and trending tables, the neighbours' popularity, CF vector;
        # beside it the bought items' records and the session index of the session's items
        tables, bought_records, index = await asyncio.gather(
            self.reader.tables(
                neighbours=needed, seeds=list(seeds), trending="trending" in needed,
                categories=category_tables(needed, cat, aff_cats), half_life=RECO_HALF_LIFE,
                factors=self.decay.read_factors(now_ms), rows_per_seed=NEIGHBOURS_PER_SEED,
                rows=k, cf_pid=pid if "cf" in needed else None),
            self.cached.get_many([iid for iid, _ in bought], now_ms / 1000.0),
            self.reader.session_index(current, self.knn.sessions_per_item))
        cands = candidate_lists(needed, seeds, recent, cat, aff_cats, visitor, k,
                                neighbours=tables.neighbours, trending=tables.trending,
                                in_category=tables.in_category, popularity=tables.popularity)

        # round trip 2: the catalog records of every candidate and seed, and beside it the CF
        # vectors of the candidates (the model the visitor's partition keeps), the sampled
        # sessions' items and the bought items' repurchase counters
        pool = list(dict.fromkeys(c.item_id for lst in cands.values() for c in lst))
        wanted = list(dict.fromkeys([*seeds, *pool]))
        levels = {iid: levels_of(((bought_records.get(iid) or {}).get("categories") or [])[:1])
                  for iid, _ in bought}
        uids = sample_sessions(index, uid, self.knn.sample_size)
        cf_user = tables.cf_user
        cf_wanted = cf_user is not None and len(cf_user) > 2 and bool(pool)
        records, vectors, sessions, (level_rows, item_rows) = await asyncio.gather(
            self.cached.get_many(wanted, now_ms / 1000.0),
            self.reader.cf_items(int.from_bytes(cf_user[:2], "little"), pool)
            if cf_wanted and cf_user is not None else _nothing(),
            self.reader.sessions(list(uids)),
            self.reader.repurchase_rows(list({lv for ls in levels.values() for lv in ls}),
                                        [iid for iid, _ in bought]))
        if cf_wanted and cf_user is not None:
            cands["cf"] = cf_candidates(cf_user[2:], vectors)
        if "session_knn" in needed:
            cands["session_knn"] = session_candidates(current, uids, sessions, now_ms, k, self.knn)
            missing = [c.item_id for c in cands["session_knn"] if c.item_id not in records]
            if missing:  # round trip 3, when the other ingredients did not bring them
                records = {**records, **await self.cached.get_many(missing, now_ms / 1000.0)}
        if bought:
            horizon = visitor_horizon_ms(profile.session.return_gap_ms if profile else 0.0,
                                         rule.horizon_s * 1000.0)
            with_repurchase(visitor, [
                rule.decide_rows(iid, [stored_row(level_rows.get(lv)) for lv in levels[iid]],
                                 stored_row(item_rows.get(iid)), ts, now_ms, horizon)
                for iid, ts in bought])
        elif recipe.exclusions.purchased and rule.mode == "keep":
            with_repurchase(visitor, [rule.decide(iid, ts, now_ms) for iid, ts in visitor["bought"]])
        context = {"item_id": item_id, "category": cat, "now_ms": now_ms}
        recs = apply(recipe, cands, records.get, visitor, context, n)
        return [answer_row(rec, records.get(rec.item_id)) for rec in recs]


async def _nothing() -> dict[str, bytes | None]:
    return {}
