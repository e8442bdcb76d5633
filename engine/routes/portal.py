"""The portal at /portal: server-rendered pages in the dashboard's look, every form a plain
POST with the CSRF field (works without JavaScript).

Partner pages (scope dm, acting for the caller's partner): home (what is released, the
campaigns), contacts (add, import a CSV with a report per row, search), a campaign (values,
members, preview in a sandboxed iframe, submit for approval, send, engagement), quick send,
and the Outbox (the mail the embedded outbox holds, the partner's own only).
Brand pages (scope dm:brand), under /portal/brand: the approval queue and one approval,
results, releases, partners and groups, the suppression list, the audit log.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from engine.flows.dm.brand import rates
from engine.flows.dm.portal import Caller, NotFound, Refused
from engine.gate import PAGE_CSP
from engine.logic.access import Scope as Can
from engine.logic.dm.contacts import ContactError, mask_email
from engine.logic.dm.templates import ValuesError
from engine.routes import client_ip, dm_actor, dm_caller, page, principal, svc

# the campaign and outbox pages show mail in a sandboxed srcdoc iframe (no scripts run there:
# no allow-scripts, and script-src stays 'self'); a mail's own inline styles and https images
PREVIEW_CSP = PAGE_CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'").replace(
    "img-src 'self' data:", "img-src 'self' data: https:")
MAIL_CSP = "default-src 'none'; img-src https: data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def flash(kind: str, text: str) -> list[dict[str, str]]:
    return [{"kind": kind, "text": text}]


def sandboxed(html: str) -> str:
    """Mail HTML for an iframe's srcdoc, with its own strict CSP (no scripts, no forms)."""
    meta = f'<meta http-equiv="Content-Security-Policy" content="{MAIL_CSP}">'
    return meta + html


async def form(request: Request, files: int = 0) -> FormData:
    return await request.form(max_files=files, max_fields=300, max_part_size=4 * 1024 * 1024)


PartnerPage = Callable[[Request, Caller], Awaitable[Response]]


def partner_page(fn: PartnerPage) -> Callable[[Request], Awaitable[Response]]:
    async def wrapped(request: Request) -> Response:
        who = dm_caller(request)
        if who is None:
            if principal(request).has(Can.DM_BRAND) and request.method == "GET":
                return RedirectResponse("/portal/brand", 303)
            return page(request, "portal/denied.html", 403)
        try:
            return await fn(request, who)
        except NotFound as exc:
            return page(request, "portal/denied.html", 404, what=exc.what)

    wrapped.__name__ = fn.__name__
    return wrapped


