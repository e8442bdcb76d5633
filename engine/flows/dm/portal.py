"""The partner's side: contacts, campaigns from released journeys and templates, values,
preview, approval requests, sending (quick sends and journey enrolment), engagement.

Every method takes the partner id of the caller (a partner user's, or the partner a secret
key is tied to) and reaches only that partner's rows; an id that is not the partner's raises
`NotFound` (404), as does a journey or template not released to it. A quick send with an
idempotency key sends once, however often it is repeated. Every change is audited.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from engine.db.control import ControlPlane
from engine.db.dm import DmStore
from engine.eventlog import EventLog, LogUnavailable
from engine.flows.dm.library import Library, describe_journey, describe_template
from engine.flows.dm.personalise import Personaliser, partner_of, recipient, values_for
from engine.logic.dm import approvals as ap
from engine.logic.dm.contacts import ContactError, campaign_status, check_contact, plan_import
from engine.logic.dm.sending import normalise_email, suppression_key
from engine.logic.dm.templates import FieldProblem, RenderedMessage, TemplateVersion, ValuesError

log = logging.getLogger("kairos.dm")

MAX_MEMBERS = 5000
MAX_QUICK = MAX_MEMBERS  # a promotion to every contact of a store


class NotFound(LookupError):
    """Not this partner's, or not released to it: 404."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")
        self.what = what


class Refused(Exception):
    """A request the state does not allow (``status`` 403/409/422), naming the field."""

    def __init__(self, status: int, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}")
        self.status = status
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Caller:
    """Who acts for the partner: the audit log's actor, and an e-mail address for test sends."""

    partner_id: str
    actor: str  # user:<email> or key:<prefix>
    user_id: str  # the approval's submitter
    email: str | None = None
    ip: str = ""


def _now() -> datetime:
    return datetime.now(UTC)


