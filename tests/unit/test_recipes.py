"""Recipes: parsing with clear errors, and every ingredient, exclusion, booster, filter, rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.logic.recipes import RecipeError, apply, parse_recipe

CATALOG: dict[str, dict[str, Any]] = {
    "a": {
        "name": "Alpha phone",
        "categories": ["electronics/phone"],
        "brand": "acme",
        "price": 100.0,
    },
    "b": {
        "name": "Beta phone",
        "categories": ["electronics/phone"],
        "brand": "bolt",
        "price": 300.0,
    },
    "c": {"name": "Case", "categories": ["electronics/accessory"], "brand": "acme", "price": 10.0},
    "d": {
        "name": "Shoe",
        "categories": ["apparel/shoes"],
        "brand": "stride",
        "price": 90.0,
        "color": "red",
        "created_at": 1_000_000_000_000 - 86_400_000,
    },
    "e": {
        "name": "Boot",
        "categories": ["apparel/shoes"],
        "brand": "stride",
        "price": 120.0,
        "color": "blue",
        "stock": 0,
    },
    "f": {
        "name": "Sock",
        "categories": ["apparel/socks"],
        "brand": "acme",
        "price": 5.0,
        "in_stock": True,
    },
}
NOW = 1_000_000_000_000
CTX = {"item_id": None, "category": None, "now_ms": NOW}
EMPTY: dict[str, Any] = {"recent": [], "cart": [], "purchased": [], "categories": {}, "brands": {}}


def recipe(**fields: Any) -> Any:
    data = {
        "name": "t",
        "ingredients": {"trending": 1.0},
        "fallbacks": [],
        "normalise": "max",
        "exclusions": {"purchased": False, "current_item": False, "out_of_stock": False},
    }
    data.update(fields)
    return parse_recipe(data)


def ids(recs: list[Any]) -> list[str]:
    return [r.item_id for r in recs]


def run(
    r: Any,
    cands: dict[str, list[Any]],
    visitor: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    n: int = 10,
) -> list[Any]:
    return apply(r, cands, CATALOG.get, {**EMPTY, **(visitor or {})}, {**CTX, **(context or {})}, n)


# ---------------------------------------------------------------- parsing


def test_default_recipe_file_is_valid() -> None:
    path = Path(__file__).resolve().parents[2] / "config/recipes/default.yaml"
    r = parse_recipe(yaml.safe_load(path.read_text()))
    assert r.name == "default"
    assert "history" in r.needed() and "trending" in r.needed()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"ingredients": {}}, "ingredients"),
        ({"ingredients": {"magic": 1}}, "ingredients.magic"),
        ({"ingredients": {"trending": -1}}, "ingredients.trending"),
        ({"ingredients": {"trending": "lots"}}, "ingredients.trending"),
        ({"ingredients": {"trending": 0}}, "ingredients"),
        ({"colour": 1}, "colour"),
        ({"normalise": "log"}, "normalise"),
        ({"exclusions": {"purchased": "yes"}}, "exclusions.purchased"),
        ({"exclusions": {"viewed_last": -2}}, "exclusions.viewed_last"),
        (
            {"boosters": {"price_near": {"weight": 1, "tolerance": 0}}},
            "boosters.price_near.tolerance",
        ),
        ({"boosters": {"charm": 1}}, "boosters.charm"),
        ({"filters": {"price": {"min": 10, "max": 5}}}, "filters.price"),
        ({"filters": {"attributes": {"size": {"in": []}}}}, "filters.attributes.size.in"),
        ({"diversity": {"max_per_brand": 1.5}}, "diversity.max_per_brand"),
        ({"fallbacks": ["trending", "nope"]}, "fallbacks[1]"),
        ({"name": ""}, "name"),
    ],
)
def test_parse_errors_name_the_field(data: dict[str, Any], field: str) -> None:
    full = {"name": "t", "ingredients": {"trending": 1}, **data}
    with pytest.raises(RecipeError) as info:
        parse_recipe(full)
    assert info.value.field == field
    assert str(info.value).startswith(field)


# ---------------------------------------------------------------- ingredients and reasons


@pytest.mark.parametrize(
    ("ingredient", "via", "reason"),
    [
        ("trending", "", "trending now"),
        ("trending_in_category", "apparel/shoes", "trending in shoes"),
        ("co_view", "a", "viewed with Alpha phone"),
        ("co_buy", "a", "bought with Alpha phone"),
        ("affinity", "acme", "you like acme"),
        ("history", "b", "recently viewed"),
        ("cf", "", "picked for you"),
    ],
)
def test_each_ingredient_yields_items_with_a_reason(ingredient: str, via: str, reason: str) -> None:
    r = recipe(ingredients={ingredient: 1.0})
    recs = run(r, {ingredient: [("b", 2.0, via), ("c", 1.0, via)]})
    assert ids(recs) == ["b", "c"]
    assert recs[0].reason == reason
    assert recs[0].ingredient == ingredient


def test_blend_weights_and_reason_of_strongest_contribution() -> None:
    r = recipe(ingredients={"history": 1.0, "co_view": 3.0}, normalise="max")
    cands = {"history": [("a", 1.0, "a"), ("b", 0.5, "b")], "co_view": [("b", 1.0, "c")]}
    recs = run(r, cands)
    assert ids(recs) == ["b", "a"]  # b: 0.5 + 3 > a: 1
    assert recs[0].reason == "viewed with Case"
    assert recs[0].score == pytest.approx(3.5)


def test_rank_normalisation() -> None:
    r = recipe(ingredients={"history": 1.0, "co_view": 1.0}, normalise="rank", rank_offset=1)
    cands = {"history": [("a", 100.0, ""), ("b", 50.0, "")], "co_view": [("c", 0.001, "a")]}
    recs = run(r, cands)
    assert [(x.item_id, round(x.score, 3)) for x in recs] == [("a", 1.0), ("c", 1.0), ("b", 0.5)]


# ---------------------------------------------------------------- exclusions


@pytest.mark.parametrize(
    ("exclusions", "visitor", "context", "gone"),
    [
        ({"purchased": True}, {"purchased": ["a"]}, {}, {"a"}),
        ({"in_cart": True}, {"cart": ["b"]}, {}, {"b"}),
        ({"current_item": True}, {}, {"item_id": "c"}, {"c"}),
        (
            {"viewed_last": 2},
            {"recent": [("d", NOW), ("a", NOW - 5), ("b", NOW - 9)]},
            {},
            {"d", "a"},
        ),
        (
            {"viewed_within_s": 60},
            {"recent": [("d", NOW - 1_000), ("a", NOW - 120_000)]},
            {},
            {"d"},
        ),
        ({"out_of_stock": True}, {}, {}, {"e"}),
        ({"items": ["f", "a"]}, {}, {}, {"f", "a"}),
    ],
)
def test_exclusions(
    exclusions: dict[str, Any], visitor: dict[str, Any], context: dict[str, Any], gone: set[str]
) -> None:
    base = {"purchased": False, "current_item": False, "out_of_stock": False}
    r = recipe(exclusions={**base, **exclusions})
    cands = {"trending": [(i, 10.0 - k, "") for k, i in enumerate("abcdef")]}
    assert set(ids(run(r, cands, visitor, context))) == set("abcdef") - gone


# ---------------------------------------------------------------- boosters


def test_affinity_category_booster() -> None:
    r = recipe(boosters={"affinity_category": 1.0})
    cands = {"trending": [("a", 1.0, ""), ("d", 0.9, "")]}
    assert ids(run(r, cands)) == ["a", "d"]
    assert ids(run(r, cands, {"categories": {"apparel": 0.6, "electronics/phone": 0.1}})) == [
        "d",
        "a",
    ]


def test_affinity_brand_booster() -> None:
    r = recipe(boosters={"affinity_brand": 1.0})
    cands = {"trending": [("b", 1.0, ""), ("a", 0.9, "")]}
    assert ids(run(r, cands, {"brands": {"acme": 0.7, "bolt": 0.1}})) == ["a", "b"]


def test_price_near_booster() -> None:
    r = recipe(boosters={"price_near": {"weight": 1.0, "tolerance": 0.5}})
    cands = {"trending": [("b", 1.0, ""), ("a", 0.8, "")]}
    recs = run(r, cands, {"typical_price": 100.0})
    assert ids(recs) == ["a", "b"]
    assert recs[0].score == pytest.approx(1.6)  # exact match doubles the score
    assert recs[1].score == pytest.approx(1.0)  # 3x the price is outside the tolerance


def test_new_arrivals_booster() -> None:
    r = recipe(boosters={"new_arrivals": {"weight": 1.0, "within_days": 10}})
    cands = {"trending": [("e", 1.0, ""), ("d", 0.6, "")]}
    recs = run(r, cands)
    assert ids(recs) == ["d", "e"]
    assert recs[0].score == pytest.approx(0.6 * 1.9)


# ---------------------------------------------------------------- filters


@pytest.mark.parametrize(
    ("filters", "kept"),
    [
        ({"category": "apparel"}, {"d", "e", "f"}),
        ({"categories": ["apparel/shoes", "electronics/accessory"]}, {"c", "d", "e"}),
        ({"brand": "acme"}, {"a", "c", "f"}),
        ({"brands": ["bolt", "stride"]}, {"b", "d", "e"}),
        ({"price": {"min": 50, "max": 150}}, {"a", "d", "e"}),
        ({"attributes": {"color": "red"}}, {"d"}),
        ({"attributes": {"color": {"in": ["red", "blue"]}}}, {"d", "e"}),
    ],
)
def test_filters(filters: dict[str, Any], kept: set[str]) -> None:
    r = recipe(filters=filters)
    cands = {"trending": [(i, 1.0, "") for i in "abcdefz"]}  # z is not in the catalog
    assert set(ids(run(r, cands))) == kept


# ---------------------------------------------------------------- diversity and fallbacks


def test_diversity_per_category_and_brand() -> None:
    cands = {"trending": [(i, 10.0 - k, "") for k, i in enumerate("abcdef")]}
    by_cat = recipe(diversity={"max_per_category": 1})
    assert ids(run(by_cat, cands)) == ["a", "c", "d", "f"]
    by_brand = recipe(diversity={"max_per_brand": 1})
    assert ids(run(by_brand, cands)) == ["a", "b", "d"]


def test_fallbacks_fill_cold_start_in_order() -> None:
    r = recipe(ingredients={"history": 1.0}, fallbacks=["trending_in_category", "trending"])
    cands = {
        "history": [],
        "trending_in_category": [("d", 5.0, "apparel/shoes"), ("e", 4.0, "apparel/shoes")],
        "trending": [("d", 9.0, ""), ("a", 8.0, ""), ("b", 7.0, "")],
    }
    recs = run(r, cands, n=4)
    assert ids(recs) == ["d", "e", "a", "b"]
    assert [x.reason for x in recs] == ["trending in shoes"] * 2 + ["trending now"] * 2
    assert all(x.score > y.score for x, y in zip(recs, recs[1:], strict=False))


def test_fallbacks_only_fill_what_is_missing() -> None:
    r = recipe(ingredients={"history": 1.0}, fallbacks=["trending"])
    cands = {"history": [("a", 1.0, ""), ("b", 0.5, "")], "trending": [("c", 1.0, "")]}
    assert ids(run(r, cands, n=2)) == ["a", "b"]
    assert ids(run(r, cands, n=3)) == ["a", "b", "c"]
    assert run(r, cands, n=0) == []

