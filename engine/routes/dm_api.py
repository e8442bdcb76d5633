"""The distributed-marketing API, /v1/dm/…: everything the portal does, for a partner's own
systems (a secret key tied to the partner: `kairos keys create secret --partner ID --scope
dm`, or a signed-in partner user with X-CSRF-Token) and, under /v1/dm/brand/…, for the brand
(scope dm:brand; contacts' addresses need dm:contacts).

Adapters only: parse, call engine.flows.dm, serialise. Another partner's id answers 404;
values that do not fit the template answer 422 with every problem by field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.flows.dm.portal import Caller, NotFound, Refused
from engine.logic import events as spec
from engine.logic.access import Scope as Can
from engine.logic.dm.contacts import ContactError, mask_email
from engine.logic.dm.templates import TemplateVersion, ValuesError
from engine.routes import (
    client_ip,
    dm_actor,
    dm_caller,
    error,
    json_response,
    media_type,
    principal,
    read_body,
    svc,
)

MAX_JSON = 256 * 1024
MAX_CSV = 4 * 1024 * 1024


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, TemplateVersion):
        return {"id": value.id, "version": value.version, "name": value.name}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in ("email_key",)}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    return value


def ok(data: Any, status: int = 200) -> Response:
    return json_response(_plain(data), status)


Handler = Callable[[Request], Awaitable[Response]]


def answers(fn: Handler) -> Handler:
    """The flows' refusals as JSON answers naming the field."""

    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except NotFound as exc:
            return error(404, exc.what, "not found")
        except Refused as exc:
            return error(exc.status, exc.field, exc.reason)
        except ValuesError as exc:
            first = exc.problems[0]
            return error(422, first.field, first.reason, problems=[p.as_dict() for p in exc.problems])
        except ContactError as exc:
            return error(422, exc.field, exc.reason)
        except spec.BodyError as exc:
            return error(exc.status, exc.field, exc.reason)

    wrapped.__name__ = fn.__name__
    return wrapped


def partner(fn: Callable[[Request, Caller], Awaitable[Response]]) -> Handler:
    async def wrapped(request: Request) -> Response:
        who = dm_caller(request)
        if who is None:
            return error(403, "partner", "this caller acts for no partner (a partner user, or a key "
                         "made with --partner)")
        return await fn(request, who)

    wrapped.__name__ = fn.__name__
    return answers(wrapped)


async def body(request: Request) -> dict[str, Any]:
    raw = await read_body(request, MAX_JSON)
    if not raw.strip():
        return {}
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise spec.BodyError(400, "body", "must be JSON") from None
    if not isinstance(doc, dict):
        raise spec.BodyError(400, "body", "must be a JSON object")
    return doc


