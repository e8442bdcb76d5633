"""Opens, clicks and unsubscribes from the mail, and bounces reported for a send.

A token is checked before anything is read (a tampered one is None: the route answers 404).
A click goes where the send's rendered, pinned content linked (stored with the send), never
where the URL says. Hits that `bot_reason` flags are counted apart and never learned from; a
human open or click is stored once per (send, kind, link) and becomes one event on the
`events` topic (`channel: email`), keyed by the contact's linked visitor, so the profile's
affinities move as for a web visit. An unsubscribe or a hard bounce suppresses the address
brand-wide and ends its journeys; soft bounces suppress after `soft_limit` in `soft_days`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.db.control import ControlPlane
from engine.db.dm import DmStore
from engine.eventlog import EventLog, LogUnavailable, group_by_visitor
from engine.flows.dm.library import Library
from engine.logic import events as spec
from engine.logic.dm import journeys as jr
from engine.logic.dm.sending import (
    CLICK,
    HONEYPOT_LINK,
    OPEN,
    UNSUBSCRIBE,
    BotRules,
    Hit,
    TokenSigner,
    bot_reason,
    engagement_event,
    soft_bounces_suppress,
)
from engine.logic.dm.templates import RenderedLink

log = logging.getLogger("kairos.dm")


def _now() -> datetime:
    return datetime.now(UTC)


def member_of(row: Mapping[str, Any]) -> jr.Member:
    sent = tuple(datetime.fromisoformat(x) for x in row.get("sent") or ())
    return jr.Member(row["contact_id"], row["status"], row["step"], row["due_at"],
                     row["enrolled_at"] or row["updated_at"], row["updated_at"], row["exit_reason"], sent)


async def save_member(store: DmStore, campaign_id: str, m: jr.Member, now: datetime, *,
                      in_flight: bool = False) -> None:
    await store.save_member(campaign_id, m.contact, status=m.status, step=m.step, due_at=m.due_at,
                            exit_reason=m.exit_reason, sent=[x.isoformat() for x in m.sent], now=now,
                            in_flight=in_flight)


async def exit_journeys(store: DmStore, email_key: str, reason: str, now: datetime) -> int:
    """Every active journey member with this address leaves (any partner's: suppression is
    brand-wide)."""
    n = 0
    for row in await store.members_by_email(email_key):
        if row["status"] != "active":
            continue
        m = jr.exit_member(member_of(row), reason, now)
        await save_member(store, row["campaign_id"], m, now)
        n += 1
    return n


class Tracking:
    def __init__(self, store: DmStore, control: ControlPlane, library: Library, signer: TokenSigner,
                 events: EventLog | None, *, bot_rules: BotRules | None = None, soft_limit: int = 3,
                 soft_days: float = 14.0, clock: Callable[[], datetime] = _now) -> None:
        self.store = store
        self.control = control
        self.library = library
        self.signer = signer
        self.events = events
        self.bot_rules = bot_rules or BotRules()
        self.soft_limit = soft_limit
        self.soft_window = timedelta(days=soft_days)
        self.clock = clock

    async def _send(self, token: str, kind: str) -> tuple[dict[str, Any], int | None] | None:
        tok = self.signer.verify(token)
        if tok is None or tok.kind != kind:
            return None
        send = await self.store.send(tok.send_id)
        if send is None:
            return None
        return send, tok.link

    async def _emit(self, event: dict[str, Any]) -> None:
        if self.events is None:
            return
        valid, bad, _ = spec.validate_indexed([event], int(self.clock().timestamp() * 1000))
        if bad or not valid:
            log.warning("engagement event refused by the event spec: %s", bad)
            return
        try:
            await self.events.append(group_by_visitor(valid))
        except LogUnavailable as exc:  # the engagement row stands; only the profile misses it
            log.warning("engagement event not produced: %s", exc)

    async def open(self, token: str, *, method: str, user_agent: str) -> bool:
        """A hit on the open pixel; False for a token that is not ours."""
        got = await self._send(token, OPEN)
        if got is None:
            return False
        send, _ = got
        now = self.clock()
        reason = bot_reason(Hit(OPEN, method, user_agent, now), send["sent_at"], self.bot_rules)
        if reason is not None:
            await self.store.record_bot(send, "open", -1, reason)
            return True
        if await self.store.record_engagement(send, "open", -1, "") and not send["test"]:
            await self._emit(engagement_event(
                OPEN, send_id=send["id"], contact_id=send["contact_id"] or "test", at=now,
                visitor_id=send["visitor_id"], user_id=send["user_id"], template=send["template_id"],
                partner=send["partner_id"], campaign=send["campaign_id"]))
        return True

    async def click(self, token: str, *, method: str, user_agent: str) -> str | None:
        """Where a click goes (None: not our token, or no such link in the send)."""
        got = await self._send(token, CLICK)
        if got is None:
            return None
        send, index = got
        now = self.clock()
        link = next((lk for lk in send["links"] or () if lk.get("index") == index), None)
        honeypot = index == HONEYPOT_LINK
        if link is None and not honeypot:
            return None
        reason = bot_reason(Hit(CLICK, method, user_agent, now, index), send["sent_at"], self.bot_rules,
                            await self.store.honeypot_at(send["id"]))
        target = link["url"] if link else ""
        if reason is not None:
            await self.store.record_bot(send, "click", index if index is not None else -1, reason)
            return target
        assert link is not None and index is not None
        if await self.store.record_engagement(send, "click", index, target) and not send["test"]:
            rl = RenderedLink(index, link.get("kind", "static"), target, link.get("item"))
            await self._emit(engagement_event(
                CLICK, send_id=send["id"], contact_id=send["contact_id"] or "test", at=now,
                visitor_id=send["visitor_id"], user_id=send["user_id"], link=rl,
                template=send["template_id"], partner=send["partner_id"], campaign=send["campaign_id"]))
        return target

    async def unsubscribe_target(self, token: str) -> dict[str, Any] | None:
        got = await self._send(token, UNSUBSCRIBE)
        return got[0] if got else None

    async def unsubscribe(self, token: str, *, ip: str = "") -> dict[str, Any] | None:
        """One-click unsubscribe: the address is suppressed brand-wide; its journeys end."""
        send = await self.unsubscribe_target(token)
        if send is None:
            return None
        now = self.clock()
        if await self.store.suppress(send["email_key"], "unsubscribed", send_id=send["id"],
                                     partner_id=send["partner_id"]):
            exited = await exit_journeys(self.store, send["email_key"], jr.EXIT_UNSUBSCRIBED, now)
            await self.control.audit(f"recipient:{send['id']}", "dm.unsubscribe", send["id"], ip=ip,
                                     partner_id=send["partner_id"], detail={"journeys_left": exited})
        return send

    async def bounce(self, send_id: str, kind: str, status: str = "", diagnostic: str = "") -> bool:
        """A bounce for a send (a DSN to its VERP address, or a 5xx at send time)."""
        send = await self.store.send(send_id)
        if send is None:
            return False
        now = self.clock()
        await self.store.add_bounce(send, kind, status, diagnostic)
        suppress = kind == "hard"
        if kind == "soft":
            suppress = soft_bounces_suppress(await self.store.soft_bounce_times(send["email_key"]), now,
                                             self.soft_limit, self.soft_window)
        if kind == "hard":
            await self.store.mark_bounced(send_id, now)
        if suppress and await self.store.suppress(send["email_key"], "hard_bounce" if kind == "hard" else "soft_bounces",
                                                  send_id=send_id, partner_id=send["partner_id"]):
            await exit_journeys(self.store, send["email_key"], jr.EXIT_BOUNCED, now)
            await self.control.audit("mailer", "dm.suppress", send_id, partner_id=send["partner_id"],
                                     detail={"reason": kind, "status": status})
        return True
