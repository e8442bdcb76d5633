"""The sitemap compiler: the shipped file compiles, patterns behave, every kind of error names
file, line and field; the served bundle follows the file (hot reload, last good kept)."""

from __future__ import annotations

import json
import logging
import re
import textwrap
from pathlib import Path

import pytest

from engine.flows.beacon import BeaconSource
from engine.logic.sitemap import (
    SitemapError,
    beacon_bundle,
    compile_sitemap,
    load,
    served_sitemap,
)

ROOT = Path(__file__).resolve().parents[2]


def compile_(text: str) -> dict:
    return compile_sitemap(textwrap.dedent(text), "site.yaml")


def errors(text: str) -> list[tuple[int, str, str]]:
    with pytest.raises(SitemapError) as e:
        compile_(text)
    return [(i.line, i.field, i.message) for i in e.value.issues]


def only_error(text: str) -> tuple[int, str, str]:
    errs = errors(text)
    assert len(errs) == 1, errs
    return errs[0]


# --- the shipped sitemap --------------------------------------------------------------------------


def test_shipped_sitemap_compiles_to_json():
    sm = load(ROOT / "config" / "sitemap.yaml")
    assert json.loads(json.dumps(sm)) == sm
    names = [p["name"] for p in sm["page_types"]]
    assert names[:6] == ["home", "category", "product", "cart", "checkout", "search"]
    product = sm["page_types"][2]
    assert product["kind"] == "product"
    assert product["item"]["json_ld"] is True
    assert product["item"]["fields"]["id"] == {
        "sel": "[data-product-id]",
        "attr": "data-product-id",
    }
    assert product["item"]["fields"]["categories"]["all"] is True
    assert product["zones"] == {"pdp_recs": "#similar-items"}
    assert sm["page_types"][-1]["kind"] == "custom"
    assert sm["data_layer"]["events"]["purchase"] == "purchase"
    assert sm["exit_intent"]["min_ms"] == 5000


def page_type_for(sm: dict, path: str) -> str | None:
    """What the beacon does: the first page type with a matching pattern."""
    for pt in sm["page_types"]:
        if any(re.search(p, path) for p in pt["match"]):
            return pt["name"]
    return None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "home"),
        ("/c/shoes", "category"),
        ("/c/shoes/running/", "category"),
        ("/p/sku-123", "product"),
        ("/p/sku-123/", "product"),
        ("/p/", None),
        ("/p/a/b", None),
        ("/cart", "cart"),
        ("/checkout/payment", "checkout"),
        ("/search", "search"),
        ("/lp/spring-sale", "landing"),
        ("/about", None),
        # the demo shop (engine/routes/demo.py) lives under /demo
        ("/demo", "home"),
        ("/demo/", "home"),
        ("/demo/c/computers/notebook", "category"),
        ("/demo/p/1307067", "product"),
        ("/demo/p/1307067/extra", None),
        ("/demo/cart", "cart"),
        ("/demo/checkout", "checkout"),
        ("/demo/checkout/done", "checkout"),
        ("/demo/search", "search"),
        ("/demo/about", None),
    ],
)
def test_url_patterns_route_paths(path, expected):
    assert page_type_for(load(ROOT / "config" / "sitemap.yaml"), path) == expected


def test_glob_escapes_regex_characters_and_first_match_wins():
    sm = compile_(
        """
        page_types:
          special: {kind: custom, url: "/a.b/(x)"}
          product: {url: "/**"}
        """
    )
    assert page_type_for(sm, "/a.b/(x)") == "special"
    assert page_type_for(sm, "/aXb/(x)") == "product"


def test_defaults_for_known_kinds():
    sm = compile_(
        """
        page_types:
          product: {url: /p/*}
          search: {url: /search}
          promo: {url: /promo, kind: category}
        """
    )
    product, search, promo = sm["page_types"]
    assert product["item"] == {"json_ld": True, "fields": {}}
    assert search["query_param"] == "q"
    assert promo["kind"] == "category"
    assert sm["events"] == []
    assert sm["exit_intent"] == {
        "enabled": True,
        "scope": "session",
        "min_ms": 5000,
        "idle_ms": 30000,
    }


# --- errors: file, line, field ---------------------------------------------------------------------


def test_yaml_syntax_error_has_line():
    line, field, msg = only_error(
        """
        page_types:
          home:
            url: [/, {
        """
    )
    assert line >= 4 and field == "" and msg.startswith("YAML syntax")