def brand_page(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except NotFound as exc:
            return page(request, "portal/denied.html", 404, what=exc.what)

    wrapped.__name__ = fn.__name__
    return wrapped


# -- partner: home, contacts -------------------------------------------------------------------
@partner_page
async def home(request: Request, who: Caller) -> Response:
    return await _home(request, who)


async def _home(request: Request, who: Caller, status: int = 200, **extra: Any) -> Response:
    s = svc(request)
    partner = await s.dm_portal.store.partner(who.partner_id)
    return page(request, "portal/home.html", status, partner=partner,
                released=await s.dm_portal.released(who.partner_id),
                campaigns=await s.dm_portal.campaigns(who.partner_id),
                engagement=await s.dm_portal.engagement(who.partner_id), **extra)


@partner_page
async def contacts(request: Request, who: Caller) -> Response:
    return await _contacts(request, who)


async def _contacts(request: Request, who: Caller, status: int = 200, **extra: Any) -> Response:
    q = request.query_params.get("q", "")
    try:
        offset = max(0, int(request.query_params.get("offset", 0)))
    except ValueError:
        offset = 0
    rows, total = await svc(request).dm_portal.contacts(who.partner_id, q, 100, offset)
    return page(request, "portal/contacts.html", status, contacts=rows, total=total, q=q, offset=offset, **extra)


@partner_page
async def add_contact(request: Request, who: Caller) -> Response:
    f = await form(request)
    raw = {k: str(f.get(k, "")).strip() or None for k in ("email", "first_name", "last_name", "visitor_id", "user_id")}
    try:
        c = await svc(request).dm_portal.add_contact(who, raw)
    except ContactError as exc:
        return await _contacts(request, who, 422, messages=flash("bad", f"Not added: {exc}"))
    except Refused as exc:
        return await _contacts(request, who, exc.status, messages=flash("bad", f"Not added: {exc.reason}"))
    return await _contacts(request, who, 201, messages=flash("good", f"Added {c['email']}."))


@partner_page
async def import_contacts(request: Request, who: Caller) -> Response:
    f = await form(request, files=1)
    upload = f.get("file")
    data = await upload.read() if upload is not None and not isinstance(upload, str) else str(upload or "").encode()
    try:
        report = await svc(request).dm_portal.import_contacts(who, data)
    except ContactError as exc:
        return await _contacts(request, who, 422, messages=flash("bad", f"Not imported: {exc}"))
    return await _contacts(request, who, 200, report=report, messages=flash(
        "good" if report["added"] else "bad", f"Imported {report['added']} contact(s); {report['refused']} row(s) refused."))


# -- partner: campaigns ------------------------------------------------------------------------------
@partner_page
async def create_campaign(request: Request, who: Caller) -> Response:
    f = await form(request)
    try:
        c, _ = await svc(request).dm_portal.create_campaign(
            who, kind="journey", subject=str(f.get("journey", "")), name=str(f.get("name", "")),
            contact_ids=[str(x) for x in f.getlist("contact")])
    except (Refused, ValuesError) as exc:
        return await _home(request, who, 422, messages=flash("bad", f"Not created: {exc}"))
    return RedirectResponse(f"/portal/campaigns/{c['id']}", 303)


def _form_values(f: FormData) -> dict[str, dict[str, str]]:
    """Fields named ``v.<template>.<field>``; an empty box means "the brand's default"."""
    out: dict[str, dict[str, str]] = {}
    for key, value in f.multi_items():
        if key.startswith("v.") and isinstance(value, str) and value.strip():
            _, tid, fid = (key.split(".", 2) + ["", ""])[:3]
            out.setdefault(tid, {})[fid] = value
    return out


async def _campaign(request: Request, who: Caller, cid: str, status: int = 200, **extra: Any) -> Response:
    s = svc(request)
    v = await s.dm_portal.view(who.partner_id, cid)
    contact = request.query_params.get("contact") or None
    template = request.query_params.get("template") or None
    try:
        preview = await s.dm_portal.preview(who.partner_id, cid, contact_id=contact, template_id=template)
    except NotFound:
        preview = await s.dm_portal.preview(who.partner_id, cid)
    preview["srcdoc"] = sandboxed(preview["html"])
    all_contacts, _ = await s.dm_portal.contacts(who.partner_id, "", 200, 0)
    in_campaign = {m["contact_id"] for m in v["members"]}
    resp = page(request, "portal/campaign.html", status, v=v, c=v["campaign"], preview=preview,
                candidates=[c for c in all_contacts if c["id"] not in in_campaign],
                engagement=await s.dm_portal.engagement(who.partner_id, cid), **extra)
    resp.headers["Content-Security-Policy"] = PREVIEW_CSP
    return resp


DONE = {"saved": "Saved. Any earlier approval no longer covers this content.",
        "members": "Members added.", "submitted": "Submitted for the brand's approval.",
        "enrolled": "Enrolled in the journey: step 1 goes now.", "sent": "Sent."}


@partner_page
async def campaign(request: Request, who: Caller) -> Response:
    done = DONE.get(request.query_params.get("done", ""))
    return await _campaign(request, who, request.path_params["campaign_id"],
                           messages=flash("good", done) if done else [])


def _campaign_action(action: Callable[[Request, Caller, str, FormData], Awaitable[str]]) -> Callable[[Request], Awaitable[Response]]:
    @partner_page
    async def handler(request: Request, who: Caller) -> Response:
        cid = request.path_params["campaign_id"]
        f = await form(request)
        try:
            done = await action(request, who, cid, f)
        except ValuesError as exc:
            return await _campaign(request, who, cid, 422, problems=[p.as_dict() for p in exc.problems],
                                   messages=flash("bad", f"Not saved: {exc}"))
        except Refused as exc:
            return await _campaign(request, who, cid, exc.status, messages=flash("bad", exc.reason))
        return RedirectResponse(f"/portal/campaigns/{cid}?done={done}", 303)  # reload-safe

    handler.__name__ = action.__name__
    return handler


async def save_values(request: Request, who: Caller, cid: str, f: FormData) -> str:
    contact = str(f.get("contact_id", "")) or None
    v = await svc(request).dm_portal.view(who.partner_id, cid)
    values = _form_values(f)
    if v["campaign"]["kind"] == "quick":
        values = values.get(v["templates"][0].id, {})  # type: ignore[assignment]
    await svc(request).dm_portal.set_values(who, cid, values, contact)
    return "saved"


async def add_members(request: Request, who: Caller, cid: str, f: FormData) -> str:
    ids = [str(x) for x in f.getlist("contact")]
    await svc(request).dm_portal.add_members(who, cid, ids)
    return "members"


async def submit(request: Request, who: Caller, cid: str, f: FormData) -> str:
    await svc(request).dm_portal.submit(who, cid)
    return "submitted"


async def send(request: Request, who: Caller, cid: str, f: FormData) -> str:
    v = await svc(request).dm_portal.send(who, cid)
    return "enrolled" if v["campaign"]["kind"] == "journey" else "sent"


# -- partner: quick send, outbox -----------------------------------------------------------------------
@partner_page
async def quick(request: Request, who: Caller) -> Response:
    return await _quick(request, who)


async def _quick(request: Request, who: Caller, status: int = 200, **extra: Any) -> Response:
    s = svc(request)
    released = await s.dm_portal.released(who.partner_id)
    rows, _ = await s.dm_portal.contacts(who.partner_id, "", 200, 0)
    chosen = request.query_params.get("template") or (released["templates"][0]["id"] if released["templates"] else "")
    return page(request, "portal/quick.html", status, templates=released["templates"], chosen=chosen,
                contacts=rows, idem=secrets.token_urlsafe(16), **extra)


@partner_page
async def post_quick(request: Request, who: Caller) -> Response:
    f = await form(request)
    template = str(f.get("template", ""))
    values = _form_values(f).get(template, {})
    test = f.get("test") == "1"
    try:
        v, made = await svc(request).dm_portal.quick_send(
            who, template_id=template, contact_ids=[str(x) for x in f.getlist("contact")], values=values,
            idempotency_key=str(f.get("idem", "")) or None, test=test)
    except ValuesError as exc:
        return await _quick(request, who, 422, problems=[p.as_dict() for p in exc.problems],
                            messages=flash("bad", f"Not sent: {exc}"))
    except Refused as exc:
        return await _quick(request, who, exc.status, messages=flash("bad", f"Not sent: {exc.reason}"))
    return RedirectResponse(f"/portal/campaigns/{v['campaign']['id']}", 303)


async def _outbox(request: Request, partner_id: str | None) -> Response:
    s = svc(request)
    entries = s.mail_outbox.entries(200) if s.mail_outbox is not None else []
    if partner_id is not None:
        mine = await s.dm_portal.store.partner_sends(partner_id, [e.send_id for e in entries if e.send_id])
        entries = [e for e in entries if e.send_id in mine]
    return page(request, "portal/outbox.html", entries=entries[:100], embedded=s.mail_outbox is not None,
                relay=s.settings.smtp_url)


async def outbox_message(request: Request) -> Response:
    s = svc(request)
    who = dm_caller(request)
    brand = who is None and principal(request).has(Can.DM_BRAND)
    if who is None and not brand:
        return page(request, "portal/denied.html", 403)
    msg = s.mail_outbox.read(request.path_params["key"]) if s.mail_outbox is not None else None
    if msg is None or (who is not None and msg.entry.send_id not in
                       await s.dm_portal.store.partner_sends(who.partner_id, [msg.entry.send_id])):
        return page(request, "portal/denied.html", 404, what="message")
    resp = page(request, "portal/message.html", m=msg, srcdoc=sandboxed(msg.html or ""))
    resp.headers["Content-Security-Policy"] = PREVIEW_CSP
    return resp


async def outbox_any(request: Request) -> Response:
    who = dm_caller(request)
    if who is not None:
        return await _outbox(request, who.partner_id)
    if principal(request).has(Can.DM_BRAND):
        return await _outbox(request, None)
    return page(request, "portal/denied.html", 403)


# -- brand --------------------------------------------------------------------------------------------
@brand_page
async def brand_home(request: Request) -> Response:
    s = svc(request)
    results = await s.dm_brand.results()
    return page(request, "portal/brand.html", approvals=await s.dm_brand.approvals(),
                results=results, rates=rates, library=await s.dm_brand.library_view())


@brand_page
async def brand_approval(request: Request) -> Response:
    return await _approval(request, request.path_params["approval_id"])


async def _approval(request: Request, aid: str, status: int = 200, **extra: Any) -> Response:
    got = await svc(request).dm_brand.approval(aid)
    c = got["campaign"]
    previews = []
    for tv in got["templates"]:
        values = (got["approval"]["values"].get("campaign") or {}).get(tv.id) or {}
        r = tv.render(values, contact={"first_name": "Alex", "last_name": "Example", "email": "alex@example.com"},
                      partner={"name": (got["partner"] or {}).get("name", "")}, unsubscribe_url="#unsubscribe")
        previews.append({"template": tv.id, "subject": r.subject, "srcdoc": sandboxed(r.html)})
    resp = page(request, "portal/approval.html", status, a=got["approval"], c=c, got=got, previews=previews, **extra)
    resp.headers["Content-Security-Policy"] = PREVIEW_CSP
    return resp


@brand_page
async def brand_decide(request: Request) -> Response:
    aid = request.path_params["approval_id"]
    f = await form(request)
    actor, approver = dm_actor(request)
    decision = str(f.get("decision", ""))
    if decision not in ("approve", "reject"):
        return await _approval(request, aid, 422, messages=flash("bad", "Choose approve or reject."))
    try:
        await svc(request).dm_brand.decide(actor, approver, aid, decision == "approve", str(f.get("reason", "")),
                                           client_ip(request))
    except Refused as exc:
        return await _approval(request, aid, exc.status, messages=flash("bad", exc.reason))
    return await _approval(request, aid, messages=flash("good", "Approved." if decision == "approve" else "Rejected."))


@brand_page
async def brand_results(request: Request) -> Response:
    return page(request, "portal/results.html", results=await svc(request).dm_brand.results(), rates=rates)


async def _releases(request: Request, status: int = 200, **extra: Any) -> Response:
    s = svc(request)
    return page(request, "portal/releases.html", status, releases=await s.dm_brand.releases(),
                library=await s.dm_brand.library_view(), partners=await s.dm_brand.partners(), **extra)


@brand_page
async def brand_releases(request: Request) -> Response:
    return await _releases(request)


@brand_page
async def brand_release(request: Request) -> Response:
    f = await form(request)
    actor, _ = dm_actor(request)
    what = str(f.get("what", ""))
    kind, _, subject = what.partition(":")
    audience = str(f.get("audience", ""))
    group = audience[2:] if audience.startswith("g:") else None
    partner = audience[2:] if audience.startswith("p:") else None
    try:
        await svc(request).dm_brand.release(actor, kind, subject, group_id=group, partner_id=partner, ip=client_ip(request))
    except Refused as exc:
        return await _releases(request, exc.status, messages=flash("bad", f"Not released: {exc.reason}"))
    return await _releases(request, 201, messages=flash("good", f"Released {kind} {subject}."))


@brand_page
async def brand_retire(request: Request) -> Response:
    actor, _ = dm_actor(request)
    await svc(request).dm_brand.retire(actor, request.path_params["release_id"], client_ip(request))
    return await _releases(request, messages=flash("good", "Retired: partners no longer see it."))


async def _partners(request: Request, status: int = 200, **extra: Any) -> Response:
    return page(request, "portal/partners.html", status, data=await svc(request).dm_brand.partners(), **extra)


@brand_page
async def brand_partners(request: Request) -> Response:
    return await _partners(request)


@brand_page
async def brand_partners_post(request: Request) -> Response:
    f = await form(request)
    actor, _ = dm_actor(request)
    s = svc(request)
    try:
        if f.get("action") == "partner":
            await s.dm_brand.add_partner(actor, str(f.get("name", "")), client_ip(request))
            done = "Partner added: add a partner user on the admin page."
        else:
            await s.dm_brand.add_group(actor, str(f.get("name", "")), [str(x) for x in f.getlist("partner")],
                                       client_ip(request))
            done = "Group saved."
    except Refused as exc:
        return await _partners(request, exc.status, messages=flash("bad", exc.reason))
    return await _partners(request, 201, messages=flash("good", done))


@brand_page
async def brand_suppressions(request: Request) -> Response:
    rows = await svc(request).dm_brand.suppressions()
    full = principal(request).has(Can.DM_CONTACTS)
    return page(request, "portal/suppressions.html", rows=[
        {**r, "email": r["email_key"] if full else mask_email(r["email_key"])} for r in rows], full=full)


@brand_page
async def brand_audit(request: Request) -> Response:
    try:
        before = int(request.query_params["before"]) if "before" in request.query_params else None
    except ValueError:
        before = None
    entries = await svc(request).dm_brand.audit(before)
    return page(request, "portal/audit.html", entries=entries,
                detail=lambda d: orjson.dumps(d).decode() if d else "")


def routes() -> list[BaseRoute]:
    return [
        Route("/portal", home, methods=["GET"]),
        Route("/portal/contacts", contacts, methods=["GET"]),
        Route("/portal/contacts", add_contact, methods=["POST"]),
        Route("/portal/contacts/import", import_contacts, methods=["POST"]),
        Route("/portal/campaigns", create_campaign, methods=["POST"]),
        Route("/portal/campaigns/{campaign_id}", campaign, methods=["GET"]),
        Route("/portal/campaigns/{campaign_id}/values", _campaign_action(save_values), methods=["POST"]),
        Route("/portal/campaigns/{campaign_id}/members", _campaign_action(add_members), methods=["POST"]),
        Route("/portal/campaigns/{campaign_id}/submit", _campaign_action(submit), methods=["POST"]),
        Route("/portal/campaigns/{campaign_id}/send", _campaign_action(send), methods=["POST"]),
        Route("/portal/quick", quick, methods=["GET"]),
        Route("/portal/quick", post_quick, methods=["POST"]),
        Route("/portal/outbox", outbox_any, methods=["GET"]),
        Route("/portal/outbox/{key}", outbox_message, methods=["GET"]),
        Route("/portal/brand", brand_home, methods=["GET"]),
        Route("/portal/brand/approvals/{approval_id}", brand_approval, methods=["GET"]),
        Route("/portal/brand/approvals/{approval_id}", brand_decide, methods=["POST"]),
        Route("/portal/brand/results", brand_results, methods=["GET"]),
        Route("/portal/brand/releases", brand_releases, methods=["GET"]),
        Route("/portal/brand/releases", brand_release, methods=["POST"]),
        Route("/portal/brand/releases/{release_id}/retire", brand_retire, methods=["POST"]),
        Route("/portal/brand/partners", brand_partners, methods=["GET"]),
        Route("/portal/brand/partners", brand_partners_post, methods=["POST"]),
        Route("/portal/brand/suppressions", brand_suppressions, methods=["GET"]),
        Route("/portal/brand/audit", brand_audit, methods=["GET"]),
    ]
