"""Segment's HTTP Tracking API as a use-case: a decoded request body -> Kairos events in the
log, and the answer the Segment clients expect.

The mapping is pure (engine/logic/segment.py, the table in docs/segment.md); this flow adds
what needs the engine: the trust rules of engine/logic/trust.py applied message by message
(a `userId` under a public key needs its `user_hash`, alias included; `u:` visitors are the
engine's; reactions must name decisions the engine issued), the per-visitor rate of public
keys, the append through the ingest flow (acknowledged by the broker, or nothing is), and
the decisions a `page` / `screen` asks for in `context.kairos.zones`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from engine import metrics
from engine.flows.access import Access
from engine.flows.decide import Decider
from engine.flows.ingest import Ingest
from engine.flows.stats import LiveStats
from engine.logic import events as spec
from engine.logic import segment as seg
from engine.logic import trust
from engine.logic.access import Principal, Scope


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to answer: `status`, the JSON `body`, and `retry_after_s` for a 429 or 503."""

    status: int
    body: dict[str, Any]
    retry_after_s: int | None = None


class Tracking:
    def __init__(self, ingest: Ingest, decider: Decider, live: LiveStats, access: Access) -> None:
        self.ingest = ingest
        self.decider = decider
        self.live = live
        self.access = access

    def screen(self, parsed: seg.Parsed, who: Principal) -> seg.Parsed:
        """`parsed` with the messages `who` may not send moved to the rejections (in
        Segment's field names), and the events of the others as they will be logged."""
        msgs = parsed.messages
        good, refused = trust.screen([seg.with_user_hash(m) for m in msgs], [m.index for m in msgs],
                                     who, self.access.identity_ok, self.access.decision_ok)
        by_index = {m.index: m for m in msgs}
        refusals = {r.index: seg.trust_refusal(by_index[r.index], r.field, r.reason) for r in refused}
        kept = seg.refuse(parsed, refusals)
        return replace(kept, messages=[replace(m, event=ev) for m, ev in
                                       zip(kept.messages, good, strict=True)])

    async def take(self, doc: Any, endpoint: str, who: Principal, now_ms: int,
                   started: float) -> Outcome:
        """One request's decoded body (raises `spec.BodyError` for a body that is unusable
        as a whole): parsed, screened, appended; decisions when a message asks for them."""
        parsed = self.screen(seg.parse(doc, endpoint=endpoint, now_ms=now_ms), who)
        self._count(parsed.rejected)
        events = [m.event for m in parsed.messages]
        if (wait := self.ingest.visitor_rate(who, events)) is not None:
            reason = "too many requests for this visitor; retry later"
            return Outcome(429, {"success": False, "error": f"rate {reason}", "field": "rate",
                                 "reason": reason}, max(1, math.ceil(wait)))
        status, body = seg.answer(parsed)
        if not events:
            return Outcome(status, body)
        if (refused := await self.ingest.append(events)) is not None:
            return Outcome(503, {"success": False, "error": refused.error, "accepted": 0},
                           refused.retry_after_s)
        asking = [m for m in parsed.messages if m.zones]
        if asking:
            body.update(await self._decide(asking[-1], events, who, now_ms, started))
        return Outcome(status, body)

    async def _decide(self, msg: seg.Message, events: Sequence[spec.Event], who: Principal,
                      now_ms: int, started: float) -> dict[str, Any]:
        """The decisions for the zones of `msg` (the batch's last message asking for them),
        for its visitor, with the request's events already applied."""
        if not who.has(Scope.DECIDE):
            return {"decisions": [], "decide_error": f"context.kairos.zones needs the scope {Scope.DECIDE}"}
        ev = msg.event
        context = dict(ev.context or {})
        if ev.channel and "channel" not in context:
            context["channel"] = ev.channel
        out, degraded = await self.decider.decide(ev.visitor_id, ev.user_id, context, msg.zones,
                                                  events, now_ms, started)
        body: dict[str, Any] = {"decisions": out}
        if degraded:
            body["degraded"] = degraded
        return body

    def _count(self, rejected: Sequence[spec.Rejection]) -> None:
        if not rejected:
            return
        for r in rejected:
            metrics.EVENTS_REJECTED.labels(metrics.field_label(r.field)).inc()
        self.live.add("rejected", len(rejected))