def test_error_string_names_file_line_field():
    with pytest.raises(SitemapError) as e:
        compile_sitemap("page_types:\n  home:\n    url: home\n", "config/sitemap.yaml")
    assert str(e.value) == (
        "config/sitemap.yaml:3: page_types.home.url: a URL pattern is a path starting with '/': 'home'"
    )


def test_load_names_the_file(tmp_path):
    f = tmp_path / "sitemap.yaml"
    f.write_text("page_types:\n  home: {url: /, zones: {hero: '#a{'}}\n")
    with pytest.raises(SitemapError) as e:
        load(f)
    assert str(e.value).startswith(f"{f}:2: page_types.home.zones.hero: not a valid CSS selector")
    with pytest.raises(SitemapError, match="cannot read"):
        load(tmp_path / "missing.yaml")


def test_empty_file():
    assert errors("") == [(1, "", "the file is empty")]


def test_top_level_must_be_mapping_and_known_fields():
    assert only_error("- a\n") == (1, "", "must be a mapping")
    line, field, msg = only_error(
        """
        page_types:
          home: {url: /}
        pages: {}
        """
    )
    assert (line, field) == (4, "pages") and msg.startswith("unknown field")


def test_missing_page_types_and_bad_version():
    assert errors("version: 2\n") == [
        (1, "version", "only version 1 is supported"),
        (1, "", "page_types is required"),
    ]


def test_unknown_field_in_page_type():
    line, field, msg = only_error(
        """
        page_types:
          home:
            url: /
            zone: {hero: "#hero"}
        """
    )
    assert (line, field) == (5, "page_types.home.zone") and "unknown field" in msg


def test_duplicate_key():
    assert only_error(
        """
        page_types:
          home: {url: /}
          home: {url: /index}
        """
    ) == (4, "page_types.home", "duplicate key")


def test_bad_page_type_name_and_kind():
    errs = errors(
        """
        page_types:
          Home: {url: /}
          promo: {url: /promo, kind: landing}
        """
    )
    assert errs[0][:2] == (3, "page_types.Home") and "page type name" in errs[0][2]
    assert errs[1][:2] == (4, "page_types.promo.kind") and "must be one of" in errs[1][2]


def test_url_errors():
    errs = errors(
        """
        page_types:
          a: {kind: custom}
          b: {kind: custom, url: ["/ok", "/search?q=x"]}
          c: {kind: custom, url: []}
        """
    )
    assert errs[0] == (3, "page_types.a", "needs url (path patterns) or url_regex")
    assert errs[1][:2] == (4, "page_types.b.url[1]") and "path only" in errs[1][2]
    assert errs[2][:2] == (5, "page_types.c.url") and "non-empty list" in errs[2][2]


def test_url_regex_errors():
    errs = errors(
        """
        page_types:
          a:
            kind: custom
            url_regex: "^/a/(["
          b:
            kind: custom
            url_regex: "^/b/(?P<id>[0-9]+)$"
        """
    )
    assert errs[0][:2] == (5, "page_types.a.url_regex") and "invalid regex" in errs[0][2]
    assert errs[1][:2] == (8, "page_types.b.url_regex") and "JavaScript" in errs[1][2]


def test_item_errors():
    errs = errors(
        """
        page_types:
          product:
            url: /p/*
            item:
              json_ld: yes please
              selectors:
                id: "[data-id] @data id"
                colour: ".colour"
                price: ".price["
        """
    )
    fields = [(line, field) for line, field, _ in errs]
    assert (6, "page_types.product.item.json_ld") in fields
    assert (8, "page_types.product.item.selectors.id") in fields
    assert (9, "page_types.product.item.selectors.colour") in fields
    assert (10, "page_types.product.item.selectors.price") in fields


def test_item_needs_a_source():
    line, field, msg = only_error(
        """
        page_types:
          product:
            url: /p/*
            item: {json_ld: false}
        """
    )
    assert (line, field) == (5, "page_types.product.item") and "json_ld" in msg


def test_zone_errors():
    errs = errors(
        """
        page_types:
          home:
            url: /
            zones:
              Hero: "#hero"
              exit_intent: "#popup"
              recs: ""
          cart:
            url: /cart
            zones: "#recs"
        """
    )
    assert [(line, field) for line, field, _ in errs] == [
        (6, "page_types.home.zones.Hero"),
        (7, "page_types.home.zones.exit_intent"),
        (8, "page_types.home.zones.recs"),
        (11, "page_types.cart.zones"),
    ]


