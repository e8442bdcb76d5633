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
again". The `session_knn` ingredient is one script call sent with the tables' on the same
connection, one round trip for both (lua/session_knn.lua: the sampled sessions are read and
scored in Valkey, with a bounded cost, and only the best items come back), so its candidates'
records come with the others'. On a Redis Cluster it reads the sessions' index, then the
sampled sessions' items, and scores them here (`session_candidates`), both beside the tables.
The `history` ingredient is the visitor's own items: the profile's recent ones, then the items
of their 4 latest sessions (the same session item tables, read in the tables' script call),
scored by recency, item affinity and the page item's category once the records are read
(`models.reco.online.history_candidates`; the replay's offline twin calls the same function).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.logic.candidates import (
    NEIGHBOURS_PER_SEED,
    answer_row,
    candidate_lists,
    categories_wanted,
    category_tables,
    cf_candidates,
    own_items,
    page_category,
    pool_size,
)
from engine.logic.recipes import Recipe, apply
from engine.logic.trending import RECO_HALF_LIFE, EpochDecay, decay
from engine.store.catalog import CachedCatalog
from engine.store.profiles import ProfileStore
from engine.store.reco_read import RecoReader
from models.affinity import AffinityConfig
from models.reco.base import Candidate
from models.reco.online import (
    current_session,
    earlier_items,
    own_session_names,
    sample_sessions,
    scored_candidates,
    seed_weights,
    session_candidates,
    visitor_state,
    with_repurchase,
)
from models.reco.repurchase import Repurchase, levels_of, stored_row, visitor_horizon_ms
from models.reco.sessionknn import SessionKNN

CATALOG_CACHE_S = 2.0  # catalog changes show in recommendations within this


class Recommender:
    """Reads the online state for one request (or a mail batch) and applies a recipe."""

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
        if item_id and not category:
            page = (await self.cached.get_many([item_id], now_ms / 1000.0)).get(item_id)
            category = page_category(page)
        ask = self._ask(recipe, found, item_id, category, n, now_ms)
        tables, first = await self._first([ask], now_ms)
        return (await self._answers(recipe, [ask], tables, first, now_ms))[0]

    async def recommend_many(self, recipe: Recipe, visitor_ids: Sequence[str | None], n: int,
                             now_ms: int) -> list[list[dict[str, Any]]]:
        """`recommend` with no page item or category for many visitors at once (a mail
        batch): their profiles in one pipeline, their tables in one, one catalog read."""
        found = await self.profiles.find_many(list(visitor_ids))
        asks = [self._ask(recipe, f, None, None, n, now_ms) for f in found]
        tables, first = await self._first(asks, now_ms)
        return await self._answers(recipe, asks, tables, first, now_ms)

    def _ask(self, recipe: Recipe, found: Any, item_id: str | None, category: str | None, n: int,
             now_ms: int) -> _Ask:
        profile = found[1].profile if found else None
        pid = found[0] if found else None
        visitor = visitor_state(profile, now_ms, self.cfg)
        recent = [iid for iid, _ in visitor["recent"]]
        needed = set(recipe.needed())
        k = pool_size(n)
        seeds = seed_weights(item_id, recent)
        cat, aff_cats = categories_wanted(needed, category, visitor)
        rule = self.rules[recipe.exclusions.repurchase]
        bought = visitor["bought"] if recipe.exclusions.purchased and rule.mode == "learnt" else []
        uid, current = (current_session(profile, pid, item_id, now_ms, self.knn.max_session_items)
                        if "session_knn" in needed else (None, []))
        own = own_session_names(pid, profile) if "history" in needed else []
        tables = dict(neighbours=needed, seeds=list(seeds), trending="trending" in needed,
                      categories=category_tables(needed, cat, aff_cats), half_life=RECO_HALF_LIFE,
                      factors=self.decay.read_factors(now_ms), rows_per_seed=NEIGHBOURS_PER_SEED,
                      rows=k, cf_pid=pid if "cf" in needed else None, sessions=own)
        return _Ask(visitor, recent, needed, k, seeds, cat, aff_cats, item_id, n, tables,
                    profile, rule, bought, uid, current, own)

    async def _first(self, asks: Sequence[_Ask], now_ms: int) -> tuple[list[Any], _First]:
        """round trip 1: each request's neighbour and trending tables, the neighbours'
        popularity, CF vector and latest sessions' items, with (on a single server, on the
        same connection) the session-kNN candidates of its current session; beside it the
        bought items' catalog records."""
        bought = list(dict.fromkeys(iid for a in asks for iid, _ in a.bought))
        if not bought:  # most requests: no task for a read of nothing (~15 µs each)
            tables, knn = await self._tables_and_knn(asks, now_ms)
            return tables, _First({}, knn)
        (tables, knn), records = await asyncio.gather(
            self._tables_and_knn(asks, now_ms), self.cached.get_many(bought, now_ms / 1000.0))
        return tables, _First(records, knn)

    async def _tables_and_knn(self, asks: Sequence[_Ask], now_ms: int
                              ) -> tuple[list[Any], list[list[Candidate]]]:
        """Each request's tables and session-kNN candidates (none without a current
        session): on a single server one script call each, all in one round trip; on a
        cluster the tables beside two pipelined reads of the sessions, scored here."""
        out: list[list[Candidate]] = [[] for _ in asks]
        wanted = [i for i, a in enumerate(asks) if a.current]
        if self.reader.cluster:
            tables, _ = await asyncio.gather(self.reader.tables_many([a.tables for a in asks]),
                                             self._cluster_knn(asks, wanted, out, now_ms))
            return tables, out
        knn = self.knn
        tables, rows = await self.reader.tables_and_knn(
            [a.tables for a in asks], [(asks[i].current, asks[i].uid, asks[i].k) for i in wanted],
            sample_size=knn.sample_size, per_item=knn.sessions_per_item, k=knn.k,
            lambda_pos=knn.lambda_pos, lambda_time_s=knn.lambda_time_s,
            lambda_neigh=knn.lambda_neigh, now_ms=now_ms)
        for i, r in zip(wanted, rows, strict=True):
            out[i] = scored_candidates(r, asks[i].k)
        return tables, out

    async def _cluster_knn(self, asks: Sequence[_Ask], wanted: Sequence[int],
                           out: list[list[Candidate]], now_ms: int) -> None:
        """On a cluster, the session-kNN candidates of the requests `wanted` into `out`: the
        items' session index, then the sampled sessions' items (a pipeline each), scored here."""
        if not wanted:
            return
        knn = self.knn
        current = list(dict.fromkeys(iid for i in wanted for iid in asks[i].current))
        index = await self.reader.session_index(current, knn.sessions_per_item)
        uids = {i: sample_sessions({iid: index.get(iid, []) for iid in asks[i].current},
                                   asks[i].uid, knn.sample_size) for i in wanted}
        sessions = await self.reader.sessions(list(dict.fromkeys(u for us in uids.values()
                                                                 for u in us)))
        for i in wanted:
            out[i] = session_candidates(asks[i].current, uids[i], sessions, now_ms, asks[i].k,
                                        knn)

    async def _answers(self, recipe: Recipe, asks: Sequence[_Ask], tables: Sequence[Any],
                       first: _First, now_ms: int) -> list[list[dict[str, Any]]]:
        """round trip 2: the catalog records of every candidate and seed, and beside it the CF
        vectors of the candidates (the model the visitor's partition keeps) and the bought
        items' repurchase counters; then the recipe."""
        all_cands: list[dict[str, Any]] = []
        wanted: list[str] = []
        levels: list[dict[str, list[str]]] = []
        cf_reads = []  # (ask index, partition, pool)
        for i, (a, t) in enumerate(zip(asks, tables, strict=True)):
            if a.own:
                a.visitor["earlier"] = earlier_items(a.own, t.sessions)
            cands = candidate_lists(a.needed, a.seeds, a.recent, a.cat, a.aff_cats, a.visitor, a.k,
                                    neighbours=t.neighbours, trending=t.trending,
                                    in_category=t.in_category, popularity=t.popularity)
            if "session_knn" in a.needed:
                cands["session_knn"] = first.knn[i]
            all_cands.append(cands)
            pool = list(dict.fromkeys(c.item_id for lst in cands.values() for c in lst))
            wanted += [*a.seeds, *pool]
            if t.cf_user is not None and len(t.cf_user) > 2 and pool:
                cf_reads.append((i, int.from_bytes(t.cf_user[:2], "little"), pool))
            levels.append({iid: levels_of(((first.bought.get(iid) or {}).get("categories")
                                           or [])[:1]) for iid, _ in a.bought})
        all_levels = list(dict.fromkeys(lv for ls in levels for lvs in ls.values() for lv in lvs))
        all_bought = list(dict.fromkeys(iid for a in asks for iid, _ in a.bought))
        records_read = self.cached.get_many(list(dict.fromkeys(wanted)), now_ms / 1000.0)
        if not all_levels and not all_bought and not cf_reads:  # the records alone: no tasks
            records, level_rows, item_rows, vectors = await records_read, {}, {}, []
        else:
            records, (level_rows, item_rows), *vectors = await asyncio.gather(
                records_read, self.reader.repurchase_rows(all_levels, all_bought),
                *(self.reader.cf_items(part, pool) for _, part, pool in cf_reads))
        for (i, _, _), vecs in zip(cf_reads, vectors, strict=True):
            cf_user = tables[i].cf_user
            assert cf_user is not None
            all_cands[i]["cf"] = cf_candidates(cf_user[2:], vecs)
        out = []
        for a, cands, lv in zip(asks, all_cands, levels, strict=True):
            if a.bought:
                horizon = visitor_horizon_ms(
                    a.profile.session.return_gap_ms if a.profile else 0.0,
                    a.rule.horizon_s * 1000.0)
                with_repurchase(a.visitor, [
                    a.rule.decide_rows(iid, [stored_row(level_rows.get(x)) for x in lv[iid]],
                                       stored_row(item_rows.get(iid)), ts, now_ms, horizon)
                    for iid, ts in a.bought])
            elif recipe.exclusions.purchased and a.rule.mode == "keep":
                with_repurchase(a.visitor, [a.rule.decide(iid, ts, now_ms)
                                            for iid, ts in a.visitor["bought"]])
            if "history" in cands:
                cands["history"] = own_items(a.recent, a.visitor, a.item_id, records.get, a.k)
            context = {"item_id": a.item_id, "category": a.cat, "now_ms": now_ms}
            recs = apply(recipe, cands, records.get, a.visitor, context, a.n)
            out.append([answer_row(rec, records.get(rec.item_id)) for rec in recs])
        return out


@dataclass(frozen=True, slots=True)
class _Ask:
    """One recommendation request before its reads: the visitor, seeds, categories, tables,
    the repurchase rule with the bought items, the current session."""

    visitor: dict[str, Any]
    recent: list[str]
    needed: set[str]
    k: int
    seeds: dict[str, float]
    cat: Any
    aff_cats: Any
    item_id: str | None
    n: int
    tables: dict[str, Any]
    profile: Any
    rule: Repurchase
    bought: list[tuple[str, int]]
    uid: str | None
    current: list[str]
    own: list[str]  # the shared names of the visitor's latest sessions (`history`)


@dataclass(frozen=True, slots=True)
class _First:
    bought: dict[str, Any]  # the bought items' catalog records
    knn: list[list[Candidate]]  # each request's session-kNN candidates
