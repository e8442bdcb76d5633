"""Access in real Chromium: the admin signs in with the one-time link, makes and revokes a key
on the admin page (shown once); and a page that claims someone else's user id gets no merge
and is never shown content chosen from that user's profile."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext

from tests.conftest import Stack, uid

pytestmark = pytest.mark.e2e


def test_admin_makes_and_revokes_a_key(context: BrowserContext, shop: Stack, artifacts: Path) -> None:
    link = shop.add_user(f"{uid('admin')}@example.com", "admin")
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(link)
    page.wait_for_url(f"{shop.base}/admin")
    page.fill("form:has(input[value=public]) input[name=origins]", "https://shop.example")
    page.fill("form:has(input[value=public]) input[name=name]", "made in the browser")
    page.click("form:has(input[value=public]) button[type=submit]")
    key = page.inner_text("[data-new-key]").strip()
    assert key.startswith("kp_") and len(key) == 35
    page.screenshot(path=str(artifacts / "admin-new-key.png"), full_page=True)
    # the key works at once, from its origin only
    ev = {"event_id": uid("e"), "type": "page_view", "visitor_id": uid()}
    ok = shop.anon.post(f"/v1/events?key={key}", json=ev, headers={"Origin": "https://shop.example"})
    assert ok.status_code == 200, ok.text
    # shown once: a reload lists its prefix, never the key
    page.goto(f"{shop.base}/admin")
    assert key not in page.content() and key[:11] in page.content()
    page.click(f"tr[data-key='{key[:11]}'] button:has-text('Revoke')")
    assert "revoked" in page.inner_text(f"tr[data-key='{key[:11]}']")
    deadline = time.monotonic() + 5
    while shop.anon.post(f"/v1/events?key={key}", json=ev,
                         headers={"Origin": "https://shop.example"}).status_code != 401:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.1)
    # a form posted without the page's CSRF token is refused
    r = page.request.post(f"{shop.base}/admin/keys", form={"kind": "public", "origins": "https://x.example"},
                          headers={"Origin": shop.base})
    assert r.status == 403 and r.json()["field"] == "csrf"
    assert not errors, errors


def test_a_page_cannot_become_another_customer(context: BrowserContext, shop: Stack) -> None:
    customer = uid("cust")
    # the real customer's cart, sent by the shop's server (a secret key identifies freely)
    shop.post([{"event_id": uid("e"), "type": "add_to_cart", "visitor_id": uid(), "user_id": customer,
                "item": {"id": "secret-sofa", "categories": ["furniture"]}}])
    shop.wait_profile(customer, 1)
    page = context.new_page()
    answers: list[dict] = []
    # the forged identify is refused with the field named: a 200 naming it among the rejected
    # when it shares a batch with the page's own events, a 400 when it travels alone
    page.on("response", lambda r: answers.append(r.json())
            if "/v1/events" in r.url and r.request.method == "POST" and r.status in (200, 400) else None)
    page.goto(f"{shop.base}/demo")
    page.wait_for_function("window.kairos && window.kairos.loaded")
    page.evaluate("(u) => kairos('identify', u)", customer)  # no user_hash: a forgery
    deadline = time.monotonic() + 15
    while not any(a.get("rejected") for a in answers):
        assert time.monotonic() < deadline, answers
        page.wait_for_timeout(200)
    rejected = [r for a in answers for r in a.get("rejected", [])]
    assert {r["field"] for r in rejected} == {"user_hash"}
    vid = page.evaluate("localStorage.getItem('kairos_vid')")
    # no merge: the customer's profile does not list this browser, nor this browser the customer
    time.sleep(1.0)
    assert vid not in shop.profile(customer).json()["linked_visitors"]
    mine = shop.profile(vid)
    assert mine.status_code == 404 or mine.json().get("user_id") is None
    # and a decision for this page is never made from the customer's profile (their cart)
    got = page.evaluate("""async ([key, u]) => (await fetch('/v1/decide?key=' + key, {method: 'POST',
        headers: {'content-type': 'text/plain'}, body: JSON.stringify({visitor_id: 'x-' + u,
        user_id: u, context: {zones: ['exit_intent', 'cart_reminder'], page_type: 'product',
        channel: 'web'}})})).json()""", [shop.keys.demo, customer])
    assert not [d for d in got["decisions"] if d["campaign"] == "cart_reminder"], got
    assert "secret-sofa" not in str(got)
