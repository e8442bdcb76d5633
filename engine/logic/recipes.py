"""Recipes: how candidate lists from the learners become one ranked list with a reason each.

Pure: a recipe is parsed from a plain dict (`load_recipes` reads the YAML files of the config
folder for the config hub), and `apply` takes the candidates, a catalog lookup, the visitor's
state and the request context as plain data.

Recipe fields (all optional but `ingredients`)::

    name: default
    ingredients: {history: 1.0, co_view: 1.0, trending_in_category: 0.3}   # weights >= 0
    normalise: rank            # each ingredient's scores become c/(c+rank) (rank) or s/max (max)
    rank_offset: 10            # c above: larger flattens the rank curve
    exclusions: {purchased: true, repurchase: learnt, in_cart: false, current_item: true,
                 viewed_last: 0, viewed_within_s: 0, out_of_stock: true, items: [id, ...]}
    # purchased: bought items leave the list, as `repurchase` says: learnt (kept where the
    # learnt chance of a rebuy soon is high, with the reason "often bought again"), exclude
    # (every bought item leaves), keep (none leaves)
    boosters: {affinity_category: 0.2, affinity_brand: 0.2,
               price_near: {weight: 0.1, tolerance: 0.5},
               new_arrivals: {weight: 0.1, within_days: 14}}
    filters: {category: a/b, categories: [a, c/d], brand: acme, brands: [..],
              price: {min: 0, max: 100}, attributes: {color: red, size: {in: [M, L]}}}
    diversity: {max_per_category: 5, max_per_brand: 5}
    fallbacks: [trending_in_category, trending]

Candidates come as `{ingredient: [(item_id, score, via), ...]}`; `via` is the seed item for
co_view/co_buy/next_item, the category for trending_in_category, the category or brand for
affinity, the current session's item that linked the neighbours for session_knn. A bought item
the repurchase rule kept (`visitor["rebuy"]`) is shown with the rule's reason.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from engine.logic.common import category_ancestors

INGREDIENTS = (
    "trending",
    "trending_in_category",
    "co_view",
    "co_buy",
    "next_item",
    "affinity",
    "history",
    "cf",
    "session_knn",
)
#: How `exclusions.repurchase` treats bought items (models/reco/repurchase.py `MODES`): `learnt`
#: keeps those the learnt chance of buying again soon keeps ("often bought again"), `exclude`
#: drops every bought item, `keep` keeps them all.
REPURCHASE_MODES = ("learnt", "exclude", "keep")

CatalogLookup = Callable[[str], Mapping[str, Any] | None]
CandidateLists = Mapping[str, Sequence[Sequence[Any]]]


class RecipeError(ValueError):
    """A recipe is invalid; `field` names the offending field (dotted path)."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")
        self.field = field_path


class Recommendation(NamedTuple):
    """One item of the answer."""

    item_id: str
    score: float
    reason: str
    ingredient: str


@dataclass(frozen=True)
class Exclusions:
    """What never to recommend."""

    purchased: bool = True
    repurchase: str = "learnt"
    in_cart: bool = False
    current_item: bool = True
    viewed_last: int = 0
    viewed_within_s: float = 0.0
    out_of_stock: bool = True
    items: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Boosters:
    """Multiplicative boosts: score x (1 + sum of weight x signal), each signal in [0, 1]."""

    affinity_category: float = 0.0
    affinity_brand: float = 0.0
    price_near: float = 0.0
    price_tolerance: float = 0.5
    new_arrivals: float = 0.0
    new_within_days: float = 14.0


@dataclass(frozen=True)
class Filters:
    """What a recommended item must satisfy (needs its catalog record)."""

    categories: tuple[str, ...] = ()
    brands: frozenset[str] = frozenset()
    price_min: float | None = None
    price_max: float | None = None
    attributes: tuple[tuple[str, frozenset[Any]], ...] = ()

    @property
    def active(self) -> bool:
        """Whether any filter is set."""
        return bool(
            self.categories
            or self.brands
            or self.attributes
            or self.price_min is not None
            or self.price_max is not None
        )