class Portal:
    def __init__(self, store: DmStore, control: ControlPlane, library: Library, sends_log: EventLog,
                 personaliser: Personaliser, clock: Callable[[], datetime] = _now) -> None:
        self.store = store
        self.control = control
        self.library = library
        self.sends_log = sends_log
        self.personaliser = personaliser
        self.clock = clock

    async def _audit(self, who: Caller, action: str, target: str, detail: dict[str, Any] | None = None) -> None:
        await self.control.audit(who.actor, action, target, detail=detail, ip=who.ip, partner_id=who.partner_id)

    # -- what is released -------------------------------------------------------------------
    async def released(self, partner_id: str) -> dict[str, list[dict[str, Any]]]:
        cfg = await self.library.current()
        mine = await self.store.released_to(partner_id)
        return {
            "journeys": [describe_journey(cfg, j) for jid, j in cfg.journeys.items() if ("journey", jid) in mine],
            "templates": [describe_template(tv) for tid, tv in cfg.templates.items() if ("template", tid) in mine],
        }

    async def _pin(self, partner_id: str, kind: str, subject: str) -> tuple[str, str, list[TemplateVersion], str]:
        """(version, approval policy, templates, name) of a released journey or template."""
        cfg = await self.library.current()
        mine = await self.store.released_to(partner_id)
        if kind == "quick":
            tv = cfg.templates.get(subject)
            if tv is None or ("template", subject) not in mine:
                raise NotFound("template")
            return tv.version, tv.approval, [tv], tv.name
        if kind != "journey":
            raise Refused(422, "kind", "must be journey or quick")
        j = cfg.journeys.get(subject)
        if j is None or ("journey", subject) not in mine or Library.step_versions(cfg, j) is None:
            raise NotFound("journey")
        tvs = [cfg.templates[s.template] for s in j.steps]
        policy = "required" if any(tv.approval == "required" for tv in tvs) else "none"
        return Library.pinned(cfg, j), policy, list({tv.version: tv for tv in tvs}.values()), j.name

    # -- contacts ---------------------------------------------------------------------------
    async def add_contact(self, who: Caller, raw: Mapping[str, Any]) -> dict[str, Any]:
        contact = check_contact(raw)  # ContactError: 422
        added = await self.store.add_contacts(who.partner_id, [contact])
        if not added:
            raise Refused(409, "email", f"{contact['email']} is already one of your contacts")
        await self._audit(who, "dm.contact.add", added[0]["id"])
        return added[0]

    async def import_contacts(self, who: Caller, data: bytes) -> dict[str, Any]:
        """Add the rows of a CSV; a report of every row (added, duplicate, bad email)."""
        plan = plan_import(data)  # ContactError for an unusable file
        rows = [{k: v for k, v in c.items() if k != "row"} for c in plan.contacts]
        added = {c["email_key"] for c in await self.store.add_contacts(who.partner_id, rows)}
        report = [r.as_dict() for r in plan.report]
        for c in plan.contacts:
            if c["email_key"] in added:
                report.append({"row": c["row"], "email": c["email"], "status": "added", "reason": ""})
            else:
                report.append({"row": c["row"], "email": c["email"], "status": "duplicate",
                               "reason": "already one of your contacts"})
        report.sort(key=lambda r: r["row"])
        await self._audit(who, "dm.contact.import", "", {"added": len(added), "rows": len(report)})
        return {"added": len(added), "refused": len(report) - len(added), "rows": report}

    async def contacts(self, partner_id: str, search: str = "", limit: int = 100,
                       offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        return await self.store.contacts(partner_id, search=search[:100], limit=limit, offset=offset)

    async def contact(self, partner_id: str, contact_id: str) -> dict[str, Any]:
        c = await self.store.contact(partner_id, contact_id)
        if c is None:
            raise NotFound("contact")
        return c

    # -- campaigns --------------------------------------------------------------------------
    @staticmethod
    def _values(kind: str, tvs: Sequence[TemplateVersion], raw: Any) -> dict[str, dict[str, str]]:
        """Validate a partner's values: flat ``{field: value}`` for a quick send, else
        ``{template id: {field: value}}``; stored as the latter, cleaned, only what was given."""
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise Refused(422, "values", "must be an object of field values")
        nested = {tvs[0].id: raw} if kind == "quick" else raw
        out: dict[str, dict[str, str]] = {}
        problems: list[FieldProblem] = []
        known = {tv.id: tv for tv in tvs}
        for tid, vals in nested.items():
            if tid not in known:
                problems.append(FieldProblem(f"values.{tid}", "is not a template of this journey"))
                continue
            if not isinstance(vals, Mapping):
                problems.append(FieldProblem(f"values.{tid}", "must be an object of field values"))
                continue
            tv = known[tid]
            try:
                clean = tv.validate(vals)
            except ValuesError as exc:
                prefix = "" if kind == "quick" else f"{tid}."
                problems += [FieldProblem(prefix + p.field, p.reason) for p in exc.problems]
                continue
            given = {k: clean[k] for k, v in vals.items() if v is not None and k in clean}
            if given:
                out[tid] = given
        if problems:
            raise ValuesError(problems)
        return out

    async def create_campaign(self, who: Caller, *, kind: str, subject: str, name: str = "",
                              values: Any = None, contact_ids: Sequence[str] = (),
                              idempotency_key: str | None = None, test: bool = False) -> tuple[dict[str, Any], bool]:
        version, policy, tvs, default_name = await self._pin(who.partner_id, kind, subject)
        clean = self._values(kind, tvs, values)
        await self._own(who.partner_id, contact_ids)
        campaign, made = await self.store.create_campaign(
            who.partner_id, kind=kind, subject=subject, name=(name or default_name)[:200], version=version,
            values=clean, approval=policy, created_by=who.actor, idempotency_key=idempotency_key, test=test)
        if made:
            if contact_ids:
                await self.store.add_members(who.partner_id, campaign["id"], list(dict.fromkeys(contact_ids)))
            await self._audit(who, "dm.campaign.create", campaign["id"], {"kind": kind, "subject": subject,
                                                                           "version": version[:12]})
        return campaign, made

    async def _own(self, partner_id: str, contact_ids: Sequence[str]) -> list[dict[str, Any]]:
        ids = list(dict.fromkeys(contact_ids))
        if len(ids) > MAX_MEMBERS:
            raise Refused(422, "contact_ids", f"must be at most {MAX_MEMBERS}")
        if any(not isinstance(i, str) for i in ids):
            raise Refused(422, "contact_ids", "must be a list of contact ids")
        found = await self.store.contacts_by_ids(partner_id, ids)
        if len(found) != len(ids):
            raise NotFound("contact")
        return found

    async def _campaign(self, partner_id: str, campaign_id: str) -> dict[str, Any]:
        c = await self.store.campaign(partner_id, campaign_id)
        if c is None:
            raise NotFound("campaign")
        return c

    async def _templates(self, c: Mapping[str, Any]) -> list[TemplateVersion]:
        tvs = await self.library.templates_of(c["kind"], c["version"])
        if tvs is None:
            raise Refused(409, "version", "the pinned version is no longer stored")
        return list({tv.version: tv for tv in tvs}.values())

    @staticmethod
    def _content(c: Mapping[str, Any], members: Sequence[Mapping[str, Any]]) -> str:
        return ap.approval_content(c["version"], {"campaign": c["values"],
                                                  "members": {m["contact_id"]: m["values"] for m in members if m["values"]}},
                                   [m["contact_id"] for m in members])

    def _editable(self, c: Mapping[str, Any]) -> None:
        if c["launched_at"] is not None:
            raise Refused(409, "campaign", "was sent already: make a new one to change it")

    async def _edited(self, who: Caller, campaign_id: str) -> None:
        """Anything changed: an approval of the old content no longer stands."""
        if await self.store.supersede(who.partner_id, campaign_id, self.clock()):
            await self._audit(who, "dm.approval.superseded", campaign_id)

    async def set_values(self, who: Caller, campaign_id: str, values: Any,
                         contact_id: str | None = None) -> dict[str, Any]:
        c = await self._campaign(who.partner_id, campaign_id)
        self._editable(c)
        clean = self._values(c["kind"], await self._templates(c), values)
        if contact_id is None:
            await self.store.set_values(who.partner_id, campaign_id, clean)
        elif not await self.store.set_member_values(who.partner_id, campaign_id, contact_id, clean):
            raise NotFound("member")
        await self._edited(who, campaign_id)
        await self._audit(who, "dm.campaign.values", campaign_id, {"member": contact_id})
        return await self.view(who.partner_id, campaign_id)

    async def add_members(self, who: Caller, campaign_id: str, contact_ids: Sequence[str]) -> dict[str, Any]:
        c = await self._campaign(who.partner_id, campaign_id)
        self._editable(c)
        await self._own(who.partner_id, contact_ids)
        n = await self.store.add_members(who.partner_id, campaign_id, list(dict.fromkeys(contact_ids)))
        if n:
            await self._edited(who, campaign_id)
            await self._audit(who, "dm.campaign.members", campaign_id, {"added": n})
        return await self.view(who.partner_id, campaign_id)

    async def remove_member(self, who: Caller, campaign_id: str, contact_id: str) -> dict[str, Any]:
        c = await self._campaign(who.partner_id, campaign_id)
        self._editable(c)
        if not await self.store.remove_member(who.partner_id, campaign_id, contact_id):
            raise NotFound("member")
        await self._edited(who, campaign_id)
        await self._audit(who, "dm.campaign.members", campaign_id, {"removed": contact_id})
        return await self.view(who.partner_id, campaign_id)

    async def campaigns(self, partner_id: str) -> list[dict[str, Any]]:
        return await self.store.campaigns(partner_id)

    async def view(self, partner_id: str, campaign_id: str) -> dict[str, Any]:
        """The campaign, its members, its approval, what it may do next."""
        c = await self._campaign(partner_id, campaign_id)
        members = await self.store.members(partner_id, campaign_id)
        approval = await self.store.latest_approval(partner_id, campaign_id)
        content = self._content(c, members)
        gate = ap.may_send(c["approval"], _approval(approval), content)
        sends = await self.store.sends_of_campaign(partner_id, campaign_id)
        unfinished = sum(1 for s in sends if s["state"] in ("queued", "claimed", "retry"))
        active = sum(1 for m in members if m["status"] == "active")
        status = campaign_status(launched=c["launched_at"] is not None, approval_needed=c["approval"] == "required",
                                 approval_state=approval["state"] if approval else None,
                                 approval_current=bool(approval and approval["content"] == content),
                                 unfinished=unfinished, active_members=active)
        tvs = await self._templates(c)
        return {"campaign": c, "members": members, "approval": approval, "status": status,
                "may_send": gate.allowed, "why": gate.reason, "templates": tvs, "sends": sends,
                "content": content}

    # -- preview ----------------------------------------------------------------------------
    async def preview(self, partner_id: str, campaign_id: str, *, contact_id: str | None = None,
                      template_id: str | None = None) -> dict[str, Any]:
        """The message as the contact (or the campaign's first member) would get it, links
        untracked; says when the contact is suppressed."""
        v = await self.view(partner_id, campaign_id)
        c, tvs = v["campaign"], v["templates"]
        tv = next((x for x in tvs if x.id == template_id), None) if template_id else tvs[0]
        if tv is None:
            raise NotFound("template")
        member = None
        if contact_id:
            member = next((m for m in v["members"] if m["contact_id"] == contact_id), None)
            if member is None:
                raise NotFound("member")
        elif v["members"]:
            member = v["members"][0]
        contact = await self.store.contact(partner_id, member["contact_id"]) if member else None
        partner = await self.store.partner(partner_id) or {"name": ""}
        items = await self.personaliser.items(tv, contact)
        to = recipient(contact, contact["email"] if contact else "preview@example.invalid")
        p = partner_of(partner["name"])
        rendered: RenderedMessage = tv.render(
            values_for(tv, c["values"], member["values"] if member else None),
            contact=dict(to.data), partner=dict(p.data), items=items, unsubscribe_url="#unsubscribe")
        suppressed = bool(contact and await self.store.suppressed([contact["email_key"]]))
        return {"subject": rendered.subject, "html": rendered.html, "text": rendered.text,
                "template": tv.id, "contact": contact, "suppressed": suppressed,
                "links": [{"index": lk.index, "kind": lk.kind, "url": lk.url} for lk in rendered.links]}

    # -- approval ---------------------------------------------------------------------------
    async def submit(self, who: Caller, campaign_id: str) -> dict[str, Any]:
        v = await self.view(who.partner_id, campaign_id)
        c = v["campaign"]
        self._editable(c)
        if c["approval"] != "required":
            raise Refused(409, "approval", "is not needed for this content: send it")
        if not v["members"]:
            raise Refused(422, "members", "add at least one contact before submitting")
        if v["approval"] and v["approval"]["state"] in ("pending", "approved") and v["approval"]["content"] == v["content"]:
            raise Refused(409, "approval", f"is {v['approval']['state']} already")
        await self.store.supersede(who.partner_id, campaign_id, self.clock())
        a = ap.submit(_new_approval_id(), campaign_id, v["content"], who.user_id, self.clock())
        await self.store.add_approval(who.partner_id, {
            "id": a.id, "campaign_id": campaign_id, "content": a.content, "submitted_by": a.submitted_by,
            "submitted_at": a.submitted_at, "state": a.state,
            "values": {"campaign": c["values"], "members": {m["contact_id"]: m["values"] for m in v["members"] if m["values"]}},
            "audience": [m["contact_id"] for m in v["members"]]})
        await self._audit(who, "dm.approval.submit", campaign_id, {"approval": a.id})
        return await self.view(who.partner_id, campaign_id)

    # -- sending ----------------------------------------------------------------------------
    async def send(self, who: Caller, campaign_id: str) -> dict[str, Any]:
        """Send a quick send to its members, or enrol a journey's members ("send to
        journey"); only what the approval policy allows, once."""
        v = await self.view(who.partner_id, campaign_id)
        c = v["campaign"]
        if c["launched_at"] is not None:
            return v  # sent already: a repeat sends nothing
        if not v["members"]:
            raise Refused(422, "members", "add at least one contact first")
        if not v["may_send"]:
            raise Refused(409, "approval", v["why"])
        if not await self.store.launch(who.partner_id, campaign_id):
            return await self.view(who.partner_id, campaign_id)
        if c["kind"] == "journey":
            n = await self.store.enrol(who.partner_id, campaign_id, self.clock())
            await self._audit(who, "dm.campaign.enrol", campaign_id, {"members": n})
        else:
            tv = v["templates"][0]
            contacts = await self.store.contacts_by_ids(who.partner_id, [m["contact_id"] for m in v["members"]])
            made = await self._enqueue(who.partner_id, campaign_id, 0, tv, contacts)
            await self.store.members_sent(who.partner_id, campaign_id, self.clock())
            await self._audit(who, "dm.campaign.send", campaign_id, {"sends": made})
        return await self.view(who.partner_id, campaign_id)

    async def _enqueue(self, partner_id: str, campaign_id: str, step: int, tv: TemplateVersion,
                       contacts: Sequence[Mapping[str, Any]], *, test_to: str | None = None) -> int:
        """Send rows (suppressed addresses end `suppressed` at once), then their records on
        the dm.sends topic. A lost record is found by the mailer's sweep: the rows are the truth."""
        message = await self.store.message(partner_id, campaign_id, step, tv.id, tv.version)
        if test_to is not None:
            recipients = [{"contact_id": None, "to_email": test_to, "email_key": suppression_key(test_to),
                           "state": "queued"}]
        else:
            blocked = await self.store.suppressed([ct["email_key"] for ct in contacts])
            recipients = [{"contact_id": ct["id"], "to_email": ct["email"], "email_key": ct["email_key"],
                           "state": "suppressed" if ct["email_key"] in blocked else "queued"} for ct in contacts]
        made = await self.store.add_sends(partner_id, campaign_id, message, recipients, test=test_to is not None)
        await publish(self.sends_log, [m for m in made if m["state"] == "queued"])
        return len(made)

    async def quick_send(self, who: Caller, *, template_id: str, contact_ids: Sequence[str], values: Any = None,
                         idempotency_key: str | None = None, test: bool = False, name: str = "") -> tuple[dict[str, Any], bool]:
        """One message from a released template to contacts now (or after approval where
        the template requires it); a test send goes only to the caller's own address.
        Returns (the campaign view, made now): a repeated idempotency key sends nothing."""
        if not isinstance(contact_ids, list | tuple) or len(contact_ids) > MAX_QUICK:
            raise Refused(422, "contact_ids", f"must be a list of at most {MAX_QUICK} contact ids")
        if not test and not contact_ids:
            raise Refused(422, "contact_ids", "name at least one contact")
        to = None
        if test:
            to = normalise_email(who.email) if who.email else None
            if to is None:
                raise Refused(422, "test", "a test send goes to the signed-in user's own address; this caller has none")
        if idempotency_key is not None and (not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= 200):
            raise Refused(422, "idempotency_key", "must be 1-200 characters")
        campaign, made = await self.create_campaign(
            who, kind="quick", subject=template_id, name=name, values=values,
            contact_ids=[] if test else contact_ids, idempotency_key=idempotency_key, test=test)
        if not made:
            return await self.view(who.partner_id, campaign["id"]), False
        if test:
            await self._own(who.partner_id, contact_ids)
            await self.store.launch(who.partner_id, campaign["id"])
            tv = (await self._templates(campaign))[0]
            await self._enqueue(who.partner_id, campaign["id"], 0, tv, [], test_to=to)
            await self._audit(who, "dm.test_send", campaign["id"], {"to": to})
            return await self.view(who.partner_id, campaign["id"]), True
        v = await self.view(who.partner_id, campaign["id"])
        if v["may_send"]:
            v = await self.send(who, campaign["id"])
        return v, True

    # -- engagement ---------------------------------------------------------------------------
    async def engagement(self, partner_id: str, campaign_id: str | None = None) -> dict[str, Any]:
        """Per message (campaign step) and, for one campaign, per member and send."""
        counts = await self.store.engagement_counts(partner_id)
        out: dict[str, Any] = {"messages": counts, "links": await self.store.click_links(partner_id)}
        if campaign_id is not None:
            await self._campaign(partner_id, campaign_id)
            out["sends"] = await self.store.sends_of_campaign(partner_id, campaign_id)
        return out


def _approval(row: Mapping[str, Any] | None) -> ap.Approval | None:
    if row is None:
        return None
    return ap.Approval(row["id"], row["campaign_id"], row["content"], row["submitted_by"], row["submitted_at"],
                       row["state"], row["decided_by"], row["decided_at"], row["reason"])


def _new_approval_id() -> str:
    from engine.db.dm import new_id

    return new_id("ap")


async def publish(log_: EventLog, sends: Sequence[Mapping[str, Any]]) -> None:
    """Records on dm.sends, keyed by partner (one owner of each partner's rate bucket)."""
    if not sends:
        return
    records = [(str(s["partner_id"]).encode(), orjson.dumps({"send_id": s["id"], "partner_id": s["partner_id"]}))
               for s in sends]
    try:
        await log_.append(records)
    except LogUnavailable as exc:  # the rows stand; the mailer's sweep finds them
        log.warning("dm.sends records not produced (%s): the mailer's sweep sends them", exc)


__all__ = ["Caller", "ContactError", "NotFound", "Portal", "Refused", "ValuesError", "publish"]
