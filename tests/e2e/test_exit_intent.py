"""Exit intent on the demo shop, in real Chromium, with the example campaigns live on /v1/decide:
the pointer leaves through the top -> the first-visit discount popup appears and has the focus,
Esc closes it, and the impression and the dismiss reach the engine with the decision id.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from tests.conftest import Stack
from tests.e2e.conftest import Beacon, visitor_id, wait_events
from tests.e2e.test_beacon import three_products

pytestmark = pytest.mark.e2e

MIN_ON_PAGE_MS = 5000  # config/sitemap.yaml: exit_intent.min_seconds

POPUP = "[data-kairos-popup=exit_intent]"


def leave_through_the_top(page: Page) -> None:
    page.mouse.move(640, 300)
    page.mouse.move(640, 120, steps=4)
    page.mouse.move(640, -20, steps=4)  # out of the viewport, upwards


def popup_state(page: Page) -> dict | None:
    return page.evaluate(
        """(sel) => {
          const host = document.querySelector(sel);
          if (!host) return null;
          const dlg = host.shadowRoot.querySelector('dialog');
          const focused = host.shadowRoot.activeElement;
          const box = dlg.getBoundingClientRect();
          return {
            role: dlg.localName, modal: dlg.matches(':modal'),
            label: host.shadowRoot.getElementById(dlg.getAttribute('aria-labelledby')).textContent,
            text: dlg.textContent, focusInside: !!focused && dlg.contains(focused),
            hostFocused: document.activeElement === host,
            visible: box.width > 0 && box.height > 0,
          };
        }""",
        POPUP,
    )


def open_popup(shop: Stack, context: BrowserContext, beacon: Beacon) -> tuple[Page, dict]:
    """A product page, time on page, pointer out through the top; returns the page and the
    exit-intent decision. A visitor in the campaign's control group gets no popup (by design);
    then the caller tries again with a new visitor."""
    page = beacon.watch(context.new_page())
    page.goto(f"{shop.base}/demo/p/{three_products()[0].id}")
    page.wait_for_function("window.kairos && window.kairos.loaded")
    page.focus("button.add-to-cart")  # where the focus must come back to
    page.wait_for_timeout(MIN_ON_PAGE_MS + 300)
    with page.expect_response(lambda r: "/v1/decide?" in r.url or r.url.endswith("/v1/decide")
                              and "exit_intent" in (r.request.post_data or "")) as info:
        leave_through_the_top(page)
    resp = info.value
    assert resp.status == 200
    (d,) = [d for d in resp.json()["decisions"] if d["zone"] == "exit_intent"]
    return page, d


def test_exit_intent_popup_focus_esc_and_reactions(
    shop: Stack, browser: Browser, beacon: Beacon, artifacts: Path
):
    for _ in range(5):
        context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-US")
        page, d = open_popup(shop, context, beacon)
        if not d["control"]:
            break
        context.close()  # the control group: no popup by design; a new visitor
    else:
        raise AssertionError("five visitors in a row in the control group")
    try:
        vid = visitor_id(page)
        assert d["campaign"] == "first_visit_discount" and d["decision_id"]
        # the request: the exit_intent event with the decide call for the exit_intent zone
        (call,) = [s for s in beacon.sent if s.endpoint == "decide" and s.body["visitor_id"] == vid
                   and s.body["context"]["zones"] == ["exit_intent"]]
        assert [e["type"] for e in call.events] == ["exit_intent"]
        assert call.body["visitor_id"] == vid and call.body["context"]["page_type"] == "product"

        page.wait_for_selector(POPUP, state="attached")  # the host has no box: its dialog is fixed
        st = popup_state(page)
        assert st is not None and st["visible"]
        assert st["role"] == "dialog" and st["modal"] is True  # a native modal <dialog>
        assert st["label"] == d["content"]["title"]
        assert "WELCOME10" in st["text"]
        assert st["focusInside"] and st["hostFocused"], st
        page.wait_for_timeout(300)  # the popup's own layout settles
        page.screenshot(path=str(artifacts / "demo-exit-intent-popup.png"))

        inside = 0
        for _ in range(6):  # the page behind a modal dialog is inert: Tab never reaches it (it
            page.keyboard.press("Tab")  # cycles through the dialog and the browser's own UI)
            where = page.evaluate(f"""() => document.activeElement === document.querySelector(
                '{POPUP}') ? 'popup' : document.activeElement === document.body ? 'browser'
                : document.activeElement.outerHTML.slice(0, 80)""")
            assert where in ("popup", "browser"), f"focus reached the page: {where}"
            inside += where == "popup"
        assert inside >= 3
        page.keyboard.press("Escape")
        page.wait_for_selector(POPUP, state="detached")
        assert page.evaluate("document.activeElement.className").startswith("btn add-to-cart")

        def reacted(evs: list[dict]) -> bool:
            return {"impression", "dismiss"} <= {e["type"] for e in evs
                                                 if e.get("decision_id") == d["decision_id"]}

        got = wait_events(shop, vid, reacted)
        mine = [e for e in got if e.get("decision_id") == d["decision_id"]]
        assert sorted(e["type"] for e in mine) == ["dismiss", "impression"]
        (dismiss,) = [e for e in mine if e["type"] == "dismiss"]
        assert dismiss["props"] == {"zone": "exit_intent", "via": "esc"}
        (imp,) = [e for e in mine if e["type"] == "impression"]
        assert imp["props"] == {"zone": "exit_intent"}
        assert [e["type"] for e in got].count("exit_intent") == 1

        # at most once per session: leaving again shows nothing
        leave_through_the_top(page)
        page.wait_for_timeout(500)
        assert page.query_selector(POPUP) is None
        assert len([s for s in beacon.sent if s.body.get("visitor_id") == vid
                    and s.body.get("context", {}).get("zones") == ["exit_intent"]]) == 1
    finally:
        context.close()
