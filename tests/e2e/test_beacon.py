"""The beacon in real headless Chromium against a running engine (real Valkey and Kafka), on the
demo shop, which is tracked by the sitemap alone: one tag, no per-page code.

Every test asserts the exact requests the beacon sent (captured with page.on('request')) and
what reached the engine (the stack's events topic, and the visitor's profile).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext

from engine.demo.catalog import load_catalog
from engine.demo.shop import catalog_path
from engine.settings import Settings
from tests.conftest import Stack
from tests.e2e.conftest import Beacon, queue_len, read_events, visitor_id, wait_events

pytestmark = pytest.mark.e2e

CATALOG = load_catalog(catalog_path(Settings().demo_catalog))


def three_products() -> list:
    """Popular products of three different top categories."""
    picks, tops = [], set()
    for p in CATALOG.popular(len(CATALOG.products)):
        top = p.category.split("/")[0]
        if top not in tops:
            tops.add(top)
            picks.append(p)
        if len(picks) == 3:
            return picks
    raise AssertionError("the demo catalog has fewer than three top categories")


def expected_item(p) -> dict:
    """What the sitemap reads from a product page: JSON-LD, then the selectors."""
    return {"id": p.id, "name": p.name, "brand": p.brand, "price": p.price,
            "categories": ["/".join(label for _, label in p.trail)]}


def test_sdk_bundle_is_served_with_the_sitemap_and_cache_headers(shop: Stack):
    r = shop.http.get("/sdk/kairos.js")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert r.headers["cache-control"] == "public, max-age=300, stale-while-revalidate=86400"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.content.startswith(b"window.__kairosSitemap={")
    etag = r.headers["etag"]
    again = shop.http.get("/sdk/kairos.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    for path in ("/demo", "/demo/c/computers", f"/demo/p/{three_products()[0].id}", "/demo/cart",
                 "/demo/search?q=phone", "/demo/static/shop.css"):
        assert shop.http.get(path).status_code == 200, path
    assert shop.http.get("/demo/p/nope").status_code == 404
    assert shop.http.get("/demo/checkout", follow_redirects=False).status_code == 303  # empty cart


def test_three_products_tracked_by_the_sitemap_alone_build_category_affinities(
    shop: Stack, context: BrowserContext, beacon: Beacon, artifacts: Path
):
    page = beacon.watch(context.new_page())
    page.goto(f"{shop.base}/demo")
    beacon.wait(lambda: beacon.settled(page, "page_view"), what="the home page view")
    page.screenshot(path=str(artifacts / "demo-home.png"))
    vid = visitor_id(page)
    products = three_products()
    for n, p in enumerate(products, 1):
        page.goto(f"{shop.base}/demo/p/{p.id}")
        beacon.wait(lambda n=n: beacon.settled(page, "item_view")
                    and Counter(e["type"] for e in beacon.delivered())["item_view"] == n,
                    what=f"product {n} viewed")
    page.click("button.add-to-cart")
    last = products[-1]
    beacon.wait(lambda: beacon.settled(page, "add_to_cart"), what="add_to_cart delivered")

    # exactly what the beacon sent: each product page asked /v1/decide for its zone (pdp_recs)
    # with its page_view and item_view, the item read from JSON-LD + the sitemap's selectors
    decides = [s for s in beacon.sent if s.endpoint == "decide"]
    assert [s.body["context"]["zones"] for s in decides] == [["home_hero", "home_recs"]] + [["pdp_recs"]] * 3
    for s, p in zip(decides[1:], products, strict=True):
        assert s.kind == "fetch"
        assert s.body["visitor_id"] == vid
        ctx = s.body["context"]
        assert ctx["page_type"] == "product" and ctx["channel"] == "web" and ctx["device"] == "desktop"
        assert ctx["url"] == f"{shop.base}/demo/p/{p.id}"
        assert [e["type"] for e in s.events] == ["page_view", "item_view"]
        for e in s.events:
            assert e["item"] == expected_item(p)
            assert e["visitor_id"] == vid and e["channel"] == "web"
            assert e["context"]["page_type"] == "product"
    sent = [e for s in beacon.sent for e in s.events]
    carts = [e for e in sent if e["type"] == "add_to_cart"]
    assert len(carts) == 1
    assert carts[0]["items"] == [{"id": last.id, "quantity": 1, "price": last.price}]
    # no event went out twice unless the first attempt failed
    ids = Counter(e["event_id"] for e in beacon.delivered())
    assert max(ids.values()) == 1, ids

    # the engine: 1 + 2 * 3 + 1 events (and the impressions of zones the campaigns filled),
    # and the category affinities of the three products
    types = Counter(e["type"] for e in beacon.delivered() if e["type"] != "impression")
    assert types == {"page_view": 4, "item_view": 3, "add_to_cart": 1}
    prof = shop.wait_profile(vid, len(ids))
    assert prof["event_count"] == len(ids), (prof["types"], beacon.summary())
    cats = {row["key"] for row in prof["affinities"]["category"]}
    for p in products:
        assert "/".join(label for _, label in p.trail).lower() in cats
        assert p.category.split("/")[0] in cats
    assert prof["cart"] == [last.id]
    assert set(prof["recent_items"]) == {p.id for p in products}


def test_offline_events_arrive_exactly_once(shop: Stack, context: BrowserContext, beacon: Beacon):
    page = beacon.watch(context.new_page())
    page.goto(f"{shop.base}/demo/c/computers")
    beacon.wait(lambda: beacon.settled(page, "page_view"), what="the page view delivered")
    vid = visitor_id(page)
    before = len(beacon.sent)

    blocked: list[str] = []

    def block(route):
        blocked.append(route.request.url)
        route.abort("internetdisconnected")

    page.route("**/v1/**", block)
    page.evaluate("for (let i = 0; i < 5; i++) kairos('track', 'wishlist_add', {n: i})")
    beacon.wait(lambda: len(blocked) >= 2, what="two failed attempts (retry with backoff)")
    assert queue_len(page) == 5  # kept for later
    page.unroute("**/v1/**", block)
    beacon.wait(lambda: queue_len(page) == 0 and all(s.ok is not None for s in beacon.sent),
                what="the queue drained after coming back")

    later = beacon.sent[before:]
    failed = [s for s in later if s.ok is False]
    ok = [s for s in later if s.ok]
    assert len(failed) == len(blocked) >= 2
    assert all(s.endpoint == "events" for s in later)
    # each failed attempt carried the same five events; they were delivered in one request
    tracked = [e["event_id"] for e in failed[0].events]
    assert [e["type"] for e in failed[0].events] == ["wishlist_add"] * 5
    assert [e["props"] for e in failed[0].events] == [{"n": i} for i in range(5)]
    assert all([e["event_id"] for e in s.events] == tracked for s in failed)
    assert len(ok) == 1 and [e["event_id"] for e in ok[0].events] == tracked

    # the engine has each exactly once
    got = wait_events(shop, vid, lambda evs: sum(e["type"] == "wishlist_add" for e in evs) >= 5)
    counts = Counter(e["event_id"] for e in got if e["type"] == "wishlist_add")
    assert sorted(counts) == sorted(tracked) and set(counts.values()) == {1}
    # the page's own events, once each (a page view whose answer came late is sent again with
    # its id, and the stream counts it once)
    page_events = {e["event_id"] for e in got if e["type"] != "wishlist_add"}
    prof = shop.wait_profile(vid, len(page_events) + 5)
    assert prof["types"]["wishlist_add"]["count"] == 5


def test_events_of_a_tab_closed_offline_are_sent_by_the_next_page(
    shop: Stack, context: BrowserContext, beacon: Beacon
):
    """Offline, a closing tab keeps its queue (sendBeacon would lose it); the next page load
    adopts that queue (its tab's Web Lock is free) and sends it. The engine counts each event
    once: if the closing tab's own request got out as the network came back (a race this test
    cannot rule out: Chromium may run the closing page's `online` handler), the adopted copy is
    a resend, and the stream's dedupe by event_id drops it."""
    first = beacon.watch(context.new_page(), "first")
    first.goto(f"{shop.base}/demo/c/auto")
    beacon.wait(lambda: beacon.settled(first, "page_view"), what="the page view")
    vid = visitor_id(first)
    before = len(beacon.sent)
    context.set_offline(True)
    first.evaluate("for (let i = 0; i < 3; i++) kairos('track', 'offline_event', {i})")
    first.wait_for_timeout(1300)  # past the flush timer: offline, nothing is tried
    assert queue_len(first) == 3
    nxt = beacon.watch(context.new_page(), "next")  # (a context needs a page to stay open)
    first.close()
    context.set_offline(False)
    assert len(beacon.sent) == before  # no sendBeacon while offline
    nxt.goto(f"{shop.base}/demo/c/kids")
    beacon.wait(lambda: beacon.settled(nxt, "offline_event"), what="the adopted events sent")
    sent = [(s.page, e["props"]) for s in beacon.sent[before:] for e in s.events
            if e["type"] == "offline_event"]
    assert sent == [("next", {"i": 0}), ("next", {"i": 1}), ("next", {"i": 2})]
    got = wait_events(shop, vid, lambda evs: sum(e["type"] == "offline_event" for e in evs) >= 3)
    offline = {e["event_id"] for e in got if e["type"] == "offline_event"}
    assert len(offline) == 3
    distinct = len({e["event_id"] for e in got})
    prof = shop.wait_profile(vid, distinct)
    assert prof["types"]["offline_event"]["count"] == 3 and prof["event_count"] == distinct


def two_tabs_sending_together(shop: Stack, context: BrowserContext, beacon: Beacon,
                              rounds: int = 3) -> tuple[str, list[dict]]:
    """Two tabs of one visitor write to the beacon's shared queue at the same time; returns the
    visitor id and the tab events the engine got once all is delivered."""
    one = beacon.watch(context.new_page(), "one")
    one.goto(f"{shop.base}/demo/c/appliances")
    beacon.wait(lambda: beacon.settled(one, "page_view"), what="tab one's page view")
    two = beacon.watch(context.new_page(), "two")
    two.goto(f"{shop.base}/demo/c/electronics")
    beacon.wait(lambda: len({s.page for s in beacon.sent}) == 2, what="tab two's page view")
    vid = visitor_id(one)
    assert visitor_id(two) == vid
    for r in range(rounds):
        one.evaluate(f"for (let i = 0; i < 5; i++) kairos('track', 'tab_event', {{tab: 1, r: {r}, i}})")
        two.evaluate(f"for (let i = 0; i < 5; i++) kairos('track', 'tab_event', {{tab: 2, r: {r}, i}})")
        one.wait_for_timeout(150)
    n = 10 * rounds
    wait_events(shop, vid, lambda evs: len({e["event_id"] for e in evs
                                              if e["type"] == "tab_event"}) >= n)
    beacon.wait(lambda: queue_len(one) == 0 and all(s.ok is not None for s in beacon.sent),
                timeout=20, what="both tabs' queues empty")
    return vid, [e for e in read_events(shop, vid) if e["type"] == "tab_event"]


def test_two_tabs_never_send_the_same_event_and_none_is_counted_twice(
    shop: Stack, context: BrowserContext, beacon: Beacon
):
    """Both tabs track at the same time: no event goes out from both tabs or in two delivered
    requests (each tab has its own queue), every event reaches the engine, each counted once."""
    vid, got = two_tabs_sending_together(shop, context, beacon)
    by_tab: dict[str, set[str]] = {}
    for s in beacon.sent:
        by_tab.setdefault(s.page, set()).update(e["event_id"] for e in s.events)
    assert not by_tab["one"] & by_tab["two"], "an event was sent by both tabs"
    # at most once per endpoint: a decide call whose answer did not reach the beacon in time
    # (even one answered 200 after the timeout fired) re-sends its page events to /v1/events,
    # where the engine dedupes them by event_id -- the only resend
    delivered = Counter((s.endpoint, e["event_id"]) for s in beacon.sent if s.ok
                        for e in s.events)
    assert max(delivered.values()) == 1, "an event was delivered twice"
    for s in beacon.sent:
        if s.ok is False:
            assert s.endpoint == "decide", beacon.summary()
    assert all(n == 1 for n in Counter(e["event_id"] for e in beacon.delivered()
                                       if e["type"] == "tab_event").values())
    assert {(e["props"]["tab"], e["props"]["r"], e["props"]["i"]) for e in got} == {
        (t, r, i) for t in (1, 2) for r in range(3) for i in range(5)
    }
    ids = {e["event_id"] for e in got}
    assert len(ids) == 30
    all_ids = {e["event_id"] for e in read_events(shop, vid)}
    prof = shop.wait_profile(vid, len(all_ids))
    assert prof["event_count"] == len(all_ids)
    assert prof["types"]["tab_event"]["count"] == 30


def test_nothing_is_stored_or_sent_before_consent(
    shop: Stack, context: BrowserContext, beacon: Beacon
):
    page = beacon.watch(context.new_page())
    page.goto(f"{shop.base}/demo/c/computers?consent=ask")
    page.wait_for_function("window.kairos && window.kairos.loaded")
    page.click("a.chip")  # browse on: still nothing
    page.wait_for_function("window.kairos && window.kairos.loaded")
    page.wait_for_timeout(1500)  # past the flush timer
    assert beacon.sent == []
    stored = page.evaluate(
        "[...Object.keys(localStorage), ...Object.keys(sessionStorage), document.cookie]"
    )
    assert not any("kairos" in k for k in stored), stored
    assert not [c for c in context.cookies() if c["name"].startswith("kairos")]

    page.goto(f"{shop.base}/demo/c/computers?consent=ask")
    page.wait_for_function("window.kairos && window.kairos.loaded")
    page.click("[data-consent=yes]")
    beacon.wait(lambda: beacon.settled(page, "page_view"), what="the page view")
    first = beacon.sent[0]  # the page view, with the page's zone, waited for consent
    assert first.endpoint == "decide" and first.body["context"]["zones"] == ["category_banner"]
    assert [e["type"] for e in first.events] == ["page_view"]
    assert first.events[0]["context"]["page_type"] == "category"
    assert [e["type"] for e in beacon.delivered()] == ["page_view"]
    vid = visitor_id(page)
    assert first.body["visitor_id"] == vid
    assert page.evaluate("localStorage.getItem('kairos_consent')") == "1"
    assert page.locator("[data-consent-banner]").count() == 0
    shop.wait_profile(vid, 1)

    # consent(false): the ids are forgotten and nothing more is sent
    n = len(beacon.sent)
    page.evaluate("kairos('consent', false); kairos('track', 'after_refusal')")
    page.wait_for_timeout(1200)
    assert len(beacon.sent) == n
    assert page.evaluate("localStorage.getItem('kairos_vid')") is None
    assert page.evaluate("localStorage.getItem('kairos_consent')") == "0"
    assert not [e for e in read_events(shop, vid) if e["type"] == "after_refusal"]


def test_engine_down_means_no_personalisation_and_one_warning(
    shop: Stack, context: BrowserContext, beacon: Beacon
):
    page = beacon.watch(context.new_page())
    messages: list[str] = []
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route("**/v1/**", lambda route: route.fulfill(status=503, headers={"Retry-After": "30"},
                                                        body="{}"))
    page.goto(f"{shop.base}/demo")
    beacon.wait(lambda: beacon.sent and all(s.ok is not None for s in beacon.sent),
                what="the failed attempts")
    page.wait_for_timeout(1300)
    assert errors == []
    assert page.inner_text("#hero h1") == "Everything for home, work and play"  # the default
    warnings = [m for m in messages if "kairos" in m]
    assert len(warnings) == 1 and warnings[0].startswith("warning: [kairos]"), messages
    assert queue_len(page) >= 1  # kept for when the engine is back


def test_demo_pages_link_up(shop: Stack):
    """Every link on the home page works (the crawl stays inside the demo)."""
    import re

    html = shop.http.get("/demo").text
    links = sorted(set(re.findall(r'href="(/demo[^"]*)"', html)))
    assert len(links) > 10
    with httpx.Client(base_url=shop.base, timeout=10) as c:
        for link in links:
            assert c.get(link).status_code == 200, link
