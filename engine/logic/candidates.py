"""One recommendation request's candidate lists, from the tables read for it. Pure.

The flow (engine/flows/recommend.py) reads the profile and, in one script call, the
neighbour and trending tables a recipe needs (engine/store/reco_read.py); these functions
say which tables to read and turn what was read into the `{ingredient: [Candidate]}` lists
`engine.logic.recipes.apply` ranks, and the ranked items into the rows of the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from engine.logic.recipes import Recommendation
from engine.logic.trending import merge
from models.reco.base import Candidate
from models.reco.cf import score_exported
from models.reco.online import history_candidates, neighbour_candidates, top_categories

NEIGHBOURS_PER_SEED = 30
#: catalog fields an answer row carries
SHOWN = ("name", "url", "image", "price", "currency", "categories", "brand")

Rows = Sequence[tuple[str, float]]
Epochs = Sequence[tuple[Rows, float]]


def pool_size(n: int) -> int:
    """Candidates kept per ingredient for an answer of `n` items."""
    return min(100, max(20, 2 * n))


def page_category(record: Mapping[str, Any] | None) -> str | None:
    """The category of the page's item (its first), from its catalog record."""
    cats = (record or {}).get("categories") or []
    return cats[0] if cats else None


def categories_wanted(needed: Collection[str], category: str | None,
                      visitor: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """(the request's category, the visitor's top categories for `affinity`): the request's
    category, or for `trending_in_category` without one the visitor's favourite."""
    cat = category.strip("/").lower() if category else None
    if cat is None and "trending_in_category" in needed:
        tops = top_categories(visitor, 1)
        cat = tops[0] if tops else None
    aff_cats = top_categories(visitor, 3) if "affinity" in needed else []
    return cat, aff_cats


def category_tables(needed: Collection[str], cat: str | None, aff_cats: Sequence[str]) -> list[str]:
    """The categories whose trending tables the request reads."""
    return list(dict.fromkeys([*([cat] if cat and "trending_in_category" in needed else []),
                               *aff_cats]))


def candidate_lists(needed: Collection[str], seeds: Mapping[str, float], recent: Sequence[str],
                    cat: str | None, aff_cats: Sequence[str], visitor: Mapping[str, Any], k: int,
                    *, neighbours: Mapping[str, Mapping[str, Rows]], trending: Epochs,
                    in_category: Mapping[str, Epochs], popularity: Mapping[str, float]
                    ) -> dict[str, list[Candidate]]:
    """Every needed ingredient's candidates but `cf` (which re-ranks their union)."""
    cands: dict[str, list[Candidate]] = {}
    for name in ("co_view", "co_buy", "next_item"):
        if name in needed:
            cands[name] = neighbour_candidates(seeds, neighbours[name], popularity, k)
    if "history" in needed:
        # ranked again with the page's category once the records are read (`own_items`)
        cands["history"] = history_candidates(recent, visitor.get("items"),
                                              earlier=visitor.get("earlier", ()))[:k]
    if "trending" in needed:
        cands["trending"] = [Candidate(i, s) for i, s in merge(trending, k)]
    if cat and "trending_in_category" in needed:
        cands["trending_in_category"] = [Candidate(i, s, cat)
                                         for i, s in merge(in_category.get(cat, []), k)]
    if aff_cats:
        shares = visitor["categories"]
        top_share = max(shares.values(), default=1.0) or 1.0
        scores: dict[str, tuple[float, str]] = {}
        for c in aff_cats:
            rows = merge(in_category.get(c, []), k)
            best = rows[0][1] if rows else 1.0
            for i, s in rows:
                v = shares.get(c, 0.0) / top_share * s / best
                if v > scores.get(i, (0.0, ""))[0]:
                    scores[i] = (v, c)
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
        cands["affinity"] = [Candidate(i, v, c) for i, (v, c) in ranked]
    return cands


def own_items(recent: Sequence[str], visitor: Mapping[str, Any], item_id: str | None,
              catalog: Callable[[str], Mapping[str, Any] | None], k: int) -> list[Candidate]:
    """The `history` ingredient with the catalog records read: the visitor's own items scored
    by recency (the profile's recent items, then `visitor["earlier"]`, the items of the
    visitor's latest sessions), item affinity and the page item's category
    (`history_candidates`)."""
    page = page_category(catalog(item_id)) if item_id else None
    return history_candidates(recent, visitor.get("items"), catalog, page,
                              visitor.get("earlier", ()))[:k]


def cf_candidates(user: bytes, vectors: Mapping[str, bytes | None]) -> list[Candidate]:
    """The pool ranked by the online-CF model's exported vectors (best first)."""
    scores = score_exported(user, vectors)
    return [Candidate(i, s) for i, s in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


def answer_row(rec: Recommendation, record: Mapping[str, Any] | None) -> dict[str, Any]:
    """One item of the answer: id, score, reason, ingredient and the shown catalog fields."""
    record = record or {}
    row = {"id": rec.item_id, "score": round(rec.score, 6), "reason": rec.reason,
           "ingredient": rec.ingredient}
    row.update({f: record[f] for f in SHOWN if f in record})
    return row