def test_event_rule_errors():
    errs = errors(
        """
        page_types:
          home: {url: /}
        events:
          - type: add_to_basket
            click: ".add"
          - type: add_to_cart
          - type: purchase
            click: "#buy"
            page_types: [checkout]
          - type: add_to_cart
            click: "button:not(.x"
        """
    )
    assert [(line, field) for line, field, _ in errs] == [
        (5, "events[0].type"),
        (7, "events[1]"),
        (10, "events[2].page_types[0]"),
        (12, "events[3].click"),
    ]
    assert "unknown page type 'checkout'" in errs[2][2]


def test_data_layer_errors():
    errs = errors(
        """
        page_types:
          home: {url: /}
        data_layer:
          name: "data-layer"
          events:
            purchase: buy
        """
    )
    assert [(line, field) for line, field, _ in errs] == [
        (5, "data_layer.name"),
        (7, "data_layer.events.purchase"),
    ]


def test_exit_intent_errors():
    errs = errors(
        """
        page_types:
          home: {url: /}
        exit_intent:
          enabled: "yes"
          scope: visit
          min_seconds: -1
          idle_seconds: true
          page_types: [home, blog]
          delay: 3
        """
    )
    assert [(line, field) for line, field, _ in errs] == [
        (10, "exit_intent.delay"),
        (5, "exit_intent.enabled"),
        (6, "exit_intent.scope"),
        (7, "exit_intent.min_seconds"),
        (8, "exit_intent.idle_seconds"),
        (9, "exit_intent.page_types[1]"),
    ]


def test_all_errors_are_reported_together():
    errs = errors(
        """
        page_types:
          home: {url: home}
          cart: {url: /cart, zones: {recs: "a{"}}
        """
    )
    assert [line for line, _, _ in errs] == [3, 4]


# --- serving -------------------------------------------------------------------------------------


def test_served_sitemap_drops_what_the_beacon_never_reads():
    sm = compile_(
        """
        page_types:
          home: {url: /, zones: {hero: "#hero"}}
          checkout: {url: /checkout}
        exit_intent: {enabled: true, scope: page, min_seconds: 5, idle_seconds: 12}
        """
    )
    out = served_sitemap(sm)
    assert "version" not in out and all("kind" not in pt for pt in out["page_types"])
    assert out["page_types"][0]["zones"] == {"hero": "#hero"} and "zones" not in out["page_types"][1]
    assert out["exit_intent"] == {"scope": "page", "idle_ms": 12000}  # the beacon's defaults left out
    off = compile_("page_types:\n  home: {url: /}\nexit_intent: {enabled: false}\n")
    assert served_sitemap(off)["exit_intent"]["enabled"] is False


def test_served_sitemap_writes_item_selectors_in_their_yaml_form():
    sm = compile_(
        """
        page_types:
          product:
            url: /p/*
            item:
              selectors: {id: "[data-id] @data-id", name: h1, categories: nav a, tags: .tag}
        """
    )
    assert sm["page_types"][0]["item"]["fields"]["id"] == {"sel": "[data-id]", "attr": "data-id"}
    assert served_sitemap(sm)["page_types"][0]["item"] == {
        "json_ld": False,
        "fields": {"id": "[data-id] @data-id", "name": "h1", "categories": "nav a", "tags": ".tag"},
    }


def test_served_sitemap_joins_url_patterns_that_differ_by_a_literal_prefix():
    sm = compile_(
        """
        page_types:
          category: {url: ["/c/**", "/category/**", "/demo/c/**"]}
          checkout: {url: [/checkout, "/checkout/**", /demo/checkout, "/demo/checkout/**"]}
          home: {url: [/, /demo]}
          intl: {url: [/p/*, /en-us/p/*]}
          refs: {url_regex: ["^/a/(x)\\\\1$", "^/b/a/(x)\\\\1$"]}
        """
    )
    served = {pt["name"]: pt["match"] for pt in served_sitemap(sm)["page_types"]}
    assert served["category"] == ["^(/demo)?/c/.*/?$", "^/category/.*/?$"]
    assert served["checkout"] == ["^(/demo)?/checkout/?$", "^(/demo)?/checkout/.*/?$"]
    assert served["home"] == ["^/$", "^/demo/?$"]  # no literal prefix in common: as compiled
    assert len(served["intl"]) == 1
    assert len(served["refs"]) == 2  # a back-reference would be renumbered by the new group
    # the same paths match, one pattern list or the other
    paths = ["/", "/demo", "/demo/", "/c/shoes", "/demo/c/a/b", "/category/x", "/demo/category/x",
             "/checkout", "/demo/checkout/pay", "/p/1", "/en-us/p/1", "/en-us/p", "/a/xx", "/b/a/xx",
             "/demo/demo/c/x", "/xdemo/c/x"]
    for pt in sm["page_types"]:
        for path in paths:
            before = any(re.search(p, path) for p in pt["match"])
            after = any(re.search(p, path) for p in served[pt["name"]])
            assert before == after, (pt["name"], path)