@dataclass(frozen=True)
class Diversity:
    """At most this many items per leaf category / per brand (0: no limit)."""

    max_per_category: int = 0
    max_per_brand: int = 0


@dataclass(frozen=True)
class Recipe:
    """A validated recipe."""

    name: str
    ingredients: Mapping[str, float]
    normalise: str = "rank"
    rank_offset: float = 10.0
    exclusions: Exclusions = field(default_factory=Exclusions)
    boosters: Boosters = field(default_factory=Boosters)
    filters: Filters = field(default_factory=Filters)
    diversity: Diversity = field(default_factory=Diversity)
    fallbacks: tuple[str, ...] = ("trending_in_category", "trending")

    def needed(self) -> list[str]:
        """The candidate lists `apply` will read (ingredients with weight > 0, then fallbacks)."""
        names = [k for k, w in self.ingredients.items() if w > 0]
        return list(dict.fromkeys([*names, *self.fallbacks]))


# ---------------------------------------------------------------------------- parsing


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RecipeError(path, "must be a mapping")
    return value


def _known(data: Mapping[str, Any], allowed: Sequence[str], path: str) -> None:
    unknown = sorted(set(map(str, data)) - set(allowed))
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise RecipeError(where, f"unknown field (allowed: {', '.join(allowed)})")


