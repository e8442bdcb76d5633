"""The brand's side: the approval queue (the partner's values beside the brand's defaults,
restricted and flagged words), approve and reject (never one's own submission), releases to
partner groups or one partner, partners and groups, the suppression list, results per
journey, step, message and partner (the brand's total is the sum of its partners' rows)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from engine.db.control import ControlPlane
from engine.db.dm import DmStore
from engine.flows.dm.library import Library, describe_journey, describe_template
from engine.flows.dm.portal import NotFound, Refused
from engine.logic.dm import approvals as ap

COUNT_KEYS = ("sends", "sent", "pending", "bounced", "suppressed", "failed", "opened", "clicked",
              "unsubscribed", "bot_hits")


def _now() -> datetime:
    return datetime.now(UTC)


class Brand:
    def __init__(self, store: DmStore, control: ControlPlane, library: Library,
                 clock: Callable[[], datetime] = _now) -> None:
        self.store = store
        self.control = control
        self.library = library
        self.clock = clock

    async def library_view(self) -> dict[str, Any]:
        cfg = await self.library.current()
        return {"brand": cfg.brand.variables() if cfg.brand else None,
                "templates": [describe_template(tv) for tv in cfg.templates.values()],
                "journeys": [describe_journey(cfg, j) for j in cfg.journeys.values()],
                "problems": self.library.problems}

    # -- approvals ----------------------------------------------------------------------------
    async def approvals(self, state: str | None = "pending") -> list[dict[str, Any]]:
        return await self.store.brand_approvals(state)

    async def approval(self, approval_id: str) -> dict[str, Any]:
        """One approval with what the approver must see: per template, each field's value
        beside the default, and the flagged words found."""
        a = await self.store.brand_approval(approval_id)
        if a is None:
            raise NotFound("approval")
        c = await self.store.campaign(a["partner_id"], a["campaign_id"])
        assert c is not None
        tvs = await self.library.templates_of(c["kind"], c["version"]) or []
        values = a["values"]
        fields = []
        for tv in {x.version: x for x in tvs}.values():
            given = (values.get("campaign") or {}).get(tv.id) or {}
            flagged = tv.flagged_hits(given)
            for f in tv.fields.values():
                fields.append({"template": tv.id, "field": f.id, "label": f.label, "default": f.default,
                               "value": given.get(f.id), "changed": f.id in given and given[f.id] != f.default,
                               "flagged": flagged.get(f.id, [])})
        members = {m: v for m, v in (values.get("members") or {}).items()}
        partner = await self.store.partner(a["partner_id"])
        return {"approval": a, "campaign": c, "fields": fields, "member_values": members,
                "audience": len(a["audience"]), "partner": partner, "templates": list({tv.version: tv for tv in tvs}.values())}

    async def decide(self, actor: str, approver_id: str, approval_id: str, approve: bool,
                     reason: str = "", ip: str = "") -> dict[str, Any]:
        row = await self.store.brand_approval(approval_id)
        if row is None:
            raise NotFound("approval")
        a = ap.Approval(row["id"], row["campaign_id"], row["content"], row["submitted_by"], row["submitted_at"],
                        row["state"], row["decided_by"], row["decided_at"], row["reason"])
        now = self.clock()
        try:
            done = ap.approve(a, approver_id, now) if approve else ap.reject(a, approver_id, reason, now)
        except ap.ApprovalError as exc:
            raise Refused(exc.status, "approval", exc.reason) from None
        if not await self.store.decide(approval_id, done.state, approver_id, done.reason, now):
            raise Refused(409, "approval", "was decided or superseded meanwhile")
        await self.control.audit(actor, f"dm.approval.{done.state}", row["campaign_id"], ip=ip,
                                 partner_id=row["partner_id"],
                                 detail={"approval": approval_id, "reason": done.reason})
        return await self.approval(approval_id)

    # -- releases, partners, groups ---------------------------------------------------------------
    async def releases(self) -> list[dict[str, Any]]:
        return await self.store.releases()

    async def release(self, actor: str, kind: str, subject: str, *, group_id: str | None = None,
                      partner_id: str | None = None, ip: str = "") -> str:
        cfg = await self.library.current()
        if kind not in ("journey", "template"):
            raise Refused(422, "kind", "must be journey or template")
        if subject not in (cfg.journeys if kind == "journey" else cfg.templates):
            raise Refused(422, "subject", f"no {kind} {subject!r} in config/dm")
        if bool(group_id) == bool(partner_id):
            raise Refused(422, "audience", "release to one partner group or one partner")
        if partner_id and await self.store.partner(partner_id) is None:
            raise Refused(422, "partner_id", "no such partner")
        if group_id and group_id not in {g["id"] for g in await self.store.groups()}:
            raise Refused(422, "group_id", "no such group")
        rid = await self.store.release(kind, subject, by=actor, group_id=group_id or None,
                                       partner_id=partner_id or None)
        await self.control.audit(actor, "dm.release", f"{kind}:{subject}", ip=ip,
                                 detail={"release": rid, "group": group_id, "partner": partner_id})
        return rid

    async def retire(self, actor: str, release_id: str, ip: str = "") -> None:
        if not await self.store.retire(release_id):
            raise NotFound("release")
        await self.control.audit(actor, "dm.release.retire", release_id, ip=ip)

    async def partners(self) -> dict[str, Any]:
        return {"partners": await self.store.partners(), "groups": await self.store.groups()}

    async def add_partner(self, actor: str, name: str, ip: str = "") -> str:
        name = name.strip()
        if not 1 <= len(name) <= 200:
            raise Refused(422, "name", "must be 1-200 characters")
        pid = await self.control.create_partner(name)
        await self.control.audit(actor, "partner.add", pid, ip=ip, detail={"name": name})
        return pid

    async def add_group(self, actor: str, name: str, partner_ids: list[str], ip: str = "") -> str:
        name = name.strip()
        if not 1 <= len(name) <= 100:
            raise Refused(422, "name", "must be 1-100 characters")
        got = await self.store.group_by_name(name)
        gid = got["id"] if got else await self.store.create_group(name)
        for pid in partner_ids:
            if await self.store.partner(pid) is None:
                raise Refused(422, "partner_ids", f"no partner {pid}")
            await self.store.add_to_group(gid, pid)
        await self.control.audit(actor, "dm.group", gid, ip=ip, detail={"name": name, "partners": partner_ids})
        return gid

    async def suppressions(self) -> list[dict[str, Any]]:
        return await self.store.suppressions()

    async def contacts(self, search: str = "") -> list[dict[str, Any]]:
        """Every partner's contacts with addresses: only for callers with dm:contacts."""
        return await self.store.brand_contacts(search=search[:100])

    async def audit(self, before: int | None = None) -> list[dict[str, Any]]:
        rows = await self.control.audit_entries(limit=200, before_id=before)
        return [r for r in rows if r["action"].startswith(("dm.", "partner."))]

    # -- results --------------------------------------------------------------------------------------
    async def results(self) -> dict[str, Any]:
        """Rows per (journey or template, step, partner), per message and per journey, and the
        brand's totals (the sum of the partners' rows, so the two always agree)."""
        rows = await self.store.engagement_counts(None)
        by_message: dict[tuple[str, str, int], dict[str, Any]] = {}
        by_partner: dict[str, dict[str, Any]] = {}
        total = dict.fromkeys(COUNT_KEYS, 0)
        for r in rows:
            key = (r["kind"], r["subject"], r["step"])
            m = by_message.setdefault(key, {"kind": r["kind"], "subject": r["subject"], "step": r["step"],
                                            "template": r["template_id"], **dict.fromkeys(COUNT_KEYS, 0)})
            p = by_partner.setdefault(r["partner_id"], {"partner_id": r["partner_id"], "partner_name": r["partner_name"],
                                                        **dict.fromkeys(COUNT_KEYS, 0)})
            for k in COUNT_KEYS:
                m[k] += r[k]
                p[k] += r[k]
                total[k] += r[k]
        return {"rows": rows, "messages": list(by_message.values()), "partners": list(by_partner.values()),
                "total": total, "links": await self.store.click_links(None)}


def rates(row: Mapping[str, Any]) -> dict[str, float]:
    sent = row.get("sent", 0) + row.get("bounced", 0)
    return {"open_rate": row.get("opened", 0) / sent if sent else 0.0,
            "click_rate": row.get("clicked", 0) / sent if sent else 0.0}
