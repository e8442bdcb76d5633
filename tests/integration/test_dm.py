"""Distributed marketing end to end on real servers: PostgreSQL, Valkey, Kafka, the API, a
stream worker, `kairos mailer` and the local outbox (aiosmtpd, test mode) as child processes.

Waits are short because the stack's settings make them so (rate window 1 s, retries at 1 %
of the schedule, a 3 s claim lease, a 0.2 s sweep), never because of sleeps in the code.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.mail.outbox import Outbox
from tests.conftest import MailOutbox, Stack, run_async, uid

BRAND_DOMAIN = "mail.northgate.example"


@pytest.fixture(scope="module")
def dm(dm_stack: Stack) -> Stack:
    return dm_stack


@pytest.fixture(scope="module")
def dm_config(dm_stack: Stack) -> Path:
    return Path(dm_stack.settings.config_dir)


# -- helpers ---------------------------------------------------------------------------------
def control(stack: Stack) -> Any:
    from engine.db import new_engine
    from engine.db.control import ControlPlane

    return ControlPlane(new_engine(stack.settings.database_url or "", pool_size=1))


def db(stack: Stack, fn: Callable[[Any], Any]) -> Any:
    async def go() -> Any:
        cp = control(stack)
        try:
            return await fn(cp)
        finally:
            await cp.close()

    return run_async(go())


@dataclass
class Partner:
    id: str
    api: httpx.Client  # with the partner's secret key
    web: httpx.Client  # signed in as the partner's user (cookie + CSRF for the API)
    email: str
    csrf: str

    def contact(self, email: str | None = None, **kw: Any) -> dict[str, Any]:
        r = self.api.post("/v1/dm/contacts", json={"email": email or f"{uid('c')}@example.com", **kw})
        assert r.status_code == 201, r.text
        return r.json()


def new_partner(stack: Stack, name: str | None = None, release: tuple[str, ...] = (
        "template:thank-you", "template:seasonal-picks", "template:test-item", "journey:quick-welcome")) -> Partner:
    name = name or f"Store {uuid.uuid4().hex[:6]}"

    async def mk(cp: Any) -> tuple[str, str]:
        pid = await cp.create_partner(name)
        _, key = await cp.create_key("secret", scopes=["dm"], partner_id=pid, name=name)
        return pid, key

    pid, key = db(stack, mk)
    email = f"{uid('p')}@stores.example.com"
    link = stack.add_user(email, "partner", partner_id=pid)
    web = httpx.Client(base_url=stack.base, timeout=10, follow_redirects=False)
    assert web.get(link).status_code == 303
    csrf = csrf_of(stack, web.cookies["kairos_session"])
    web.headers.update({"Origin": stack.base, "X-CSRF-Token": csrf})
    for what in release:
        kind, _, subject = what.partition(":")
        r = stack.http.post("/v1/dm/brand/releases", json={"kind": kind, "subject": subject, "partner_id": pid})
        assert r.status_code == 201, r.text
    api = httpx.Client(base_url=stack.base, timeout=10, headers={"Authorization": f"Bearer {key}"})
    return Partner(pid, api, web, email, csrf)


def csrf_of(stack: Stack, session: str) -> str:
    from engine.logic.access import csrf_token

    return csrf_token(db(stack, lambda cp: cp.secret("csrf")), session)


def outbox(mail: MailOutbox) -> Outbox:
    return Outbox(mail.folder)


def mails_to(mail: MailOutbox, address: str) -> list[Any]:
    return outbox(mail).find(to=address)


def wait(cond: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


def sends(p: Partner, campaign_id: str) -> list[dict[str, Any]]:
    r = p.api.get(f"/v1/dm/campaigns/{campaign_id}/engagement")
    assert r.status_code == 200, r.text
    return r.json()["sends"]


def settled(p: Partner, campaign_id: str, n: int) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        got = sends(p, campaign_id)
        return got if len(got) >= n and all(s["state"] not in ("queued", "claimed", "retry") for s in got) else None

    return wait(done, 30, f"{n} sends of {campaign_id} to finish")


def quick(p: Partner, template: str, contacts: list[str], values: dict | None = None, key: str | None = None,
          **kw: Any) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return p.api.post("/v1/dm/quick-sends", json={"template": template, "contact_ids": contacts,
                                                  "values": values or {}, **kw}, headers=headers)


def unsubscribe_url(m: Any) -> str:
    """The List-Unsubscribe URL of a stored message (the header may be folded)."""
    return str(BytesParser(policy=policy.default).parsebytes(m.raw)["List-Unsubscribe"]).strip().strip("<>")


# -- who sees what --------------------------------------------------------------------------------
def test_a_partner_never_sees_another_partners_data(dm: Stack, mail_outbox: MailOutbox) -> None:
    a, b = new_partner(dm), new_partner(dm)
    ca = a.contact(first_name="Ann")
    cb = b.contact(first_name="Bea")
    camp_b = quick(b, "test-item", [cb["id"]]).json()["campaign"]["id"]
    settled(b, camp_b, 1)
    # lists, search, exports
    mine = a.api.get("/v1/dm/contacts").json()
    assert [c["id"] for c in mine["contacts"]] == [ca["id"]] and mine["total"] == 1
    assert a.api.get("/v1/dm/contacts", params={"q": "Bea"}).json()["contacts"] == []
    assert a.api.get("/v1/dm/contacts", params={"q": cb["email"]}).json()["total"] == 0
    assert camp_b not in {c["id"] for c in a.api.get("/v1/dm/campaigns").json()["campaigns"]}
    eng = a.api.get("/v1/dm/engagement").json()
    assert eng["messages"] == [] and eng["links"] == []
    # direct ids, by key and by session: 404
    for client in (a.api, a.web):
        assert client.get(f"/v1/dm/contacts/{cb['id']}").status_code == 404
        for path in ("", "/engagement", "/preview"):
            assert client.get(f"/v1/dm/campaigns/{camp_b}{path}").status_code == 404, path
        assert client.post(f"/v1/dm/campaigns/{camp_b}/send").status_code == 404
        assert client.put(f"/v1/dm/campaigns/{camp_b}/values", json={"values": {}}).status_code == 404
    assert a.web.get(f"/portal/campaigns/{camp_b}").status_code == 404
    # B's contact in A's campaign: 404, and nothing was made
    r = quick(a, "test-item", [ca["id"], cb["id"]])
    assert r.status_code == 404 and r.json()["field"] == "contact", r.text
    camp_a = a.api.post("/v1/dm/campaigns", json={"journey": "quick-welcome", "contact_ids": [ca["id"]]}).json()
    r = a.api.post(f"/v1/dm/campaigns/{camp_a['campaign']['id']}/members", json={"contact_ids": [cb["id"]]})
    assert r.status_code == 404
    # the Outbox page lists only the partner's own mail
    assert mails_to(mail_outbox, cb["email"])
    page_a = a.web.get("/portal/outbox").text
    assert cb["email"] not in page_a
    key = mails_to(mail_outbox, cb["email"])[0].entry.key
    assert a.web.get(f"/portal/outbox/{key}").status_code == 404
    assert b.web.get(f"/portal/outbox/{key}").status_code == 200
    # a caller without a partner (an admin key) is refused by name, never shown anyone's
    r = dm.http.get("/v1/dm/contacts")
    assert r.status_code == 403 and r.json()["field"] == "partner"


def test_contacts_csv_import_reports_each_row(dm: Stack) -> None:
    p = new_partner(dm)
    p.contact("old@example.com")
    csv = ("email,first_name,last_name,city\n"
           "new1@example.com,Nia,One,Leeds\n"
           "not-an-address,Bad,Row,\n"
           "NEW1@example.com,Dup,InFile,\n"
           "old@example.com,Already,There,\n"
           "new2@example.com,Noor,Two,York\n")
    r = p.api.post("/v1/dm/contacts/import", content=csv, headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text
    got = {row["row"]: row["status"] for row in r.json()["rows"]}
    assert got == {2: "added", 3: "bad email", 4: "duplicate", 5: "duplicate", 6: "added"}
    assert r.json()["added"] == 2
    rows = p.api.get("/v1/dm/contacts", params={"q": "noor"}).json()["contacts"]
    assert rows[0]["attributes"] == {"city": "York"}
    r = p.api.post("/v1/dm/contacts/import", content=b"name\nx\n", headers={"content-type": "text/csv"})
    assert r.status_code == 422 and r.json()["field"] == "file"


# -- templates: locked regions, inert values ------------------------------------------------------
def test_undeclared_field_is_refused_and_locked_regions_hold(dm: Stack, dm_config: Path) -> None:
    from engine.logic.dm.config import load_dm

    p = new_partner(dm)
    c = p.contact(first_name="Lee")
    r = quick(p, "test-item", [c["id"]], {"headline": "Hi", "footer": "mine now"})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "fields.footer" and "not an editable field" in r.json()["reason"]
    r = quick(p, "test-item", [c["id"]], {"headline": "x" * 81})
    assert r.status_code == 422 and r.json()["field"] == "fields.headline"
    r = quick(p, "test-item", [c["id"]], {"headline": "Guaranteed the best"})  # a restricted word
    assert r.status_code == 422 and r.json()["field"] == "fields.headline", r.text
    r = quick(p, "seasonal-picks", [c["id"]], {"hero_image": "https://images.elsewhere.example/x.png"})
    assert r.status_code == 422 and r.json()["field"] == "fields.hero_image", r.text
    # a campaign's preview without the partner's values is the brand's own render
    made = p.api.post("/v1/dm/campaigns", json={"journey": "quick-welcome", "contact_ids": [c["id"]]}).json()
    cid = made["campaign"]["id"]
    tv = load_dm(dm_config).templates["welcome"]
    contact = {"first_name": "Lee", "last_name": "", "email": c["email"]}
    brand = tv.render({}, contact=contact, partner={"name": ""}, unsubscribe_url="#unsubscribe")
    before = p.api.get(f"/v1/dm/campaigns/{cid}/preview").json()
    r = p.api.put(f"/v1/dm/campaigns/{cid}/values", json={"values": {"welcome": {"intro": "<p>Welcome to our store</p>"}}})
    assert r.status_code == 200, r.text
    after = p.api.get(f"/v1/dm/campaigns/{cid}/preview").json()
    assert "Welcome to our store" in after["html"]
    partner_name = db(dm, lambda cp: cp.partner(p.id))["name"]
    brand = tv.render({}, contact=contact, partner={"name": partner_name, "email": ""}, unsubscribe_url="#unsubscribe")
    assert before["html"] == brand.html and before["subject"] == brand.subject
    # the skeleton (editable values as placeholders) is the same for the partner's values
    assert tv.skeleton({"intro": "<p>Welcome to our store</p>"}, contact=contact).html == tv.skeleton({}, contact=contact).html


def test_script_in_a_field_renders_inert(dm: Stack, mail_outbox: MailOutbox) -> None:
    p = new_partner(dm)
    c = p.contact(first_name="Sam")
    r = quick(p, "test-item", [c["id"]], {"more_url": "javascript:alert(1)"})
    assert r.status_code == 422 and r.json()["field"] == "fields.more_url"
    evil = {"headline": "<script>alert(1)</script>{{7*7}}", "note": '<p>Hi<img src=x onerror="alert(1)"><a href="javascript:alert(1)">x</a><script>alert(2)</script></p>'}
    r = quick(p, "test-item", [c["id"]], evil)
    assert r.status_code == 201, r.text
    cid = r.json()["campaign"]["id"]
    preview = p.api.get(f"/v1/dm/campaigns/{cid}/preview").json()
    for html in (preview["html"], wait(lambda: mails_to(mail_outbox, c["email"]), what="the mail")[0].html):
        assert "<script" not in html.lower() and "onerror" not in html.lower() and "javascript:" not in html.lower()
        assert "{{7*7}}" in html and "49" not in html.split("<h1>")[1].split("</h1>")[0]
        assert "&lt;script&gt;" in html


# -- approvals ----------------------------------------------------------------------------------------
def test_approval_pending_blocks_rejection_shows_reason_edit_supersedes(dm: Stack, mail_outbox: MailOutbox) -> None:
    p = new_partner(dm)
    c = p.contact()
    r = quick(p, "seasonal-picks", [c["id"]], {"headline": "Autumn picks for you"})
    assert r.status_code == 201, r.text
    body = r.json()
    cid = body["campaign"]["id"]
    assert body["status"] == "draft" and not body["may_send"] and not body["sends"]
    assert p.api.post(f"/v1/dm/campaigns/{cid}/send").status_code == 409
    sub = p.api.post(f"/v1/dm/campaigns/{cid}/submit")
    assert sub.status_code == 200 and sub.json()["status"] == "pending approval", sub.text
    r = p.api.post(f"/v1/dm/campaigns/{cid}/send")
    assert r.status_code == 409 and "pending approval" in r.json()["reason"]
    aid = sub.json()["approval"]["id"]
    # the partner cannot approve (not a brand user), nor can anyone approve their own submission
    assert p.api.post(f"/v1/dm/brand/approvals/{aid}/approve").status_code == 403
    assert p.web.post(f"/v1/dm/brand/approvals/{aid}/approve").status_code == 403
    self_approval = db(dm, lambda cp: _self_approve(cp, aid))
    assert self_approval == "refused", self_approval
    queue = dm.http.get("/v1/dm/brand/approvals").json()["approvals"]
    assert aid in {a["id"] for a in queue}
    detail = dm.http.get(f"/v1/dm/brand/approvals/{aid}").json()
    row = next(f for f in detail["fields"] if f["field"] == "headline")
    assert row["value"] == "Autumn picks for you" and row["default"] and row["changed"]
    assert dm.http.post(f"/v1/dm/brand/approvals/{aid}/reject", json={}).status_code == 422
    r = dm.http.post(f"/v1/dm/brand/approvals/{aid}/reject", json={"reason": "Use the autumn wording from the guide"})
    assert r.status_code == 200, r.text
    v = p.api.get(f"/v1/dm/campaigns/{cid}").json()
    assert v["status"] == "rejected" and v["approval"]["reason"] == "Use the autumn wording from the guide"
    assert "Use the autumn wording" in p.web.get(f"/portal/campaigns/{cid}").text
    # resubmit, approve, then edit: the approval no longer stands
    aid2 = p.api.post(f"/v1/dm/campaigns/{cid}/submit").json()["approval"]["id"]
    assert dm.http.post(f"/v1/dm/brand/approvals/{aid2}/approve").status_code == 200
    assert p.api.get(f"/v1/dm/campaigns/{cid}").json()["may_send"]
    r = p.api.put(f"/v1/dm/campaigns/{cid}/values", json={"values": {"headline": "Changed after approval"}})
    assert r.status_code == 200
    v = p.api.get(f"/v1/dm/campaigns/{cid}").json()
    assert not v["may_send"] and v["approval"]["state"] == "superseded"
    assert p.api.post(f"/v1/dm/campaigns/{cid}/send").status_code == 409
    aid3 = p.api.post(f"/v1/dm/campaigns/{cid}/submit").json()["approval"]["id"]
    assert dm.http.post(f"/v1/dm/brand/approvals/{aid3}/approve").status_code == 200
    assert dm.http.post(f"/v1/dm/brand/approvals/{aid3}/approve").status_code == 409
    assert p.api.post(f"/v1/dm/campaigns/{cid}/send").status_code == 200
    got = wait(lambda: mails_to(mail_outbox, c["email"]), what="the approved mail")
    assert got[0].entry.subject.startswith("Changed after approval")


async def _self_approve(cp: Any, approval_id: str) -> str:
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    try:
        async with cp.engine.begin() as conn:
            await conn.execute(text("UPDATE dm_approvals SET state = 'approved', decided_by = submitted_by "
                                    "WHERE id = :i"), {"i": approval_id})
    except IntegrityError:
        return "refused"
    return "allowed"


# -- sending ------------------------------------------------------------------------------------------------
def test_quick_send_to_three_contacts_and_a_replayed_idempotency_key(dm: Stack, mail_outbox: MailOutbox) -> None:
    p = new_partner(dm)
    people = [p.contact(first_name=n, last_name="Test") for n in ("Ada", "Bo", "Cy")]
    key = uid("idem")
    values = {"greeting": "Thanks for visiting Leeds", "message": "<p>Your <strong>new</strong> TV is ready.</p>"}
    r = quick(p, "thank-you", [c["id"] for c in people], values, key)
    assert r.status_code == 201 and not r.json()["replayed"], r.text
    cid = r.json()["campaign"]["id"]
    done = settled(p, cid, 3)
    assert {s["state"] for s in done} == {"sent"}
    partner_name = db(dm, lambda cp: cp.partner(p.id))["name"]
    for c, s in zip(sorted(people, key=lambda c: c["email"]), sorted(done, key=lambda s: s["to_email"]), strict=True):
        [m] = mails_to(mail_outbox, c["email"])
        msg = BytesParser(policy=policy.default).parsebytes(m.raw)
        assert msg["Subject"] == f"Thanks for visiting Leeds, {c['first_name']}"
        assert msg["From"].addresses[0].addr_spec == f"stores@{BRAND_DOMAIN}"
        assert msg["From"].addresses[0].display_name == f"{partner_name} via Northgate Electronics"
        assert msg["Reply-To"].addresses[0].addr_spec == p.email
        assert msg["To"].addresses[0].addr_spec == c["email"]
        assert msg["Message-ID"] == f"<dm.{s['id']}@{BRAND_DOMAIN}>"
        assert msg["List-Unsubscribe"].strip().startswith(f"<{dm.base}/m/u/u.{s['id']}.")
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert m.entry.mail_from.startswith(f"bounce+{s['id']}.")
        assert msg.get_content_type() == "multipart/alternative"
        assert [part.get_content_type() for part in msg.iter_parts()] == ["text/plain", "text/html"]
        assert "<strong>new</strong> TV is ready" in m.html and f"{dm.base}/m/o/o.{s['id']}." in m.html
        assert "Thanks for visiting Leeds" in m.text
    # the same key again (a double click, a client retry): the same campaign, nothing sent
    r = quick(p, "thank-you", [c["id"] for c in people], values, key)
    assert r.status_code == 200 and r.json()["replayed"] and r.json()["campaign"]["id"] == cid
    time.sleep(1.0)
    assert all(len(mails_to(mail_outbox, c["email"])) == 1 for c in people)
    assert p.api.post(f"/v1/dm/campaigns/{cid}/send").status_code == 200  # sent already: a no-op
    time.sleep(0.5)
    assert len(sends(p, cid)) == 3


def test_a_test_send_goes_only_to_the_users_own_address(dm: Stack, mail_outbox: MailOutbox) -> None:
    p = new_partner(dm)
    c = p.contact()
    r = p.web.post("/v1/dm/quick-sends", json={"template": "thank-you", "contact_ids": [c["id"]], "test": True})
    assert r.status_code == 201, r.text
    wait(lambda: mails_to(mail_outbox, p.email), what="the test send")
    time.sleep(0.5)
    assert mails_to(mail_outbox, c["email"]) == []
    r = quick(p, "thank-you", [c["id"]], test=True)  # a key has no address of its own
    assert r.status_code == 422 and r.json()["field"] == "test"


def test_sigkill_of_the_mailer_mid_batch_sends_each_contact_exactly_once(dm: Stack, mail_outbox: MailOutbox) -> None:
    p = new_partner(dm)
    # every recipient's message is stored by the outbox at once and answered 400 ms later,
    # so a kill lands while the mailer waits for answers (the in-doubt case)
    people = [p.contact(f"slow-400+{uid('k')}@x.test") for _ in range(20)]
    r = quick(p, "test-item", [c["id"] for c in people])
    assert r.status_code == 201
    cid = r.json()["campaign"]["id"]
    victim = dm.mailers[-1]
    try:
        wait(lambda: sum(1 for s in sends(p, cid) if s["state"] == "sent") >= 2, what="some sends")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        states = [s["state"] for s in sends(p, cid)]
    finally:
        dm.start_mailer()
    assert states.count("sent") < 20, "the kill came too late to be mid-batch"
    assert "claimed" in states, states  # in doubt: taken by the server, not recorded as sent
    done = settled(p, cid, 20)
    assert {s["state"] for s in done} == {"sent"}
    for c in people:
        assert len(mails_to(mail_outbox, c["email"])) == 1, c["email"]


def test_a_550_bounces_and_suppresses_a_451_is_retried_a_dsn_bounces_later(dm: Stack, mail_outbox: MailOutbox) -> None:
    p = new_partner(dm)
    hard = p.contact(f"smtp-550+{uid('b')}@x.test")
    soft = p.contact(f"smtp-451-once+{uid('b')}@x.test")
    dsn = p.contact(f"dsn-hard+{uid('b')}@x.test")
    cid = quick(p, "test-item", [hard["id"], soft["id"], dsn["id"]]).json()["campaign"]["id"]
    done = {s["to_email"]: s for s in settled(p, cid, 3)}
    assert done[hard["email"]]["state"] == "bounced" and done[hard["email"]]["last_code"] == 550
    assert done[soft["email"]]["state"] == "sent" and done[soft["email"]]["attempts"] == 1
    assert len(mails_to(mail_outbox, soft["email"])) == 1
    wait(lambda: {s["to_email"]: s["state"] for s in sends(p, cid)}[dsn["email"]] == "bounced", what="the DSN")
    suppressed = {r["email"] for r in dm.http.get("/v1/dm/brand/suppressions").json()["suppressions"]}
    assert hard["email"].lower() in suppressed and dsn["email"].lower() in suppressed
    assert soft["email"].lower() not in suppressed
    again = quick(p, "test-item", [hard["id"]]).json()["campaign"]["id"]
    assert [s["state"] for s in settled(p, again, 1)] == ["suppressed"]


def test_rate_limit_spans_windows_and_another_partner_is_unaffected(dm: Stack) -> None:
    a, b = new_partner(dm), new_partner(dm)
    many = [a.contact()["id"] for _ in range(12)]
    few = [b.contact()["id"] for _ in range(3)]
    ca = quick(a, "test-item", many).json()["campaign"]["id"]
    cb = quick(b, "test-item", few).json()["campaign"]["id"]
    done_b = settled(b, cb, 3)
    done_a = settled(a, ca, 12)
    times = sorted(datetime.fromisoformat(s["sent_at"]).timestamp() for s in done_a)
    t0 = times[0]
    assert {int(t - t0) for t in times} >= {0, 1, 2}, times  # 5/s paced: three one-second windows
    assert sum(1 for t in times if t - t0 < 1.0) <= 6
    b_times = sorted(datetime.fromisoformat(s["sent_at"]).timestamp() for s in done_b)
    assert b_times[-1] - b_times[0] < 1.5, b_times  # B's own pace, not queued behind A's twelve
    assert b_times[-1] < times[-1] - 0.5, (b_times, times)


def test_journey_step_two_follows_the_wait_and_members_exit(dm: Stack, mail_outbox: MailOutbox) -> None:
    p = new_partner(dm)
    stays = p.contact(first_name="Stay")
    leaves = p.contact(first_name="Leave")
    bounces = p.contact(f"smtp-550+{uid('j')}@x.test")
    buyer = p.contact(first_name="Buyer", user_id=uid("u"))
    members = [stays["id"], leaves["id"], bounces["id"], buyer["id"]]
    made = p.api.post("/v1/dm/campaigns", json={"journey": "quick-welcome", "contact_ids": members})
    assert made.status_code == 201, made.text
    cid = made.json()["campaign"]["id"]
    assert p.api.post(f"/v1/dm/campaigns/{cid}/send").status_code == 200
    first = wait(lambda: mails_to(mail_outbox, leaves["email"]), what="step 1")[0]
    wait(lambda: mails_to(mail_outbox, stays["email"]), what="step 1")
    unsub = unsubscribe_url(first)
    assert dm.anon.post(unsub.replace(dm.base, ""), content=b"List-Unsubscribe=One-Click",
                        headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 200
    dm.post({"event_id": uid("e"), "type": "purchase", "visitor_id": uid(), "user_id": buyer["user_id"],
             "item": {"id": "sku-1", "price": 10}})

    def member(cid_: str, contact: str) -> dict[str, Any]:
        return next(m for m in p.api.get(f"/v1/dm/campaigns/{cid_}").json()["members"] if m["contact_id"] == contact)

    wait(lambda: len(mails_to(mail_outbox, stays["email"])) == 2, 20, "step 2")
    two = sorted(mails_to(mail_outbox, stays["email"]), key=lambda m: m.entry.received_at)
    steps = {s["step"]: s for s in sends(p, cid) if s["contact_id"] == stays["id"]}
    gap = datetime.fromisoformat(steps[1]["sent_at"]) - datetime.fromisoformat(steps[0]["sent_at"])
    assert gap.total_seconds() >= 2.0, gap
    assert two[0].entry.message_id != two[1].entry.message_id
    assert member(cid, stays["id"])["status"] == "done"
    assert member(cid, leaves["id"])["exit_reason"] == "unsubscribed"
    assert member(cid, bounces["id"])["exit_reason"] == "bounced"
    wait(lambda: member(cid, buyer["id"])["status"] == "exited", 10, "the purchase exit")
    assert member(cid, buyer["id"])["exit_reason"] == "event"
    time.sleep(0.5)
    assert len(mails_to(mail_outbox, leaves["email"])) == 1


# -- tracking ---------------------------------------------------------------------------------------------------
def test_opens_count_once_clicks_redirect_and_raise_the_affinity(dm: Stack, mail_outbox: MailOutbox) -> None:
    item = {"id": "sku-headphones", "name": "Studio headphones", "categories": ["audio.headphones"],
            "brand": "sonic", "price": 99.0, "url": "https://www.northgate.example/p/sku-headphones"}
    assert dm.http.post("/v1/catalog/items", json=[item]).status_code == 200
    p = new_partner(dm)
    user = uid("u")
    c = p.contact(first_name="Kim", user_id=user)
    cid = quick(p, "test-item", [c["id"]]).json()["campaign"]["id"]
    [s] = settled(p, cid, 1)
    [m] = mails_to(mail_outbox, c["email"])
    pixel = f"/m/o/o.{s['id']}." + m.html.split(f"/m/o/o.{s['id']}.", 1)[1].split('"', 1)[0]
    browser = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36"}
    assert dm.anon.head(pixel, headers=browser).status_code == 200  # HEAD: a machine, counted apart
    for _ in range(2):
        r = dm.anon.get(pixel, headers=browser)
        assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
    assert dm.anon.get(pixel[:-3] + "AAA", headers=browser).status_code == 404
    click = m.html.split('<a href="', 3)
    links = [part.split('"', 1)[0] for part in m.html.split('href="')[1:]]
    item_link = next(u for u in links if "/m/c/c0." in u)
    r = dm.anon.get(item_link.replace(dm.base, ""), headers=browser)
    assert r.status_code == 302 and r.headers["location"] == "https://www.northgate.example/p/sku-headphones"
    assert dm.anon.get(item_link.replace(dm.base, "") + "x", headers=browser).status_code == 404
    bad = item_link.replace(dm.base, "").replace("/m/c/c0.", "/m/c/c1.")
    assert dm.anon.get(bad, headers=browser).status_code == 404  # another link index, same MAC: tampered
    assert dm.anon.get(item_link.replace(dm.base, ""), headers={"User-Agent": "curl/8.0"}).status_code == 302
    del click
    profile = dm.wait_profile(user, 2)  # the open and the click (applied in order)
    cats = {a["key"]: a["score"] for a in profile["affinities"]["category"]}
    assert cats.get("audio.headphones", 0) > 0, profile["affinities"]
    eng = {x["id"]: x for x in sends(p, cid)}[s["id"]]
    assert eng["opened"] == 1 and eng["clicks"] == ["https://www.northgate.example/p/sku-headphones"]
    msgs = p.api.get("/v1/dm/engagement").json()["messages"]
    assert msgs[0]["opened"] == 1 and msgs[0]["clicked"] == 1 and msgs[0]["bot_hits"] >= 2


def test_one_click_unsubscribe_suppresses_for_every_partner(dm: Stack, mail_outbox: MailOutbox) -> None:
    a, b = new_partner(dm), new_partner(dm)
    address = f"{uid('u')}@example.com"
    ca = a.contact(address)
    cb = b.contact(address.upper().replace("@EXAMPLE.COM", "@example.com"))
    cid = quick(a, "test-item", [ca["id"]]).json()["campaign"]["id"]
    [s] = settled(a, cid, 1)
    [m] = mails_to(mail_outbox, address)
    url = unsubscribe_url(m).replace(dm.base, "")
    page = dm.anon.get(url)
    assert page.status_code == 200 and "data-unsubscribe" in page.text  # a GET only asks
    assert address.lower() not in {r["email"] for r in dm.http.get("/v1/dm/brand/suppressions").json()["suppressions"]}
    assert dm.anon.post(url[:-2] + "zz", content=b"List-Unsubscribe=One-Click").status_code == 404
    assert dm.anon.post(url, content=b"List-Unsubscribe=One-Click",
                        headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 200
    assert address.lower() in {r["email"] for r in dm.http.get("/v1/dm/brand/suppressions").json()["suppressions"]}
    later = quick(b, "test-item", [cb["id"]]).json()["campaign"]["id"]
    assert [x["state"] for x in settled(b, later, 1)] == ["suppressed"]
    time.sleep(0.5)
    assert len(mails_to(mail_outbox, address)) == 1  # A's, before the unsubscribe; none from B
    assert b.api.get(f"/v1/dm/campaigns/{later}/preview").json()["suppressed"] is True


# -- the brand ---------------------------------------------------------------------------------------------------
def test_brand_results_equal_the_sum_of_the_partners(dm: Stack) -> None:
    a, b = new_partner(dm), new_partner(dm)
    for p, n in ((a, 2), (b, 3)):
        cid = quick(p, "test-item", [p.contact()["id"] for _ in range(n)]).json()["campaign"]["id"]
        settled(p, cid, n)
    res = dm.http.get("/v1/dm/brand/results").json()
    keys = ("sends", "sent", "opened", "clicked", "bounced", "suppressed", "unsubscribed")
    for k in keys:
        assert res["total"][k] == sum(r[k] for r in res["rows"]) == sum(x[k] for x in res["partners"])
    by_partner = {x["partner_id"]: x for x in res["partners"]}
    for p in (a, b):
        own = p.api.get("/v1/dm/engagement").json()["messages"]
        for k in keys:
            assert by_partner[p.id][k] == sum(r[k] for r in own)
    # what the brand sees of contacts: no addresses without dm:contacts
    marketer = httpx.Client(base_url=dm.base, timeout=10)
    assert marketer.get(dm.add_user(f"{uid('m')}@example.com", "marketer")).status_code == 303
    assert marketer.get("/v1/dm/brand/contacts").status_code == 403
    assert marketer.get("/v1/dm/brand/results").status_code == 200
    assert all("***@" in r["email"] for r in marketer.get("/v1/dm/brand/suppressions").json()["suppressions"])

    async def key(cp: Any) -> str:
        return (await cp.create_key("secret", scopes=["dm:contacts"], name="contacts"))[1]

    reader = httpx.Client(base_url=dm.base, timeout=10, headers={"Authorization": f"Bearer {db(dm, key)}"})
    assert "@" in reader.get("/v1/dm/brand/contacts").json()["contacts"][0]["email"]


def test_config_hot_reload_stores_each_version(dm: Stack, dm_config: Path) -> None:
    src = (dm_config / "dm" / "templates" / "test-item.yaml").read_text()
    new = dm_config / "dm" / "templates" / "test-item-2.yaml"
    new.write_text(src.replace("id: test-item", "id: test-item-2").replace("Item of the week", "Item two"))
    try:
        got = wait(lambda: next((t for t in dm.http.get("/v1/dm/brand/library").json()["templates"]
                                 if t["id"] == "test-item-2"), None), 10, "the new template")

        async def stored(cp: Any) -> bool:
            from engine.db.dm import DmStore

            return await DmStore(cp.engine).template_version(got["version"]) is not None

        assert db(dm, stored)
        new.write_text("id: test-item-2\nsubject: '{{ nope }}'\n")
        lib = wait(lambda: (lambda d: d if d["problems"] else None)(dm.http.get("/v1/dm/brand/library").json()),
                   10, "the problem")
        assert any("test-item-2.yaml" in pr for pr in lib["problems"])
        assert "test-item" in {t["id"] for t in lib["templates"]}  # the last good keeps serving
    finally:
        new.unlink()


def test_the_outbox_keeps_one_copy_of_a_message_id_per_recipient(mail_outbox: MailOutbox) -> None:
    """What makes a retried in-doubt send harmless at the local outbox (mailbox providers do
    the same): the same Message-ID to the same recipient is accepted and stored once."""
    from engine.logic.dm.sending import Envelope
    from engine.mail.sender import Relay, send_one

    to = f"{uid('dup')}@example.com"
    other = f"{uid('dup')}@example.com"
    mid = f"<dm.{uuid.uuid4().hex[:20]}@{BRAND_DOMAIN}>"

    def envelope(rcpt: str) -> Envelope:
        data = (f"From: a@{BRAND_DOMAIN}\r\nTo: {rcpt}\r\nSubject: once\r\nMessage-ID: {mid}\r\n\r\nhello\r\n").encode()
        return Envelope("dupsend01", f"bounce@{BRAND_DOMAIN}", rcpt, mid, data)

    relay = Relay.from_url(mail_outbox.url + "?starttls=off")
    for rcpt in (to, to, other):
        assert run_async(send_one(relay, envelope(rcpt))).outcome == "sent"
    assert len(mails_to(mail_outbox, to)) == 1 and len(mails_to(mail_outbox, other)) == 1
