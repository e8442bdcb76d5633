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
from engine.flows.health import WriteGate
from engine.flows.stats import LiveStats
from engine.logic import events as spec
from engine.logic.memory import describe


@dataclass(frozen=True, slots=True)
class Unavailable:
    """The broker did not take the events."""

    error: str
    retry_after_s: int


class Ingest:
    def __init__(self, log: EventLog, live: LiveStats, retry_after_s: int,
                 gate: WriteGate | None = None) -> None:
        self.log = log
        self.live = live
        self.retry_after_s = retry_after_s
        self.gate = gate

    def screen(self, raw: Sequence[Any], now_ms: int) -> tuple[list[spec.Event], list[dict[str, Any]]]:
        """Validate each event on its own and count the rejections: (good events, rejections)."""
        good, bad = spec.validate(raw, now_ms)
        if bad:
            for r in bad:
                metrics.EVENTS_REJECTED.labels(metrics.field_label(r.field)).inc()
            self.live.add("rejected", len(bad))
        return good, [r.as_dict() for r in bad]

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