def _number(value: Any, path: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise RecipeError(path, "must be a number")
    if value < minimum:
        raise RecipeError(path, f"must be >= {minimum:g}")
    return float(value)


def _int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RecipeError(path, "must be a non-negative integer")
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise RecipeError(path, "must be true or false")
    return value


def _choice(value: Any, allowed: Sequence[str], path: str) -> str:
    if value not in allowed:
        raise RecipeError(path, f"must be one of {', '.join(allowed)}")
    return str(value)


def _strings(value: Any, path: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
        raise RecipeError(path, "must be a string or a list of strings")
    return [str(v) for v in value]


def _weighted(value: Any, path: str, extra: str, default: float) -> tuple[float, float]:
    """`0.2` or `{weight: 0.2, <extra>: x}` -> (weight, extra value)."""
    if isinstance(value, Mapping):
        _known(value, ["weight", extra], path)
        weight = _number(value.get("weight", 0.0), f"{path}.weight")
        return weight, _number(value.get(extra, default), f"{path}.{extra}")
    return _number(value, path), default


def parse_recipe(data: Mapping[str, Any], name: str | None = None) -> Recipe:
    """Validate a recipe dict; raises RecipeError naming the first bad field."""
    if not isinstance(data, Mapping):
        raise RecipeError("recipe", "must be a mapping")
    _known(
        data,
        [
            "name",
            "ingredients",
            "normalise",
            "rank_offset",
            "exclusions",
            "boosters",
            "filters",
            "diversity",
            "fallbacks",
        ],
        "",
    )
    rname = data.get("name", name)
    if not isinstance(rname, str) or not rname:
        raise RecipeError("name", "must be a non-empty string")

    raw = _mapping(data.get("ingredients"), "ingredients")
    if not raw:
        raise RecipeError("ingredients", "at least one ingredient is required")
    _known(raw, INGREDIENTS, "ingredients")
    ingredients = {k: _number(v, f"ingredients.{k}") for k, v in raw.items()}
    if not any(ingredients.values()):
        raise RecipeError("ingredients", "at least one weight must be > 0")

    normalise = data.get("normalise", "rank")
    if normalise not in ("max", "rank"):
        raise RecipeError("normalise", "must be 'max' or 'rank'")
    rank_offset = _number(data.get("rank_offset", 10.0), "rank_offset")
    if rank_offset <= 0:
        raise RecipeError("rank_offset", "must be > 0")

    ex = _mapping(data.get("exclusions"), "exclusions")
    _known(ex, list(Exclusions.__dataclass_fields__), "exclusions")
    exclusions = Exclusions(
        purchased=_bool(ex.get("purchased", True), "exclusions.purchased"),
        repurchase=_choice(ex.get("repurchase", "learnt"), REPURCHASE_MODES,
                           "exclusions.repurchase"),
        in_cart=_bool(ex.get("in_cart", False), "exclusions.in_cart"),
        current_item=_bool(ex.get("current_item", True), "exclusions.current_item"),
        viewed_last=_int(ex.get("viewed_last", 0), "exclusions.viewed_last"),
        viewed_within_s=_number(ex.get("viewed_within_s", 0), "exclusions.viewed_within_s"),
        out_of_stock=_bool(ex.get("out_of_stock", True), "exclusions.out_of_stock"),
        items=frozenset(_strings(ex.get("items", []), "exclusions.items")),
    )

    bo = _mapping(data.get("boosters"), "boosters")
    _known(bo, ["affinity_category", "affinity_brand", "price_near", "new_arrivals"], "boosters")
    price_w, tol = _weighted(bo.get("price_near", 0.0), "boosters.price_near", "tolerance", 0.5)
    if tol <= 0:
        raise RecipeError("boosters.price_near.tolerance", "must be > 0")
    new_w, days = _weighted(bo.get("new_arrivals", 0.0), "boosters.new_arrivals", "within_days", 14)
    if days <= 0:
        raise RecipeError("boosters.new_arrivals.within_days", "must be > 0")
    boosters = Boosters(
        affinity_category=_number(bo.get("affinity_category", 0.0), "boosters.affinity_category"),
        affinity_brand=_number(bo.get("affinity_brand", 0.0), "boosters.affinity_brand"),
        price_near=price_w,
        price_tolerance=tol,
        new_arrivals=new_w,
        new_within_days=days,
    )

    fi = _mapping(data.get("filters"), "filters")
    _known(fi, ["category", "categories", "brand", "brands", "price", "attributes"], "filters")
    cats = _strings(fi.get("category", []), "filters.category")
    cats += _strings(fi.get("categories", []), "filters.categories")
    brands = _strings(fi.get("brand", []), "filters.brand")
    brands += _strings(fi.get("brands", []), "filters.brands")
    price = _mapping(fi.get("price"), "filters.price")
    _known(price, ["min", "max"], "filters.price")
    pmin = _number(price["min"], "filters.price.min") if "min" in price else None
    pmax = _number(price["max"], "filters.price.max") if "max" in price else None
    if pmin is not None and pmax is not None and pmin > pmax:
        raise RecipeError("filters.price", "min must not exceed max")
    attrs = []
    for key, val in _mapping(fi.get("attributes"), "filters.attributes").items():
        path = f"filters.attributes.{key}"
        if isinstance(val, Mapping):
            _known(val, ["in"], path)
            if not isinstance(val.get("in"), list) or not val["in"]:
                raise RecipeError(f"{path}.in", "must be a non-empty list")
            attrs.append((str(key), frozenset(val["in"])))
        elif isinstance(val, str | int | float | bool):
            attrs.append((str(key), frozenset([val])))
        else:
            raise RecipeError(path, "must be a value or {in: [values]}")
    filters = Filters(
        categories=tuple(c.strip("/") for c in cats),
        brands=frozenset(brands),
        price_min=pmin,
        price_max=pmax,
        attributes=tuple(attrs),
    )

    di = _mapping(data.get("diversity"), "diversity")
    _known(di, ["max_per_category", "max_per_brand"], "diversity")
    diversity = Diversity(
        max_per_category=_int(di.get("max_per_category", 0), "diversity.max_per_category"),
        max_per_brand=_int(di.get("max_per_brand", 0), "diversity.max_per_brand"),
    )

    fallbacks = _strings(data.get("fallbacks", ["trending_in_category", "trending"]), "fallbacks")
    for k, fb in enumerate(fallbacks):
        if fb not in INGREDIENTS:
            raise RecipeError(f"fallbacks[{k}]", f"unknown ingredient {fb!r}")

    return Recipe(
        name=rname,
        ingredients=ingredients,
        normalise=normalise,
        rank_offset=rank_offset,
        exclusions=exclusions,
        boosters=boosters,
        filters=filters,
        diversity=diversity,
        fallbacks=tuple(fallbacks),
    )


# ---------------------------------------------------------------------------- applying


def _label(path: str) -> str:
    """`"apparel/shoes"` -> `"shoes"`."""
    return path.rstrip("/").rsplit("/", 1)[-1].replace("_", " ")


def reason(ingredient: str, via: str, catalog: CatalogLookup) -> str:
    """A short human reason for an item that came from `ingredient` via `via`."""
    if ingredient in ("co_view", "co_buy") and via:
        record = catalog(via) or {}
        name = record.get("name") or via
        return f"{'viewed' if ingredient == 'co_view' else 'bought'} with {name}"
    if ingredient == "next_item" and via:
        record = catalog(via) or {}
        return f"viewed next after {record.get('name') or via}"
    if ingredient == "session_knn" and via:
        record = catalog(via) or {}
        return f"viewed in sessions with {record.get('name') or via}"
    if ingredient == "trending_in_category" and via:
        return f"trending in {_label(via)}"
    if ingredient == "affinity" and via:
        return f"you like {_label(via)}"
    return {
        "history": "recently viewed",
        "cf": "picked for you",
        "session_knn": "viewed in sessions like yours",
        "trending": "trending now",
        "trending_in_category": "trending now",
        "affinity": "matches your taste",
    }.get(ingredient, "recommended")


def _in_category(item_cats: Sequence[str], wanted: str) -> bool:
    return any(c == wanted or c.startswith(wanted + "/") for c in item_cats)


def _passes(record: Mapping[str, Any] | None, filters: Filters) -> bool:
    if not filters.active:
        return True
    if record is None:
        return False
    cats = record.get("categories") or []
    if filters.categories and not any(_in_category(cats, c) for c in filters.categories):
        return False
    if filters.brands and record.get("brand") not in filters.brands:
        return False
    if filters.price_min is not None or filters.price_max is not None:
        price = record.get("price")
        if not isinstance(price, int | float):
            return False
        if filters.price_min is not None and price < filters.price_min:
            return False
        if filters.price_max is not None and price > filters.price_max:
            return False
    for key, allowed in filters.attributes:
        value = record.get(key, (record.get("attributes") or {}).get(key))
        if value not in allowed:
            return False
    return True


def _out_of_stock(record: Mapping[str, Any] | None) -> bool:
    if record is None:
        return False
    if record.get("in_stock") is False or record.get("available") is False:
        return True
    stock = record.get("stock")
    return isinstance(stock, int | float) and not isinstance(stock, bool) and stock <= 0


def _created_ms(record: Mapping[str, Any]) -> float | None:
    value = record.get("created_at")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return None
        if dt.tzinfo is not None:
            return dt.timestamp() * 1000.0
    return None


def excluded_ids(
    recipe: Recipe, visitor: Mapping[str, Any], context: Mapping[str, Any]
) -> set[str]:
    """Ids excluded by the recipe for this visitor and request (stock is checked separately)."""
    ex = recipe.exclusions
    out = set(ex.items)
    if ex.purchased:
        out.update(visitor.get("purchased", ()))
    if ex.in_cart:
        out.update(visitor.get("cart", ()))
    if ex.current_item and context.get("item_id"):
        out.add(str(context["item_id"]))
    recent = visitor.get("recent", ())
    if ex.viewed_last:
        out.update(iid for iid, _ in list(recent)[: ex.viewed_last])
    if ex.viewed_within_s and context.get("now_ms") is not None:
        since = float(context["now_ms"]) - ex.viewed_within_s * 1000.0
        out.update(iid for iid, ts in recent if ts >= since)
    return out


@functools.lru_cache(maxsize=16_384)
def _ancestors(path: str) -> tuple[str, ...]:
    """`category_ancestors`, kept: the booster asks it for every candidate's categories, which
    are the same few thousand paths request after request."""
    return tuple(category_ancestors(path))


class _Booster:
    """`boost` for one request: the visitor's shares are normalised once, not per candidate."""

    def __init__(self, recipe: Recipe, visitor: Mapping[str, Any],
                 context: Mapping[str, Any]) -> None:
        bo = self.bo = recipe.boosters
        cats: Mapping[str, float] = visitor.get("categories") or {}
        brands: Mapping[str, float] = visitor.get("brands") or {}
        top_c, top_b = max(cats.values(), default=0.0), max(brands.values(), default=0.0)
        self.cats = {c: s / top_c for c, s in cats.items()} if bo.affinity_category and top_c > 0 else {}
        self.brands = {b: s / top_b for b, s in brands.items()} if bo.affinity_brand and top_b > 0 else {}
        self.typical = visitor.get("typical_price") if bo.price_near else None
        self.log_tol = math.log1p(bo.price_tolerance)
        now = context.get("now_ms")
        self.now = float(now) if bo.new_arrivals and now is not None else None

    def __call__(self, record: Mapping[str, Any] | None) -> float:
        if record is None:
            return 1.0
        bo = self.bo
        total = 0.0
        if self.cats:
            # the strongest of the visitor's categories that holds the item (an item in
            # "a/b/c" is in "a/b/c", "a/b" and "a")
            best = 0.0
            for c in record.get("categories") or ():
                for p in _ancestors(c):
                    share = self.cats.get(p)
                    if share is not None and share > best:
                        best = share
            total += bo.affinity_category * best
        if self.brands:
            brand = record.get("brand")
            if brand:
                total += bo.affinity_brand * self.brands.get(brand, 0.0)
        typical = self.typical
        price = record.get("price")
        if typical and isinstance(price, int | float) and price > 0:
            gap = abs(math.log(price / typical)) / self.log_tol
            total += bo.price_near * max(0.0, 1.0 - gap)
        if self.now is not None:
            created = _created_ms(record)
            if created is not None:
                age_days = (self.now - created) / 86_400_000.0
                if 0 <= age_days <= bo.new_within_days:
                    total += bo.new_arrivals * (1.0 - age_days / bo.new_within_days)
        return 1.0 + total


def boost(
    recipe: Recipe,
    record: Mapping[str, Any] | None,
    visitor: Mapping[str, Any],
    context: Mapping[str, Any],
) -> float:
    """The factor (>= 1) an item's score is multiplied by."""
    return _Booster(recipe, visitor, context)(record)


def _scaled(
    cands: Sequence[Sequence[Any]], how: str, offset: float = 10.0
) -> list[tuple[str, float, str]]:
    """Scores in [0, 1]: `offset / (offset + rank)` for "rank", `score / max` for "max"."""
    rows = [(str(c[0]), float(c[1]), str(c[2]) if len(c) > 2 and c[2] else "") for c in cands]
    if how == "rank":
        return [(iid, offset / (offset + k), via) for k, (iid, _, via) in enumerate(rows)]
    top = max((s for _, s, _ in rows), default=0.0)
    if top <= 0:
        return [(iid, 0.0, via) for iid, _, via in rows]
    return [(iid, s / top, via) for iid, s, via in rows]


class _Picker:
    """Greedy selection under exclusions, filters and the diversity caps."""

    def __init__(
        self,
        recipe: Recipe,
        catalog: CatalogLookup,
        excluded: set[str],
    ) -> None:
        self.recipe = recipe
        self.catalog = catalog
        self.excluded = excluded
        self.chosen: list[Recommendation] = []
        self.ids: set[str] = set()
        self.per_cat: dict[str, int] = {}
        self.per_brand: dict[str, int] = {}

    def record(self, item_id: str) -> Mapping[str, Any] | None:
        return self.catalog(item_id)

    def eligible(self, item_id: str, record: Mapping[str, Any] | None) -> bool:
        if item_id in self.ids or item_id in self.excluded:
            return False
        if self.recipe.exclusions.out_of_stock and _out_of_stock(record):
            return False
        return _passes(record, self.recipe.filters)

    def take(self, rec: Recommendation, record: Mapping[str, Any] | None) -> bool:
        div = self.recipe.diversity
        cats = (record or {}).get("categories") or []
        cat = cats[0] if cats else None
        brand = (record or {}).get("brand")
        if div.max_per_category and cat and self.per_cat.get(cat, 0) >= div.max_per_category:
            return False
        if div.max_per_brand and brand and self.per_brand.get(brand, 0) >= div.max_per_brand:
            return False
        if cat:
            self.per_cat[cat] = self.per_cat.get(cat, 0) + 1
        if brand:
            self.per_brand[brand] = self.per_brand.get(brand, 0) + 1
        self.chosen.append(rec)
        self.ids.add(rec.item_id)
        return True


def apply(
    recipe: Recipe,
    candidates: CandidateLists,
    catalog: CatalogLookup,
    visitor: Mapping[str, Any],
    context: Mapping[str, Any],
    n: int,
) -> list[Recommendation]:
    """Blend, exclude, filter, boost, diversify, then fill from the fallbacks, up to `n` items.

    `visitor` holds `recent` [(item_id, ts_ms)] newest first, `cart`, `purchased` (the bought
    items to exclude), `rebuy` {item_id: reason} (bought items kept, optional), `categories`
    {path: share}, `brands` {brand: share} and `typical_price`; `context` holds the page's
    `item_id` and `category` and `now_ms`; `catalog(item_id)` returns the item's record or None.
    """
    if n <= 0:
        return []
    picker = _Picker(recipe, catalog, excluded_ids(recipe, visitor, context))
    scores: dict[str, float] = {}
    best: dict[str, tuple[float, str, str]] = {}
    for name, weight in recipe.ingredients.items():
        if weight <= 0:
            continue
        for iid, s, via in _scaled(candidates.get(name, ()), recipe.normalise, recipe.rank_offset):
            contribution = weight * s
            scores[iid] = scores.get(iid, 0.0) + contribution
            if iid not in best or contribution > best[iid][0]:
                best[iid] = (contribution, name, via)

    boosted = _Booster(recipe, visitor, context)
    ranked: list[tuple[float, str, Mapping[str, Any] | None]] = []
    for iid, s in scores.items():
        record = picker.record(iid)
        if picker.eligible(iid, record):
            ranked.append((s * boosted(record), iid, record))
    ranked.sort(key=lambda row: (-row[0], row[1]))
    rebuy: Mapping[str, str] = visitor.get("rebuy") or {}
    for s, iid, record in ranked:
        _, name, via = best[iid]
        why = rebuy.get(iid) or reason(name, via, catalog)
        picker.take(Recommendation(iid, s, why, name), record)
        if len(picker.chosen) >= n:
            return picker.chosen

    floor = min((r.score for r in picker.chosen), default=1.0)
    for name in recipe.fallbacks:
        for k, (iid, _, via) in enumerate(_scaled(candidates.get(name, ()), "rank")):
            record = picker.record(iid)
            if not picker.eligible(iid, record):
                continue
            score = floor * 0.5 / (1.0 + k)
            why = rebuy.get(iid) or reason(name, via, catalog)
            picker.take(Recommendation(iid, score, why, name), record)
            if len(picker.chosen) >= n:
                return picker.chosen
        floor = min((r.score for r in picker.chosen), default=1.0)
    return picker.chosen


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
