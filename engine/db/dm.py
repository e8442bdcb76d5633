"""The distributed-marketing store in domain words, on PostgreSQL (SQLAlchemy Core, async).

Every partner-side method takes the partner id first and filters by it, so another
partner's id answers None (the routes answer 404) and a list never holds another partner's
rows; ids are random. Brand-side methods (`brand_…`, releases, approvals, results) see every
partner. The mailer's methods (`claim`, `finish`, `due_…`) work on send ids it was handed.

Exactly once: a send is one row (`UNIQUE(message_id, contact_id)`); the mailer claims it with
a compare-and-set (`state` queued/retry and due, or a claim whose lease ran out) and finishes
it with another (only the claimer, only while claimed). A send whose claimer died after the
SMTP server took the message is claimed again when its lease ends and goes out again with the
same Message-ID (derived from the send id), which receivers collapse (the local outbox too).
"""

from __future__ import annotations

import secrets as _secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.db import schema as t
from engine.logic.access import make_id
from engine.logic.dm.sending import new_send_id

# every finished send of a batch in one compare-and-set (the rows as one JSON parameter)
_FINISH_MANY = text("""
UPDATE dm_sends AS s SET
  state = v.state, updated_at = v.at, last_code = v.code, last_reply = v.reply,
  claimed_by = NULL, claim_until = NULL,
  sent_at = CASE WHEN v.state = 'sent' THEN v.at ELSE s.sent_at END,
  links = COALESCE(v.links, s.links), next_at = COALESCE(v.next_at, s.next_at),
  attempts = COALESCE(v.attempts, s.attempts)
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(id text, state text, at timestamptz, code int,
                                                    reply text, links jsonb, next_at timestamptz, attempts int)
WHERE s.id = v.id AND s.state = 'claimed' AND s.claimed_by = :worker
RETURNING s.id""")

MAX_LIST = 500


def _claim_statements() -> tuple[Any, Any]:
    """`DmStore.claim`'s two statements, built once (building them took longer than running
    them): the compare-and-set, and the claimed sends with what composing them needs."""
    s, msg, cm, ct = t.dm_sends, t.dm_messages, t.dm_campaigns, t.dm_contacts
    now = bindparam("now_")
    cas = (update(s).where(and_(s.c.id.in_(bindparam("ids", expanding=True)), or_(
        s.c.state == "queued", and_(s.c.state == "retry", s.c.next_at <= now),
        and_(s.c.state == "claimed", s.c.claim_until < now))))
        .values(state="claimed", claimed_by=bindparam("worker_"), claim_until=bindparam("until_"), updated_at=now)
        .returning(s.c.id))
    rows = (select(s, msg.c.step, msg.c.template_id, msg.c.template_version,
                   cm.c["values"].label("campaign_values"), cm.c.kind.label("campaign_kind"),
                   cm.c.subject.label("campaign_subject"), cm.c.version.label("campaign_version"),
                   ct.c.first_name, ct.c.last_name, ct.c.attributes, ct.c.visitor_id, ct.c.user_id,
                   t.dm_campaign_members.c["values"].label("member_values"),
                   t.partners.c.name.label("partner_name"),
                   t.dm_suppressions.c.email_key.is_not(None).label("suppressed"))
            .join(msg, msg.c.id == s.c.message_id).join(cm, cm.c.id == s.c.campaign_id)
            .join(t.partners, t.partners.c.id == s.c.partner_id)
            .outerjoin(ct, ct.c.id == s.c.contact_id)
            .outerjoin(t.dm_suppressions, t.dm_suppressions.c.email_key == s.c.email_key)
            .outerjoin(t.dm_campaign_members, and_(t.dm_campaign_members.c.campaign_id == s.c.campaign_id,
                                                   t.dm_campaign_members.c.contact_id == s.c.contact_id))
            .where(s.c.id.in_(bindparam("ids", expanding=True))))
    return cas, rows


_CLAIM, _CLAIMED = _claim_statements()


def new_id(prefix: str) -> str:
    return make_id(prefix, _secrets.token_bytes(16))


def send_id() -> str:
    return new_send_id(_secrets.token_bytes(16))


def _row(row: Any) -> dict[str, Any]:
    return {str(k): v for k, v in row._mapping.items()}  # plain str keys (JSON answers)


def _d(row: Any) -> dict[str, Any] | None:
    return _row(row) if row is not None else None


def _ds(rows: Iterable[Any]) -> list[dict[str, Any]]:
    return [_row(r) for r in rows]


class DuplicateContact(ValueError):
    """The partner has a contact with this e-mail address already."""


class DmStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # -- versions (what a campaign pins) --------------------------------------------------------
    async def save_template_version(self, version: str, template_id: str,
                                    document: Mapping[str, Any], brand_document: Mapping[str, Any]) -> None:
        async with self.engine.begin() as c:
            await c.execute(pg_insert(t.dm_template_versions).values(
                version=version, template_id=template_id, document=dict(document),
                brand_document=dict(brand_document)).on_conflict_do_nothing())

    async def save_journey_version(self, version: str, journey_id: str, document: Mapping[str, Any],
                                   templates: Sequence[str]) -> None:
        async with self.engine.begin() as c:
            await c.execute(pg_insert(t.dm_journey_versions).values(
                version=version, journey_id=journey_id, document=dict(document),
                templates=list(templates)).on_conflict_do_nothing())

    async def template_version(self, version: str) -> dict[str, Any] | None:
        async with self.engine.connect() as c:
            return _d((await c.execute(select(t.dm_template_versions).where(
                t.dm_template_versions.c.version == version))).one_or_none())

    async def journey_version(self, version: str) -> dict[str, Any] | None:
        async with self.engine.connect() as c:
            return _d((await c.execute(select(t.dm_journey_versions).where(
                t.dm_journey_versions.c.version == version))).one_or_none())

    # -- partners and groups (brand) ------------------------------------------------------------
    async def partners(self) -> list[dict[str, Any]]:
        g = t.dm_group_members
        q = (select(t.partners.c.id, t.partners.c.name, t.partners.c.created_at,
                    func.coalesce(func.array_agg(t.dm_partner_groups.c.name).filter(
                        t.dm_partner_groups.c.name.is_not(None)), text("'{}'")).label("groups"))
             .select_from(t.partners.outerjoin(g, g.c.partner_id == t.partners.c.id)
                          .outerjoin(t.dm_partner_groups, t.dm_partner_groups.c.id == g.c.group_id))
             .group_by(t.partners.c.id).order_by(t.partners.c.name))
        async with self.engine.connect() as c:
            return _ds((await c.execute(q)).all())

    async def partner(self, partner_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as c:
            return _d((await c.execute(select(t.partners).where(t.partners.c.id == partner_id))).one_or_none())

    async def create_group(self, name: str) -> str:
        gid = new_id("gr")
        async with self.engine.begin() as c:
            await c.execute(insert(t.dm_partner_groups).values(id=gid, name=name))
        return gid

    async def group_by_name(self, name: str) -> dict[str, Any] | None:
        async with self.engine.connect() as c:
            return _d((await c.execute(select(t.dm_partner_groups).where(
                t.dm_partner_groups.c.name == name))).one_or_none())

    async def groups(self) -> list[dict[str, Any]]:
        g = t.dm_group_members
        q = (select(t.dm_partner_groups.c.id, t.dm_partner_groups.c.name,
                    func.count(g.c.partner_id).label("partners"))
             .select_from(t.dm_partner_groups.outerjoin(g, g.c.group_id == t.dm_partner_groups.c.id))
             .group_by(t.dm_partner_groups.c.id).order_by(t.dm_partner_groups.c.name))
        async with self.engine.connect() as c:
            return _ds((await c.execute(q)).all())

    async def add_to_group(self, group_id: str, partner_id: str) -> None:
        async with self.engine.begin() as c:
            await c.execute(pg_insert(t.dm_group_members).values(
                group_id=group_id, partner_id=partner_id).on_conflict_do_nothing())

    # -- releases -------------------------------------------------------------------------------
    async def release(self, kind: str, subject: str, *, by: str, group_id: str | None = None,
                      partner_id: str | None = None) -> str:
        rid = new_id("rl")
        async with self.engine.begin() as c:
            await c.execute(insert(t.dm_releases).values(
                id=rid, kind=kind, subject=subject, group_id=group_id, partner_id=partner_id,
                released_by=by))
        return rid

    async def retire(self, release_id: str) -> bool:
        async with self.engine.begin() as c:
            res = await c.execute(update(t.dm_releases).where(and_(
                t.dm_releases.c.id == release_id, t.dm_releases.c.retired_at.is_(None)))
                .values(retired_at=func.now()))
        return bool(res.rowcount)

    async def releases(self) -> list[dict[str, Any]]:
        r = t.dm_releases
        q = (select(r, t.dm_partner_groups.c.name.label("group_name"), t.partners.c.name.label("partner_name"))
             .select_from(r.outerjoin(t.dm_partner_groups, t.dm_partner_groups.c.id == r.c.group_id)
                          .outerjoin(t.partners, t.partners.c.id == r.c.partner_id))
             .order_by(r.c.released_at.desc()))
        async with self.engine.connect() as c:
            return _ds((await c.execute(q)).all())

    def _released_q(self, partner_id: str) -> Any:
        r = t.dm_releases
        mine = select(t.dm_group_members.c.group_id).where(t.dm_group_members.c.partner_id == partner_id)
        return (select(r.c.kind, r.c.subject).distinct()
                .where(and_(r.c.retired_at.is_(None),
                            or_(r.c.partner_id == partner_id, r.c.group_id.in_(mine)))))

    async def released_to(self, partner_id: str) -> set[tuple[str, str]]:
        """{(kind, subject)} released to the partner (directly or through a group), not retired."""
        async with self.engine.connect() as c:
            return {(row.kind, row.subject) for row in (await c.execute(self._released_q(partner_id))).all()}

    # -- contacts (partner) -----------------------------------------------------------------------
    async def add_contacts(self, partner_id: str, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Insert contacts (email, email_key, first_name, last_name, attributes, visitor_id,
        user_id); returns the ones added (an address the partner has already is skipped)."""
        if not rows:
            return []
        values = [{"id": new_id("ct"), "partner_id": partner_id, **dict(r)} for r in rows]
        async with self.engine.begin() as c:
            got = (await c.execute(pg_insert(t.dm_contacts).values(values).on_conflict_do_nothing(
                constraint="dm_contacts_partner_email").returning(*t.dm_contacts.c))).all()
        return _ds(got)

    async def contacts(self, partner_id: str, *, search: str = "", limit: int = 100,
                       offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        c_ = t.dm_contacts
        where = [c_.c.partner_id == partner_id]
        if search:
            like = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append(or_(c_.c.email_key.ilike(like), c_.c.first_name.ilike(like),
                             c_.c.last_name.ilike(like)))
        q = (select(c_).where(and_(*where)).order_by(c_.c.created_at.desc(), c_.c.id)
             .limit(min(max(limit, 1), MAX_LIST)).offset(max(offset, 0)))
        n = select(func.count()).select_from(c_).where(and_(*where))
        async with self.engine.connect() as c:
            return _ds((await c.execute(q)).all()), int((await c.execute(n)).scalar_one())

    async def contact(self, partner_id: str, contact_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as c:
            return _d((await c.execute(select(t.dm_contacts).where(and_(
                t.dm_contacts.c.partner_id == partner_id, t.dm_contacts.c.id == contact_id)))).one_or_none())

    async def contacts_by_ids(self, partner_id: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        async with self.engine.connect() as c:
            return _ds((await c.execute(select(t.dm_contacts).where(and_(
                t.dm_contacts.c.partner_id == partner_id, t.dm_contacts.c.id.in_(list(ids)))))).all())

    async def brand_contacts(self, *, search: str = "", limit: int = 100) -> list[dict[str, Any]]:
        """Every partner's contacts with their addresses (scope dm:contacts only)."""
        c_ = t.dm_contacts
        q = select(c_, t.partners.c.name.label("partner_name")).join(
            t.partners, t.partners.c.id == c_.c.partner_id)
        if search:
            q = q.where(c_.c.email_key.ilike("%" + search.replace("%", "\\%") + "%"))
        async with self.engine.connect() as c:
            return _ds((await c.execute(q.order_by(c_.c.created_at.desc()).limit(min(limit, MAX_LIST)))).all())

    async def contacts_of_profile(self, visitor_id: str | None, user_id: str | None) -> list[dict[str, Any]]:
        """The contacts (of any partner) linked to a visitor or user (journey exit rules)."""
        conds = []
        if visitor_id:
            conds += [t.dm_contacts.c.visitor_id == visitor_id]
            if visitor_id.startswith("c-"):
                conds += [t.dm_contacts.c.id == visitor_id[2:]]
        if user_id:
            conds += [t.dm_contacts.c.user_id == user_id]
        if not conds:
            return []
        async with self.engine.connect() as c:
            return _ds((await c.execute(select(t.dm_contacts).where(or_(*conds)))).all())

    # -- campaigns (partner) ----------------------------------------------------------------------
    async def create_campaign(self, partner_id: str, *, kind: str, subject: str, name: str,
                              version: str, values: Mapping[str, Any], approval: str,
                              created_by: str, idempotency_key: str | None = None,
                              test: bool = False) -> tuple[dict[str, Any], bool]:
        """(the campaign, made now). A repeated idempotency key answers the first campaign."""
        cm = t.dm_campaigns
        row = {"id": new_id("cp"), "partner_id": partner_id, "kind": kind, "subject": subject,
               "name": name, "version": version, "values": dict(values), "approval": approval,
               "created_by": created_by, "idempotency_key": idempotency_key, "test": test}
        async with self.engine.begin() as c:
            got = (await c.execute(pg_insert(cm).values(row).on_conflict_do_nothing(
                constraint="dm_campaigns_idempotency").returning(*cm.c))).one_or_none()
            if got is not None:
                return _row(got), True
            old = (await c.execute(select(cm).where(and_(
                cm.c.partner_id == partner_id, cm.c.idempotency_key == idempotency_key)))).one()
        return _row(old), False

    async def campaign(self, partner_id: str, campaign_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as c:
            return _d((await c.execute(select(t.dm_campaigns).where(and_(
                t.dm_campaigns.c.partner_id == partner_id, t.dm_campaigns.c.id == campaign_id)))).one_or_none())

    async def campaigns(self, partner_id: str, limit: int = 200) -> list[dict[str, Any]]:
        cm = t.dm_campaigns
        m = t.dm_campaign_members
        q = (select(cm, select(func.count()).where(m.c.campaign_id == cm.c.id).scalar_subquery().label("members"))
             .where(cm.c.partner_id == partner_id).order_by(cm.c.created_at.desc()).limit(limit))
        async with self.engine.connect() as c:
            return _ds((await c.execute(q)).all())

    async def set_values(self, partner_id: str, campaign_id: str, values: Mapping[str, Any]) -> bool:
        cm = t.dm_campaigns
        async with self.engine.begin() as c:
            res = await c.execute(update(cm).where(and_(cm.c.partner_id == partner_id, cm.c.id == campaign_id))
                                  .values(values=dict(values), updated_at=func.now()))
        return bool(res.rowcount)

    async def launch(self, partner_id: str, campaign_id: str) -> bool:
        """Mark the campaign sent / enrolled, once (False: it was already)."""
        cm = t.dm_campaigns
        async with self.engine.begin() as c:
            res = await c.execute(update(cm).where(and_(
                cm.c.partner_id == partner_id, cm.c.id == campaign_id, cm.c.launched_at.is_(None)))
                .values(launched_at=func.now(), updated_at=func.now()))
        return bool(res.rowcount)

    async def add_members(self, partner_id: str, campaign_id: str, contact_ids: Sequence[str]) -> int:
        """Add the partner's own contacts (others' ids are ignored: the flow checks first)."""
        if not contact_ids:
            return 0
        own = select(literal(campaign_id), t.dm_contacts.c.id, literal(partner_id)).where(and_(
            t.dm_contacts.c.partner_id == partner_id, t.dm_contacts.c.id.in_(list(contact_ids))))
        stmt = pg_insert(t.dm_campaign_members).from_select(
            ["campaign_id", "contact_id", "partner_id"], own).on_conflict_do_nothing()
        async with self.engine.begin() as c:
            res = await c.execute(stmt)
        return int(res.rowcount or 0)

    async def remove_member(self, partner_id: str, campaign_id: str, contact_id: str) -> bool:
        m = t.dm_campaign_members
        async with self.engine.begin() as c:
            res = await c.execute(delete(m).where(and_(m.c.partner_id == partner_id, m.c.campaign_id == campaign_id,
                                                       m.c.contact_id == contact_id, m.c.status == "pending")))
        return bool(res.rowcount)

    async def set_member_values(self, partner_id: str, campaign_id: str, contact_id: str,
                                values: Mapping[str, Any]) -> bool:
        m = t.dm_campaign_members
        async with self.engine.begin() as c:
            res = await c.execute(update(m).where(and_(
                m.c.partner_id == partner_id, m.c.campaign_id == campaign_id, m.c.contact_id == contact_id))
                .values(values=dict(values), updated_at=func.now()))
        return bool(res.rowcount)

    async def members(self, partner_id: str, campaign_id: str) -> list[dict[str, Any]]:
        m, c_ = t.dm_campaign_members, t.dm_contacts
        q = (select(m, c_.c.email, c_.c.first_name, c_.c.last_name)
             .join(c_, c_.c.id == m.c.contact_id)
             .where(and_(m.c.partner_id == partner_id, m.c.campaign_id == campaign_id))
             .order_by(c_.c.email_key))
        async with self.engine.connect() as c:
            return _ds((await c.execute(q)).all())

    async def members_sent(self, partner_id: str, campaign_id: str, now: datetime) -> None:
        """A quick send went out: its members are done (a quick send has one step)."""
        m = t.dm_campaign_members
        async with self.engine.begin() as c:
            await c.execute(update(m).where(and_(m.c.partner_id == partner_id, m.c.campaign_id == campaign_id,
                                                 m.c.status == "pending"))
                            .values(status="done", step=1, enrolled_at=now, updated_at=now))

    async def enrol(self, partner_id: str, campaign_id: str, now: datetime) -> int:
        m = t.dm_campaign_members
        async with self.engine.begin() as c:
            res = await c.execute(update(m).where(and_(
                m.c.partner_id == partner_id, m.c.campaign_id == campaign_id, m.c.status == "pending"))
                .values(status="active", step=0, due_at=now, enrolled_at=now, updated_at=now))
        return int(res.rowcount or 0)

    # -- journey members (the mailer) ----------------------------------------------------------
    async def due_members(self, now: datetime, limit: int = 500,
                          stale: timedelta = timedelta(minutes=1)) -> list[dict[str, Any]]:
        """Active members with a step due, not yet handed to a send (or handed longer than
        `stale` ago: the mailer may have died in between; making the send again is a no-op
        when it exists); marked in flight."""
        m = t.dm_campaign_members
        pick = and_(m.c.status == "active", m.c.due_at <= now,
                    or_(m.c.in_flight.is_(False), m.c.updated_at < now - stale))
        due = (select(m.c.campaign_id, m.c.contact_id).where(pick)
               .order_by(m.c.due_at).limit(limit).with_for_update(skip_locked=True))
        async with self.engine.begin() as c:
            keys = (await c.execute(due)).all()
            if not keys:
                return []
            rows = (await c.execute(update(m).where(and_(
                m.c.campaign_id.in_([k.campaign_id for k in keys]),
                m.c.contact_id.in_([k.contact_id for k in keys]),
                pick)).values(in_flight=True, updated_at=now).returning(*m.c))).all()
        return _ds(rows)

    async def save_member(self, campaign_id: str, contact_id: str, *, status: str, step: int,
                          due_at: datetime | None, exit_reason: str | None, sent: Sequence[str],
                          now: datetime, in_flight: bool = False) -> None:
        m = t.dm_campaign_members
        async with self.engine.begin() as c:
            await c.execute(update(m).where(and_(m.c.campaign_id == campaign_id, m.c.contact_id == contact_id))
                            .values(status=status, step=step, due_at=due_at, exit_reason=exit_reason,
                                    sent=list(sent), in_flight=in_flight, updated_at=now))

    async def member(self, campaign_id: str, contact_id: str) -> dict[str, Any] | None:
        m = t.dm_campaign_members
        async with self.engine.connect() as c:
            return _d((await c.execute(select(m).where(and_(
                m.c.campaign_id == campaign_id, m.c.contact_id == contact_id)))).one_or_none())

    async def active_members_of(self, contact_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Active journey members of these contacts, with the campaign's pinned version."""
        if not contact_ids:
            return []
        m, cm = t.dm_campaign_members, t.dm_campaigns
        q = (select(m, cm.c.version, cm.c.subject).join(cm, cm.c.id == m.c.campaign_id)
             .where(and_(m.c.contact_id.in_(list(contact_ids)), m.c.status == "active", cm.c.kind == "journey")))
        async with self.engine.connect() as c:
            return _ds((await c.execute(q)).all())

    async def members_by_email(self, email_key: str) -> list[dict[str, Any]]:
        """Active journey members, of any partner, with this address (unsubscribe, bounce)."""
        m, c_ = t.dm_campaign_members, t.dm_contacts
        q = (select(m).join(c_, c_.c.id == m.c.contact_id)
             .where(and_(c_.c.email_key == email_key, m.c.status.in_(["active", "pending"]))))
        async with self.engine.connect() as c:
            return _ds((await c.execute(q)).all())

    # -- approvals ----------------------------------------------------------------------------------
    async def add_approval(self, partner_id: str, row: Mapping[str, Any]) -> None:
        async with self.engine.begin() as c:
            await c.execute(insert(t.dm_approvals).values(partner_id=partner_id, **dict(row)))

    async def latest_approval(self, partner_id: str, campaign_id: str) -> dict[str, Any] | None:
        a = t.dm_approvals
        async with self.engine.connect() as c:
            return _d((await c.execute(select(a).where(and_(a.c.partner_id == partner_id, a.c.campaign_id == campaign_id))
                                       .order_by(a.c.submitted_at.desc()).limit(1))).one_or_none())

    async def supersede(self, partner_id: str, campaign_id: str, now: datetime) -> int:
        a = t.dm_approvals
        async with self.engine.begin() as c:
            res = await c.execute(update(a).where(and_(
                a.c.partner_id == partner_id, a.c.campaign_id == campaign_id,
                a.c.state.in_(["pending", "approved"]))).values(state="superseded", decided_at=now))
        return int(res.rowcount or 0)

    async def brand_approvals(self, state: str | None = "pending", limit: int = 200) -> list[dict[str, Any]]:
        a, cm = t.dm_approvals, t.dm_campaigns
        q = (select(a, cm.c.kind, cm.c.subject, cm.c.name, t.partners.c.name.label("partner_name"))
             .join(cm, cm.c.id == a.c.campaign_id).join(t.partners, t.partners.c.id == a.c.partner_id)
             .order_by(a.c.submitted_at.desc()).limit(limit))
        if state is not None:
            q = q.where(a.c.state == state)
        async with self.engine.connect() as c:
            return _ds((await c.execute(q)).all())

    async def brand_approval(self, approval_id: str) -> dict[str, Any] | None:
        a = t.dm_approvals
        async with self.engine.connect() as c:
            return _d((await c.execute(select(a).where(a.c.id == approval_id))).one_or_none())

    async def decide(self, approval_id: str, state: str, by: str, reason: str | None, now: datetime) -> bool:
        """Compare-and-set from pending (False: decided already, or superseded meanwhile)."""
        a = t.dm_approvals
        async with self.engine.begin() as c:
            res = await c.execute(update(a).where(and_(a.c.id == approval_id, a.c.state == "pending"))
                                  .values(state=state, decided_by=by, decided_at=now, reason=reason))
        return bool(res.rowcount)

    # -- messages and sends ---------------------------------------------------------------------------
    async def message(self, partner_id: str, campaign_id: str, step: int, template_id: str,
                      version: str) -> str:
        """The message of (campaign, step), made once."""
        msg = t.dm_messages
        async with self.engine.begin() as c:
            await c.execute(pg_insert(msg).values(
                id=new_id("ms"), campaign_id=campaign_id, partner_id=partner_id, step=step,
                template_id=template_id, template_version=version).on_conflict_do_nothing(
                constraint="dm_messages_campaign_step"))
            return str((await c.execute(select(msg.c.id).where(and_(
                msg.c.campaign_id == campaign_id, msg.c.step == step)))).scalar_one())

    async def add_sends(self, partner_id: str, campaign_id: str, message_id: str,
                        recipients: Sequence[Mapping[str, Any]], *, test: bool = False) -> list[dict[str, Any]]:
        """One send per (message, contact): recipients are {contact_id, to_email, email_key,
        state}; returns the sends made now (a repeat makes none)."""
        if not recipients:
            return []
        rows = [{"id": send_id(), "message_id": message_id, "campaign_id": campaign_id,
                 "partner_id": partner_id, "test": test, **dict(r)} for r in recipients]
        s = t.dm_sends
        async with self.engine.begin() as c:
            got = (await c.execute(pg_insert(s).values(rows).on_conflict_do_nothing(
                constraint="dm_sends_message_contact").returning(s.c.id, s.c.partner_id, s.c.state,
                                                                 s.c.contact_id))).all()
        return _ds(got)

    async def due_sends(self, now: datetime, *, limit: int = 1000, queued_older_than: timedelta | None = timedelta(0)
                        ) -> list[dict[str, Any]]:
        """Sends the mailer should take: retries that are due, queued ones whose record may
        have been lost (older than `queued_older_than`; None: not those), and claims whose
        lease ran out."""
        s = t.dm_sends
        due = [and_(s.c.state == "retry", s.c.next_at <= now), and_(s.c.state == "claimed", s.c.claim_until < now)]
        if queued_older_than is not None:
            due.append(and_(s.c.state == "queued", s.c.created_at <= now - queued_older_than))
        q = (select(s.c.id, s.c.partner_id).where(or_(*due))
            .order_by(s.c.next_at).limit(limit))
        async with self.engine.connect() as c:
            return _ds((await c.execute(q)).all())

    async def claim(self, ids: Sequence[str], worker: str, lease: timedelta, now: datetime) -> list[dict[str, Any]]:
        """Compare-and-set: the sends among `ids` still queued (or due for a retry, or whose
        claim expired) become claimed by `worker` until now + lease. Returns the claimed
        sends with what composing them needs, and whether the address is suppressed now
        (checked in the same query, right before the send)."""
        if not ids:
            return []
        async with self.engine.begin() as c:
            claimed = (await c.execute(_CLAIM, {"ids": list(ids), "worker_": worker, "until_": now + lease,
                                                "now_": now})).scalars().all()
            if not claimed:
                return []
            return _ds((await c.execute(_CLAIMED, {"ids": list(claimed)})).all())

    async def finish(self, send_id: str, worker: str, *, state: str, now: datetime,
                     code: int | None = None, reply: str = "", links: Sequence[Mapping[str, Any]] | None = None,
                     next_at: datetime | None = None, attempts: int | None = None) -> bool:
        """Compare-and-set from claimed-by-`worker` to the outcome (False: the claim was lost)."""
        done = await self.finish_many(worker, [{"id": send_id, "state": state, "at": now, "code": code,
                                                "reply": reply, "links": links, "next_at": next_at,
                                                "attempts": attempts}])
        return send_id in done

    async def finish_many(self, worker: str, outcomes: Sequence[Mapping[str, Any]]) -> set[str]:
        """`finish` for many sends in one statement: each outcome is ``{"id", "state", "at",
        "code", "reply", "links", "next_at", "attempts"}`` (None: keep the column). Returns the
        ids whose claim was still `worker`'s (those were finished)."""
        if not outcomes:
            return set()
        rows = [{"id": o["id"], "state": o["state"], "at": o["at"].isoformat(), "code": o.get("code"),
                 "reply": (o.get("reply") or "")[:500],
                 "links": list(o["links"]) if o.get("links") is not None else None,
                 "next_at": o["next_at"].isoformat() if o.get("next_at") is not None else None,
                 "attempts": o.get("attempts")} for o in outcomes]
        async with self.engine.begin() as c:
            res = await c.execute(_FINISH_MANY, {"rows": orjson.dumps(rows).decode(), "worker": worker})
            return set(res.scalars().all())

    async def send(self, send_id: str) -> dict[str, Any] | None:
        """One send by id (tracking: the token names it, and was checked)."""
        s, msg, ct = t.dm_sends, t.dm_messages, t.dm_contacts
        q = (select(s, msg.c.step, msg.c.template_id, ct.c.visitor_id, ct.c.user_id)
             .join(msg, msg.c.id == s.c.message_id).outerjoin(ct, ct.c.id == s.c.contact_id)
             .where(s.c.id == send_id))
        async with self.engine.connect() as c:
            return _d((await c.execute(q)).one_or_none())

    async def partner_sends(self, partner_id: str, ids: Sequence[str]) -> set[str]:
        """Which of these send ids are the partner's (the Outbox page)."""
        if not ids:
            return set()
        s = t.dm_sends
        async with self.engine.connect() as c:
            return set((await c.execute(select(s.c.id).where(and_(
                s.c.partner_id == partner_id, s.c.id.in_(list(ids)))))).scalars().all())

    async def sends_of_campaign(self, partner_id: str, campaign_id: str) -> list[dict[str, Any]]:
        s, msg = t.dm_sends, t.dm_messages
        e = t.dm_engagement
        opened = select(func.count()).where(and_(e.c.send_id == s.c.id, e.c.kind == "open")).scalar_subquery()
        clicks = (select(func.coalesce(func.array_agg(e.c.url), text("'{}'"))).where(and_(
            e.c.send_id == s.c.id, e.c.kind == "click")).scalar_subquery())
        q = (select(s.c.id, s.c.contact_id, s.c.to_email, s.c.state, s.c.attempts, s.c.sent_at,
                    s.c.last_code, s.c.last_reply, s.c.test, msg.c.step, msg.c.template_id,
                    opened.label("opened"), clicks.label("clicks"),
                    select(func.count()).where(and_(t.dm_suppressions.c.email_key == s.c.email_key,
                                                    t.dm_suppressions.c.reason == "unsubscribed",
                                                    t.dm_suppressions.c.send_id == s.c.id))
                    .scalar_subquery().label("unsubscribed"))
             .join(msg, msg.c.id == s.c.message_id)
             .where(and_(s.c.partner_id == partner_id, s.c.campaign_id == campaign_id))
             .order_by(msg.c.step, s.c.to_email))
        async with self.engine.connect() as c:
            return _ds((await c.execute(q)).all())

    # -- suppressions and bounces -----------------------------------------------------------------------
    async def suppress(self, email_key: str, reason: str, *, send_id: str | None = None,
                       partner_id: str | None = None) -> bool:
        async with self.engine.begin() as c:
            res = await c.execute(pg_insert(t.dm_suppressions).values(
                email_key=email_key, reason=reason, send_id=send_id, partner_id=partner_id)
                .on_conflict_do_nothing())
        return bool(res.rowcount)

    async def suppressed(self, email_keys: Sequence[str]) -> set[str]:
        if not email_keys:
            return set()
        sp = t.dm_suppressions
        async with self.engine.connect() as c:
            return set((await c.execute(select(sp.c.email_key).where(
                sp.c.email_key.in_(list(email_keys))))).scalars().all())

    async def suppressions(self, limit: int = 500) -> list[dict[str, Any]]:
        sp = t.dm_suppressions
        q = (select(sp, t.partners.c.name.label("partner_name"))
             .outerjoin(t.partners, t.partners.c.id == sp.c.partner_id)
             .order_by(sp.c.created_at.desc()).limit(limit))
        async with self.engine.connect() as c:
            return _ds((await c.execute(q)).all())

    async def add_bounce(self, send: Mapping[str, Any], kind: str, status: str, diagnostic: str) -> None:
        async with self.engine.begin() as c:
            await c.execute(insert(t.dm_bounces).values(
                send_id=send["id"], partner_id=send["partner_id"], email_key=send["email_key"],
                kind=kind, status=status[:32], diagnostic=diagnostic[:500]))

    async def soft_bounce_times(self, email_key: str) -> list[datetime]:
        b = t.dm_bounces
        async with self.engine.connect() as c:
            return list((await c.execute(select(b.c.at).where(and_(
                b.c.email_key == email_key, b.c.kind == "soft")).order_by(b.c.at.desc()).limit(50))).scalars().all())

    async def mark_bounced(self, send_id: str, now: datetime) -> bool:
        s = t.dm_sends
        async with self.engine.begin() as c:
            res = await c.execute(update(s).where(and_(s.c.id == send_id, s.c.state == "sent"))
                                  .values(state="bounced", updated_at=now))
        return bool(res.rowcount)

    # -- engagement ----------------------------------------------------------------------------------------
    async def record_engagement(self, send: Mapping[str, Any], kind: str, link: int, url: str) -> bool:
        """True the first time (send, kind, link) is seen; later ones are the same event."""
        async with self.engine.begin() as c:
            res = await c.execute(pg_insert(t.dm_engagement).values(
                send_id=send["id"], partner_id=send["partner_id"], campaign_id=send["campaign_id"],
                kind=kind, link=link, url=url[:2048]).on_conflict_do_nothing(constraint="dm_engagement_once"))
        return bool(res.rowcount)

    async def record_bot(self, send: Mapping[str, Any], kind: str, link: int, reason: str) -> None:
        async with self.engine.begin() as c:
            await c.execute(insert(t.dm_bot_hits).values(
                send_id=send["id"], partner_id=send["partner_id"], kind=kind, link=link, reason=reason))

    async def honeypot_at(self, send_id: str) -> datetime | None:
        b = t.dm_bot_hits
        async with self.engine.connect() as c:
            return (await c.execute(select(func.max(b.c.at)).where(and_(
                b.c.send_id == send_id, b.c.reason == "honeypot")))).scalar_one()

    async def engagement_counts(self, partner_id: str | None = None) -> list[dict[str, Any]]:
        """Per (campaign kind, subject, step, template, partner): sends by state, opens,
        clicks, unsubscribes, bot hits. `partner_id` None: every partner (the brand)."""
        s, msg, cm, e = t.dm_sends, t.dm_messages, t.dm_campaigns, t.dm_engagement
        opens = select(func.count()).where(and_(e.c.send_id == s.c.id, e.c.kind == "open")).scalar_subquery()
        clicked = (select(func.count()).where(and_(e.c.send_id == s.c.id, e.c.kind == "click"))
                   .scalar_subquery())
        unsub = (select(func.count()).where(and_(t.dm_suppressions.c.send_id == s.c.id,
                                                  t.dm_suppressions.c.reason == "unsubscribed"))
                 .scalar_subquery())
        bots = select(func.count()).where(t.dm_bot_hits.c.send_id == s.c.id).scalar_subquery()

        def n(state: str) -> Any:
            return func.sum(case((s.c.state == state, 1), else_=0))

        q = (select(cm.c.kind, cm.c.subject, msg.c.step, msg.c.template_id, s.c.partner_id,
                    t.partners.c.name.label("partner_name"),
                    func.count().label("sends"), n("sent").label("sent"), n("bounced").label("bounced"),
                    n("suppressed").label("suppressed"), n("failed").label("failed"),
                    func.sum(case((s.c.state.in_(["queued", "claimed", "retry"]), 1), else_=0)).label("pending"),
                    func.sum(case((opens > 0, 1), else_=0)).label("opened"),
                    func.sum(case((clicked > 0, 1), else_=0)).label("clicked"),
                    func.sum(unsub).label("unsubscribed"), func.sum(bots).label("bot_hits"))
             .select_from(s.join(msg, msg.c.id == s.c.message_id).join(cm, cm.c.id == s.c.campaign_id)
                          .join(t.partners, t.partners.c.id == s.c.partner_id))
             .where(s.c.test.is_(False))
             .group_by(cm.c.kind, cm.c.subject, msg.c.step, msg.c.template_id, s.c.partner_id, t.partners.c.name)
             .order_by(cm.c.kind, cm.c.subject, msg.c.step, t.partners.c.name))
        if partner_id is not None:
            q = q.where(s.c.partner_id == partner_id)
        async with self.engine.connect() as c:
            return [{k: (int(v) if k in _COUNTS else v) for k, v in r.items()}
                    for r in _ds((await c.execute(q)).all())]

    async def click_links(self, partner_id: str | None = None) -> list[dict[str, Any]]:
        """Clicks per (campaign kind, subject, step, url), for the results pages."""
        e, s, msg, cm = t.dm_engagement, t.dm_sends, t.dm_messages, t.dm_campaigns
        q = (select(cm.c.subject, msg.c.step, e.c.url, func.count().label("clicks"))
             .select_from(e.join(s, s.c.id == e.c.send_id).join(msg, msg.c.id == s.c.message_id)
                          .join(cm, cm.c.id == s.c.campaign_id))
             .where(e.c.kind == "click").group_by(cm.c.subject, msg.c.step, e.c.url)
             .order_by(func.count().desc()).limit(100))
        if partner_id is not None:
            q = q.where(e.c.partner_id == partner_id)
        async with self.engine.connect() as c:
            return _ds((await c.execute(q)).all())


_COUNTS = {"sends", "sent", "bounced", "suppressed", "failed", "pending", "opened", "clicked",
           "unsubscribed", "bot_hits"}