def _ids(doc: dict[str, Any], name: str = "contact_ids") -> list[str]:
    ids = doc.get(name, [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise Refused(422, name, "must be a list of contact ids")
    return ids


def _campaign_out(v: dict[str, Any]) -> dict[str, Any]:
    return {"campaign": v["campaign"], "status": v["status"], "may_send": v["may_send"], "why": v["why"],
            "approval": v["approval"], "members": v["members"],
            "templates": [t.id for t in v["templates"]],
            "sends": v["sends"]}


# -- partner ---------------------------------------------------------------------------------------
@partner
async def get_releases(request: Request, who: Caller) -> Response:
    return ok(await svc(request).dm_portal.released(who.partner_id))


@partner
async def list_contacts(request: Request, who: Caller) -> Response:
    q = request.query_params
    try:
        limit, offset = int(q.get("limit", 100)), int(q.get("offset", 0))
    except ValueError:
        return error(400, "limit", "limit and offset must be integers")
    rows, total = await svc(request).dm_portal.contacts(who.partner_id, q.get("q", ""), limit, offset)
    return ok({"contacts": rows, "total": total})


@partner
async def add_contact(request: Request, who: Caller) -> Response:
    return ok(await svc(request).dm_portal.add_contact(who, await body(request)), 201)


@partner
async def import_contacts(request: Request, who: Caller) -> Response:
    data = await read_body(request, MAX_CSV)
    if media_type(request) not in ("text/csv", "text/plain", "application/octet-stream", ""):
        return error(415, "content-type", "send the CSV itself as text/csv")
    return ok(await svc(request).dm_portal.import_contacts(who, data))


@partner
async def get_contact(request: Request, who: Caller) -> Response:
    return ok(await svc(request).dm_portal.contact(who.partner_id, request.path_params["contact_id"]))


@partner
async def list_campaigns(request: Request, who: Caller) -> Response:
    return ok({"campaigns": await svc(request).dm_portal.campaigns(who.partner_id)})


@partner
async def create_campaign(request: Request, who: Caller) -> Response:
    doc = await body(request)
    journey = doc.get("journey")
    if not isinstance(journey, str):
        return error(422, "journey", "must name a journey released to you")
    c, made = await svc(request).dm_portal.create_campaign(
        who, kind="journey", subject=journey, name=str(doc.get("name") or ""), values=doc.get("values"),
        contact_ids=_ids(doc), idempotency_key=request.headers.get("idempotency-key"))
    v = await svc(request).dm_portal.view(who.partner_id, c["id"])
    return ok(_campaign_out(v), 201 if made else 200)


@partner
async def get_campaign(request: Request, who: Caller) -> Response:
    return ok(_campaign_out(await svc(request).dm_portal.view(who.partner_id, request.path_params["campaign_id"])))


@partner
async def put_values(request: Request, who: Caller) -> Response:
    doc = await body(request)
    contact = doc.get("contact_id")
    if contact is not None and not isinstance(contact, str):
        return error(422, "contact_id", "must be a contact id")
    v = await svc(request).dm_portal.set_values(who, request.path_params["campaign_id"], doc.get("values"), contact)
    return ok(_campaign_out(v))


@partner
async def post_members(request: Request, who: Caller) -> Response:
    v = await svc(request).dm_portal.add_members(who, request.path_params["campaign_id"], _ids(await body(request)))
    return ok(_campaign_out(v))


@partner
async def get_preview(request: Request, who: Caller) -> Response:
    q = request.query_params
    return ok(await svc(request).dm_portal.preview(who.partner_id, request.path_params["campaign_id"],
                                                   contact_id=q.get("contact_id"), template_id=q.get("template")))


@partner
async def post_submit(request: Request, who: Caller) -> Response:
    return ok(_campaign_out(await svc(request).dm_portal.submit(who, request.path_params["campaign_id"])))


@partner
async def post_send(request: Request, who: Caller) -> Response:
    return ok(_campaign_out(await svc(request).dm_portal.send(who, request.path_params["campaign_id"])))


@partner
async def get_campaign_engagement(request: Request, who: Caller) -> Response:
    return ok(await svc(request).dm_portal.engagement(who.partner_id, request.path_params["campaign_id"]))


@partner
async def get_engagement(request: Request, who: Caller) -> Response:
    return ok(await svc(request).dm_portal.engagement(who.partner_id))


@partner
async def post_quick_send(request: Request, who: Caller) -> Response:
    doc = await body(request)
    template = doc.get("template")
    if not isinstance(template, str):
        return error(422, "template", "must name a template released to you")
    test = doc.get("test", False)
    if not isinstance(test, bool):
        return error(422, "test", "must be true or false")
    v, made = await svc(request).dm_portal.quick_send(
        who, template_id=template, contact_ids=_ids(doc), values=doc.get("values"), test=test,
        idempotency_key=request.headers.get("idempotency-key"), name=str(doc.get("name") or ""))
    out = _campaign_out(v)
    out["replayed"] = not made
    return ok(out, 201 if made else 200)


# -- brand -------------------------------------------------------------------------------------------
@answers
async def brand_library(request: Request) -> Response:
    return ok(await svc(request).dm_brand.library_view())


@answers
async def brand_approvals(request: Request) -> Response:
    state = request.query_params.get("state", "pending")
    return ok({"approvals": await svc(request).dm_brand.approvals(None if state == "all" else state)})


@answers
async def brand_approval(request: Request) -> Response:
    got = await svc(request).dm_brand.approval(request.path_params["approval_id"])
    got["templates"] = [t.id for t in got["templates"]]
    return ok(got)


def _decide(approve: bool) -> Handler:
    @answers
    async def decide(request: Request) -> Response:
        doc = await body(request)
        actor, approver = dm_actor(request)
        got = await svc(request).dm_brand.decide(actor, approver, request.path_params["approval_id"], approve,
                                                 str(doc.get("reason") or ""), client_ip(request))
        got["templates"] = [t.id for t in got["templates"]]
        return ok(got)

    decide.__name__ = "approve" if approve else "reject"
    return decide


@answers
async def brand_releases(request: Request) -> Response:
    return ok({"releases": await svc(request).dm_brand.releases()})


@answers
async def brand_release(request: Request) -> Response:
    doc = await body(request)
    actor, _ = dm_actor(request)
    rid = await svc(request).dm_brand.release(actor, str(doc.get("kind", "")), str(doc.get("subject", "")),
                                              group_id=doc.get("group_id"), partner_id=doc.get("partner_id"),
                                              ip=client_ip(request))
    return ok({"id": rid}, 201)


@answers
async def brand_retire(request: Request) -> Response:
    actor, _ = dm_actor(request)
    await svc(request).dm_brand.retire(actor, request.path_params["release_id"], client_ip(request))
    return ok({"retired": True})


@answers
async def brand_results(request: Request) -> Response:
    return ok(await svc(request).dm_brand.results())


@answers
async def brand_partners(request: Request) -> Response:
    return ok(await svc(request).dm_brand.partners())


@answers
async def brand_group(request: Request) -> Response:
    doc = await body(request)
    actor, _ = dm_actor(request)
    gid = await svc(request).dm_brand.add_group(actor, str(doc.get("name", "")), _ids(doc, "partner_ids"),
                                                client_ip(request))
    return ok({"id": gid}, 201)


@answers
async def brand_suppressions(request: Request) -> Response:
    rows = await svc(request).dm_brand.suppressions()
    if not principal(request).has(Can.DM_CONTACTS):  # addresses only with dm:contacts
        rows = [{**r, "email_key": mask_email(r["email_key"])} for r in rows]
    return ok({"suppressions": [{**r, "email": r.pop("email_key")} for r in rows]})


@answers
async def brand_contacts(request: Request) -> Response:
    rows = await svc(request).dm_brand.contacts(request.query_params.get("q", ""))
    return ok({"contacts": rows})


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/dm/releases", get_releases, methods=["GET"]),
        Route("/v1/dm/contacts", list_contacts, methods=["GET"]),
        Route("/v1/dm/contacts", add_contact, methods=["POST"]),
        Route("/v1/dm/contacts/import", import_contacts, methods=["POST"]),
        Route("/v1/dm/contacts/{contact_id}", get_contact, methods=["GET"]),
        Route("/v1/dm/campaigns", list_campaigns, methods=["GET"]),
        Route("/v1/dm/campaigns", create_campaign, methods=["POST"]),
        Route("/v1/dm/campaigns/{campaign_id}", get_campaign, methods=["GET"]),
        Route("/v1/dm/campaigns/{campaign_id}/values", put_values, methods=["PUT"]),
        Route("/v1/dm/campaigns/{campaign_id}/members", post_members, methods=["POST"]),
        Route("/v1/dm/campaigns/{campaign_id}/preview", get_preview, methods=["GET"]),
        Route("/v1/dm/campaigns/{campaign_id}/submit", post_submit, methods=["POST"]),
        Route("/v1/dm/campaigns/{campaign_id}/send", post_send, methods=["POST"]),
        Route("/v1/dm/campaigns/{campaign_id}/engagement", get_campaign_engagement, methods=["GET"]),
        Route("/v1/dm/engagement", get_engagement, methods=["GET"]),
        Route("/v1/dm/quick-sends", post_quick_send, methods=["POST"]),
        Route("/v1/dm/brand/library", brand_library, methods=["GET"]),
        Route("/v1/dm/brand/approvals", brand_approvals, methods=["GET"]),
        Route("/v1/dm/brand/approvals/{approval_id}", brand_approval, methods=["GET"]),
        Route("/v1/dm/brand/approvals/{approval_id}/approve", _decide(True), methods=["POST"]),
        Route("/v1/dm/brand/approvals/{approval_id}/reject", _decide(False), methods=["POST"]),
        Route("/v1/dm/brand/releases", brand_releases, methods=["GET"]),
        Route("/v1/dm/brand/releases", brand_release, methods=["POST"]),
        Route("/v1/dm/brand/releases/{release_id}/retire", brand_retire, methods=["POST"]),
        Route("/v1/dm/brand/results", brand_results, methods=["GET"]),
        Route("/v1/dm/brand/partners", brand_partners, methods=["GET"]),
        Route("/v1/dm/brand/groups", brand_group, methods=["POST"]),
        Route("/v1/dm/brand/suppressions", brand_suppressions, methods=["GET"]),
        Route("/v1/dm/brand/contacts", brand_contacts, methods=["GET"]),
    ]
