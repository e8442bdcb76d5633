"""Deciding, made once per API process: `Decider`.

A decision reads everything it needs — the profile (following the visitor's alias), the
visitor's campaign state (caps) and, at most once a second, the campaign counters — in one
Redis round trip (engine/store/decide_read.py), folds the events sent with the call into the
profile in memory, and runs the pure selection (engine.logic.decisions.select) on the compiled
campaigns the `ConfigHub` keeps. The read has a deadline (`decide_deadline_ms`): when Redis is
slow or down the answer is an empty decision list, never an error. Every decision, control
included, is logged as an event of type `decision` on the `decisions` topic
(engine.eventlog.DecisionLog), which the stream counts as an assignment.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from engine.confighub import ConfigHub
from engine.eventlog import DecisionLog
from engine.flows.models import PublishedModels
from engine.logic import events as spec
from engine.logic.decide_request import RequestError, parse_zones
from engine.logic.decisions.config import Config
from engine.logic.decisions.select import select
from engine.logic.decisions.state import cap_states, decision_id, decision_record, rule_view
from engine.store import keys
from engine.store.decide_read import ArmCounters, DecideReader, DecideState
from engine.store.learning import PropensityStore
from models.affinity import AffinityConfig, Profile, apply_event

log = logging.getLogger("kairos.decide")

STATS_TTL_S = 1.0  # campaign counters are re-read at most this often


class _Tokens:
    """The random part of decision ids (10 hex characters, 5 bytes of `os.urandom`), drawn
    from 4 KiB of it at a time: one system call per ~800 decision ids instead of one each.
    A forked child starts a pool of its own (the parent's bytes are never used twice)."""

    SIZE = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._pool, self._at = b"", 0

    def __call__(self) -> str:
        at = self._at
        if at + 5 > len(self._pool):
            self._pool, at = os.urandom(self.SIZE), 0
        self._at = at + 5
        return self._pool[at:at + 5].hex()


_token = _Tokens()


class Decider:
    """The decision service of one API process (made at start-up)."""

    def __init__(self, reader: DecideReader, hub: ConfigHub, records: DecisionLog,
                 cfg: AffinityConfig, deadline_ms: int,
                 clock: Callable[[], float] = time.monotonic,
                 token: Callable[[], str] = _token,
                 sign: Callable[[str], str] = lambda base: base,
                 models: PublishedModels | None = None,
                 propensity: PropensityStore | None = None) -> None:
        self.reader = reader
        self.hub = hub
        self.records = records
        self.cfg = cfg
        self.deadline_s = deadline_ms / 1000.0
        self.clock = clock
        self.token = token  # the random part of decision ids
        self.sign = sign  # appends the engine's MAC (engine.logic.access.signed_decision_id)
        self.models = models  # the learning campaigns' bandits (engine/flows/models.py)
        self.propensity = propensity  # read only when a rule targets a propensity
        self.counters: dict[str, tuple[float, ArmCounters]] = {}
        self._fresh: dict[tuple[str, ...], float] = {}  # candidates -> counters fresh until
        self.failures = 0

    # -- the one round trip -----------------------------------------------------------------
    async def read(self, visitor_id: str, user_id: str | None, campaign_ids: Sequence[str],
                   timeout: float | None = None) -> DecideState:
        now = self.clock()
        key = campaign_ids if isinstance(campaign_ids, tuple) and campaign_ids else None
        if key is not None and now <= self._fresh.get(key, -1e9):
            return await self.reader.read(visitor_id, user_id, (), timeout)
        stale = [c for c in campaign_ids if now - self.counters.get(c, (-1e9, {}))[0] > STATS_TTL_S]
        snap = await self.reader.read(visitor_id, user_id, stale, timeout)
        for cid, arms in snap.counters.items():
            self.counters[cid] = (now, arms)
        if key is not None:  # until when none of these needs reading again
            if len(self._fresh) >= 1024:
                self._fresh.clear()
            self._fresh[key] = min(self.counters.get(c, (-1e9, {}))[0]
                                   for c in campaign_ids) + STATS_TTL_S
        return snap

    # -- deciding ---------------------------------------------------------------------------
    async def decide(self, visitor_id: str, user_id: str | None, context: Mapping[str, Any],
                     zones: Sequence[str], events: Sequence[spec.Event], now_ms: int,
                     started: float) -> tuple[list[dict[str, Any]], str | None]:
        """(decisions as dicts, why they are empty when degraded, else None)."""
        config: Config | None = self.hub.decisions
        if config is None or not zones:
            return [], None if config is not None else "no valid decision configuration"
        candidates = config.candidates(tuple(zones))
        if not candidates:
            return [], None
        remaining = self.deadline_s - (time.perf_counter() - started)
        scores: dict[str, Any] | None = None
        try:
            if config.needs_propensity and self.propensity is not None:
                snap, scores = await asyncio.wait_for(asyncio.gather(
                    self.read(visitor_id, user_id, candidates),
                    self.propensity.get(visitor_id)), max(remaining, 0.001))
            else:
                snap = await self.read(visitor_id, user_id, candidates, max(remaining, 0.001))
        except Exception as exc:  # slow or missing Redis: no personalization, never a 5xx
            self.failures += 1
            if self.failures in (1, 10, 100) or self.failures % 1000 == 0:
                log.warning("decide degraded (%d so far): %s", self.failures,
                            type(exc).__name__ if isinstance(exc, TimeoutError) else exc)
            return [], "state unavailable within the deadline"
        profile = snap.profile or Profile()
        for ev in events:
            if ev.visitor_id == visitor_id:
                apply_event(profile, spec.to_dict(ev), self.cfg)
        assign_pid = keys.user_pid(user_id) if user_id else snap.pid
        view = rule_view(profile, assign_pid, now_ms, self.cfg)
        if scores:
            view["propensity"] = scores
        caps = cap_states(snap.state, snap.session, config, now_ms)
        chosen = select(config, view, context, now_ms, caps, zones,
                        models=self.models.current() if self.models else None, token=self.token)
        out: list[dict[str, Any]] = []
        records: list[dict[str, Any]] = []
        channel = context.get("channel") if isinstance(context.get("channel"), str) else None
        for d in chosen:
            base = decision_id(d.campaign_id, d.arm, d.token or self.token())
            did = self.sign(base)
            body = d.to_dict()
            body["decision_id"] = did
            out.append(body)
            rec = decision_record(d, did, visitor_id, user_id, now_ms, channel)
            rec["event_id"] = base  # the dedupe key stays within the event id's 64 characters
            if d.token is not None and self.models is not None:  # which model version chose
                rec["props"]["model_version"] = self.models.version(d.campaign_id)
            records.append(rec)
        if records:
            self.records.add(visitor_id.encode(), records)
        return out, None

    async def decide_after(self, good: Sequence[spec.Event], zones_param: str, now_ms: int,
                           started: float) -> dict[str, Any]:
        """`POST /v1/events?decide=zone1,zone2`: decisions for the batch's (last) visitor."""
        try:
            zones = parse_zones(zones_param, "decide")
        except RequestError as exc:
            return {"decisions": [], "decide_error": f"{exc.field} {exc.reason}"}
        last = good[-1]
        context = dict(last.context or {})
        if last.channel and "channel" not in context:
            context["channel"] = last.channel
        out, degraded = await self.decide(last.visitor_id, last.user_id, context, zones, good,
                                          now_ms, started)
        body: dict[str, Any] = {"decisions": out}
        if degraded:
            body["degraded"] = degraded
        return body

    async def close(self) -> None:
        await self.records.close()
