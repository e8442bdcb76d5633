"""Ingest: screen a request's events (each on its own) and append the good ones to the log.

`screen` validates and counts the rejections; `append` returns None once the broker has
acknowledged every record, else `Unavailable` (nothing was accepted: the client resends,
deduped by `event_id`), which the HTTP adapters answer with 503 and Retry-After.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine import metrics
from engine.eventlog import EventLog, LogUnavailable, group_by_visitor
from engine.flows.access import Access
from engine.flows.health import WriteGate
from engine.flows.stats import LiveStats
from engine.logic import events as spec
from engine.logic import trust
from engine.logic.access import Principal
from engine.logic.memory import describe


@dataclass(frozen=True, slots=True)
class Unavailable:
    """The broker did not take the events."""

    error: str
    retry_after_s: int


class Ingest:
    def __init__(self, log: EventLog, live: LiveStats, retry_after_s: int,
                 access: Access, gate: WriteGate | None = None) -> None:
        self.log = log
        self.live = live
        self.retry_after_s = retry_after_s
        self.access = access
        self.gate = gate

    def screen(self, raw: Sequence[Any], now_ms: int, who: Principal
               ) -> tuple[list[spec.Event], list[dict[str, Any]]]:
        """Validate each event on its own, then what `who` may claim in it (engine/logic/
        trust.py), and count the rejections: (good events, rejections by index)."""
        valid, bad, indices = spec.validate_indexed(raw, now_ms)
        good, refused = trust.screen(valid, indices, who, self.access.identity_ok,
                                     self.access.decision_ok)
        if refused:
            bad = sorted([*bad, *refused], key=lambda r: r.index)
        if bad:
            for r in bad:
                metrics.EVENTS_REJECTED.labels(metrics.field_label(r.field)).inc()
            self.live.add("rejected", len(bad))
        return good, [r.as_dict() for r in bad]

    def visitor_rate(self, who: Principal, events: Sequence[spec.Event]) -> float | None:
        """Seconds to wait when a public key's visitor is over its rate, else None."""
        if who.kind != "public_key":
            return None
        for vid in dict.fromkeys(e.visitor_id for e in events):
            wait = self.access.rate_visitor(who, vid)
            if wait is not None:
                return wait
        return None

    async def append(self, good: Sequence[spec.Event]) -> Unavailable | None:
        """Append validated events to the log; None once the broker acknowledged them.
        Nothing is appended while Redis is too full for the stream to apply it."""
        if self.gate is not None and self.gate.full:
            metrics.STORE_FULL_REFUSALS.inc()
            state = f" ({describe(self.gate.state)})" if self.gate.state else ""
            return Unavailable(f"the state store is full{state}; retry later", self.retry_after_s)
        start = time.perf_counter()
        try:
            await self.log.append(group_by_visitor(good))
        except LogUnavailable as exc:
            metrics.PRODUCE_FAILURES.inc()
            return Unavailable(f"event log unavailable, retry later ({exc})", self.retry_after_s)
        metrics.PRODUCE.observe(time.perf_counter() - start)
        metrics.EVENTS_ACCEPTED.inc(len(good))
        self.live.add("accepted", len(good))
        return None