def test_beacon_bundle_prepends_the_sitemap():
    sm = compile_(
        """
        page_types:
          home: {url: /, zones: {hero: "div[title='</script>']"}}
        """
    )
    body, etag = beacon_bundle(sm, b"(()=>{})();")
    head, _, tail = body.partition(b";\n")
    assert head.startswith(b"window.__kairosSitemap=")
    assert b"</script>" not in body and b"\\u003c/script>" in head
    assert json.loads(head[len(b"window.__kairosSitemap=") :]) == served_sitemap(sm)
    assert tail == b"(()=>{})();"
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert beacon_bundle(sm, b"(()=>{})();")[1] == etag
    assert beacon_bundle(sm, b"(()=>{1})();")[1] != etag


# --- serving: GET /sdk/kairos.js follows the files ------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _source(tmp_path: Path, sitemap: str | None, beacon: bytes | None) -> tuple[BeaconSource, _Clock]:
    sm, dist = tmp_path / "sitemap.yaml", tmp_path / "kairos.js"
    if sitemap is not None:
        sm.write_text(textwrap.dedent(sitemap))
    if beacon is not None:
        dist.write_bytes(beacon)
    clock = _Clock()
    src = BeaconSource(sm, dist, clock)
    src.load_initial()
    return src, clock


def _served_sitemap(src: BeaconSource) -> dict | None:
    b = src.current()
    assert b is not None
    head, sep, _ = b.body.partition(b";\n")
    if not head.startswith(b"window.__kairosSitemap="):
        return None
    return json.loads(head[len(b"window.__kairosSitemap=") :])


def test_bundle_hot_reloads_the_sitemap_and_keeps_the_last_good_one(tmp_path, caplog):
    src, clock = _source(tmp_path, "page_types:\n  home: {url: /}\n", b"beacon();")
    first = src.current()
    assert first is not None and first.body.endswith(b"beacon();")
    assert [p["name"] for p in _served_sitemap(src)["page_types"]] == ["home"]

    (tmp_path / "sitemap.yaml").write_text("page_types:\n  home: {url: /}\n  cart: {url: /cart}\n")
    assert src.current() is first  # checked at most once a second
    clock.t += 1.5
    second = src.current()
    assert [p["name"] for p in _served_sitemap(src)["page_types"]] == ["home", "cart"]
    assert second is not None and second.etag != first.etag

    (tmp_path / "sitemap.yaml").write_text("page_types:\n  home:\n    url: nope\n")
    clock.t += 1.5
    with caplog.at_level(logging.ERROR, logger="kairos.sdk"):
        assert src.current() is second  # the last good sitemap stays in service
    assert "sitemap.yaml:3: page_types.home.url:" in caplog.text


def test_bundle_follows_a_rebuilt_beacon_and_works_without_a_sitemap(tmp_path):
    src, clock = _source(tmp_path, None, b"v1();")
    b = src.current()
    assert b is not None and b.body == b"v1();" and re.fullmatch(r'"[0-9a-f]{32}"', b.etag)
    (tmp_path / "kairos.js").write_bytes(b"v2-longer();")
    clock.t += 1.5
    assert src.current().body == b"v2-longer();"
    (tmp_path / "kairos.js").unlink()
    clock.t += 1.5
    assert src.current() is None  # -> 503 "run kairos setup"


def test_invalid_sitemap_at_start_up_names_file_and_line(tmp_path):
    with pytest.raises(SitemapError, match=r"sitemap.yaml:2: page_types.home.url"):
        _source(tmp_path, "page_types:\n  home: {url: nope}\n", b"x")
