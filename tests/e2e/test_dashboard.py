"""The live dashboard in real headless Chromium against a running stack (API + worker on Valkey
and Kafka): numbers change without a reload, a visitor's profile shows and follows their events,
and the page logs no console errors. Screenshots go to test-artifacts/."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page

from tests.conftest import Stack, uid

pytestmark = pytest.mark.e2e

CATEGORIES = ["shoes", "bags", "jackets", "watches"]
CHANNELS = ["web", "app", "atm"]


def now_ms() -> int:
    return int(time.time() * 1000)


def event(
    vid: str,
    n: int,
    etype: str = "item_view",
    *,
    category: str = "shoes",
    channel: str = "web",
    brand: str = "Acme",
) -> dict[str, Any]:
    return {
        "event_id": f"{vid}-{n}",
        "type": etype,
        "visitor_id": vid,
        "ts": now_ms(),
        "channel": channel,
        "item": {"id": f"{category}-{n % 5}", "categories": [category], "brand": brand},
    }


def series(page: Page, chart: str) -> list[str]:
    """The series a chart draws (its legend)."""
    return (page.get_attribute(chart, "data-series") or "").split(",")


def rates(stack: Stack) -> dict[str, Any]:
    return stack.http.get("/v1/stats/traffic", params={"window": 10}).json()["rates"]


def wait_until(page: Page, cond: Any, timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        page.wait_for_timeout(200)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@pytest.fixture
def dashboard(context: BrowserContext, shop: Stack) -> Iterator[tuple[Page, list[str]]]:
    warm = uid("warm")  # the worker has joined its group and applies events
    shop.post([event(warm, 1)])
    shop.wait_profile(warm, 1)
    page = context.new_page()
    problems: list[str] = []
    page.on(
        "console",
        lambda m: (
            problems.append(f"console.{m.type}: {m.text}")
            if m.type in ("error", "warning")
            else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    email = f"{uid('analyst')}@example.com"
    shop.add_user(email, "analyst", "a long passphrase")
    # the dashboard is behind the sign-in page: a browser without a session is sent there
    page.goto(f"{shop.base}/dashboard")
    assert "/login?next=/dashboard" in page.url, page.url
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", "a long passphrase")
    page.click("button[type=submit]")
    page.wait_for_url(f"{shop.base}/dashboard")
    page.wait_for_selector("#status[data-state=live]", timeout=15_000)
    yield page, problems
    page.close()


def test_stream_is_server_sent_events(shop: Stack) -> None:
    with shop.http.stream("GET", "/v1/stats/stream") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        got = b""
        for chunk in r.iter_bytes():
            got += chunk
            if got.count(b"event: snapshot") >= 2:
                break
    assert b'"kind":"full"' in got and b'"kind":"delta"' in got
    assert shop.http.get("/v1/stats/segments").json()["segments"] is not None


def test_overview_updates_live(
    dashboard: tuple[Page, list[str]], shop: Stack, artifacts: Path
) -> None:
    page, problems = dashboard
    before = page.inner_text("#k-applied")
    trending = shop.http.get("/v1/stats/trending", params={"dim": "category", "half_life": "1h"})
    hot = f"hot{uid('c')[2:8]}"  # a category nobody else posts
    n = 0
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:  # steady traffic over several seconds, several visitors
        batch = []
        for i in range(20):
            n += 1
            cat = hot if i % 2 else CATEGORIES[n % len(CATEGORIES)]
            etype = ("item_view", "add_to_cart", "page_view")[n % 3]
            batch.append(
                event(
                    f"dash-{i % 7}-{hot}",
                    n,
                    etype,
                    category=cat,
                    channel=CHANNELS[n % len(CHANNELS)],
                    brand=f"Brand{n % 4}",
                )
            )
        assert shop.post(batch).status_code in (200, 202)
        page.wait_for_timeout(250)

    wait_until(
        page,
        lambda: page.inner_text("#k-applied") not in ("0/s", "–", before),
        what=f"the events/s figure to change (API: {rates(shop)})",
    )
    assert page.inner_text("#k-accepted") not in ("0/s", "–")
    # the charts got series for the posted types and channels
    wait_until(page, lambda: "add_to_cart" in series(page, "#c-type"), what="type series")
    wait_until(page, lambda: "atm" in series(page, "#c-channel"), what="channel series")
    if trending.status_code == 200:
        wait_until(page, lambda: hot in page.inner_text("#hot-category"), 20, "trending category")
        page.click(".seg button[data-hl='1d']")
        wait_until(page, lambda: hot in page.inner_text("#hot-category"), 20, "1-day trending")
        page.click(".seg button[data-hl='1h']")
    else:  # the trending endpoint is not there: the panel says so instead of breaking
        assert "no data" in page.inner_text("#hot-category")
    page.wait_for_timeout(1500)
    page.screenshot(path=str(artifacts / "dashboard-overview.png"))
    page.screenshot(path=str(artifacts / "dashboard-full.png"), full_page=True)
    page.emulate_media(color_scheme="dark")  # follows the system's dark mode
    page.wait_for_timeout(1200)
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(15, 18, 22)"
    page.screenshot(path=str(artifacts / "dashboard-dark.png"))
    assert problems == []


def test_one_visitor_live(dashboard: tuple[Page, list[str]], shop: Stack, artifacts: Path) -> None:
    page, problems = dashboard
    vid = uid("v")
    evs = [
        event(vid, 1, category="shoes", brand="Acme"),
        event(vid, 2, "add_to_cart", category="shoes", brand="Acme"),
        event(vid, 3, category="bags", brand="Zeta", channel="app"),
        event(vid, 4, category="shoes", brand="Acme"),
    ]
    assert shop.post(evs).status_code in (200, 202)
    shop.wait_profile(vid, 4)

    page.fill("#v-id", vid)
    page.press("#v-id", "Enter")
    page.wait_for_selector("#v-body:not([hidden])")
    aff = page.inner_text("#v-aff")
    assert "shoes" in aff and "bags" in aff and "acme" in aff  # brands are normalised
    # the top score is explained by event type
    assert "add_to_cart" in page.inner_text("#v-legend")
    assert "item_view" in page.inner_text("#v-legend")
    wait_until(
        page, lambda: page.locator("#v-timeline li").count() >= 4, what="4 events in the timeline"
    )
    assert vid in page.url  # the selection survives a reload

    # it follows the visitor without a reload
    assert shop.post(
        [event(vid, 5, "add_to_cart", category="watches", brand="Tick")]
    ).status_code in (200, 202)
    wait_until(page, lambda: "watches" in page.inner_text("#v-aff"), what="the new category")
    wait_until(page, lambda: page.locator("#v-timeline li").count() >= 5, what="the new event")
    assert "watches-0" in page.inner_text("#v-head")  # now in the cart
    page.locator("#visitor").scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    page.locator("#visitor").screenshot(path=str(artifacts / "dashboard-visitor.png"))
    assert problems == []
