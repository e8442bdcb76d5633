"""The partner portal and the brand's pages in real Chromium, against a stack with a mailer
and the local outbox: a partner adds a contact and sends a quick send whose fields carry
script (the preview and the outbox raise no dialog and run nothing), reads it in the Outbox;
a brand marketer rejects a submission with a reason the partner then sees. Screenshots go to
test-artifacts/ (the docs' pictures are taken from there)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page

from tests.conftest import MailOutbox, Stack, run_async, uid

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def portal_stack(dm_stack: Stack) -> Stack:
    return dm_stack  # the distributed-marketing stack of tests/conftest.py


def partner_link(stack: Stack) -> tuple[str, str]:
    from engine.db import new_engine
    from engine.db.control import ControlPlane
    from engine.db.dm import DmStore

    async def go() -> str:
        cp = ControlPlane(new_engine(stack.settings.database_url or "", pool_size=1))
        try:
            pid = await cp.create_partner(f"Northgate {uid('store')[-6:]}")
            store = DmStore(cp.engine)
            for kind, subject in (("template", "thank-you"), ("template", "seasonal-picks"), ("journey", "welcome")):
                await store.release(kind, subject, by="test", partner_id=pid)
            return pid
        finally:
            await cp.close()

    pid = run_async(go())
    email = f"{uid('p')}@stores.example.com"
    return stack.add_user(email, "partner", partner_id=pid), email


def watch(page: Page) -> list[str]:
    seen: list[str] = []
    page.on("dialog", lambda d: (seen.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("console", lambda m: seen.append(f"console: {m.text}") if m.type == "error" and "Content Security Policy" not in m.text else None)
    page.on("pageerror", lambda e: seen.append(f"pageerror: {e}"))
    return seen


def test_partner_sends_a_quick_send_with_script_in_its_fields_and_reads_it(
        context: BrowserContext, portal_stack: Stack, mail_outbox: MailOutbox, artifacts: Path) -> None:
    link, _ = partner_link(portal_stack)
    page = context.new_page()
    seen = watch(page)
    page.goto(link)
    page.wait_for_url(f"{portal_stack.base}/portal")
    page.screenshot(path=str(artifacts / "portal-home.png"), full_page=True)
    page.click("nav >> text=Contacts")
    address = f"{uid('kim')}@example.com"
    page.fill("form[data-add-contact] input[name=email]", address)
    page.fill("form[data-add-contact] input[name=first_name]", "Kim<script>alert('name')</script>")
    page.click("form[data-add-contact] button[type=submit]")
    assert address in page.inner_text("table[data-contacts]")
    page.goto(f"{portal_stack.base}/portal/quick?template=thank-you")
    page.fill("input[name='v.thank-you.greeting']", "Thanks <script>alert(1)</script> {{7*7}}")
    page.fill("textarea[name='v.thank-you.message']",
              '<p>Great to see you<img src=x onerror="alert(2)"> <a href="javascript:alert(3)">here</a></p>')
    page.check(f"label:has-text('{address}') input")
    page.click("form[data-quick] button[data-send]")
    page.wait_for_url(re.compile(r".*/portal/campaigns/cp_\w+"))
    frame = page.frame_locator("iframe[data-preview]")
    assert "{{7*7}}" in frame.locator("h1").inner_text()
    page.wait_for_timeout(500)
    page.screenshot(path=str(artifacts / "portal-campaign.png"), full_page=True)
    assert page.locator("iframe[data-preview]").get_attribute("sandbox") == ""
    for _ in range(50):
        page.reload()
        if "sent" in page.inner_text("table[data-sends]"):
            break
        page.wait_for_timeout(200)
    assert "sent" in page.inner_text("table[data-sends]")
    page.click("nav >> text=Outbox")
    page.click(f"table[data-outbox] tr:has-text('{address}') a")
    msg = page.frame_locator("iframe[data-message]")
    assert "Great to see you" in msg.locator("body").inner_text()
    assert "List-Unsubscribe" in page.inner_text("table[data-headers]")
    page.screenshot(path=str(artifacts / "portal-outbox-message.png"), full_page=True)
    assert not [s for s in seen if s.startswith(("dialog", "pageerror"))], seen


def test_brand_rejects_with_a_reason_the_partner_sees(
        context: BrowserContext, portal_stack: Stack, artifacts: Path) -> None:
    link, _ = partner_link(portal_stack)
    partner = context.new_page()
    partner.goto(link)
    partner.wait_for_url(f"{portal_stack.base}/portal")
    partner.goto(f"{portal_stack.base}/portal/contacts")
    partner.fill("form[data-add-contact] input[name=email]", f"{uid('lee')}@example.com")
    partner.click("form[data-add-contact] button[type=submit]")
    partner.goto(f"{portal_stack.base}/portal/quick?template=seasonal-picks")
    partner.fill("input[name='v.seasonal-picks.headline']", "Autumn deals at our store")
    partner.check("form[data-quick] fieldset input[name=contact]")
    partner.click("form[data-quick] button[data-send]")
    partner.wait_for_url(re.compile(r".*/portal/campaigns/cp_\w+"))
    assert partner.locator("button[data-send]").is_disabled()
    partner.click("button[data-submit]")
    assert "pending" in partner.inner_text("[data-approval]")
    assert "Submitted for the brand's approval" in partner.inner_text("main")
    campaign_url = partner.url

    brand_ctx = context.browser.new_context(viewport={"width": 1280, "height": 860})  # type: ignore[union-attr]
    try:
        brand = brand_ctx.new_page()
        brand.goto(portal_stack.add_user(f"{uid('m')}@example.com", "marketer"))
        brand.goto(f"{portal_stack.base}/portal/brand")
        brand.screenshot(path=str(artifacts / "portal-brand-queue.png"), full_page=True)
        brand.locator("table[data-approvals] a").first.click()
        assert "Autumn deals at our store" in brand.inner_text("table[data-fields]")
        brand.screenshot(path=str(artifacts / "portal-brand-approval.png"), full_page=True)
        brand.fill("form[data-decide] input[name=reason]", "Please use the autumn headline from the brand guide")
        brand.click("form[data-decide] button[value=reject]")
        assert "Please use the autumn headline" in brand.inner_text("[data-reason]")
    finally:
        brand_ctx.close()
    partner.goto(campaign_url)
    assert "rejected" in partner.inner_text("[data-approval]")
    assert "Please use the autumn headline from the brand guide" in partner.inner_text("[data-reason]")
