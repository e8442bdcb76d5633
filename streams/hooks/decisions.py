"""Stream hook of the decisions capability: segments, caps and campaign counters.

For every event applied to a profile (never a duplicate), `DecisionHook`:

- re-evaluates the configured segments on the changed profile, once per profile per batch
  (its `finish`, after the batch's last event for that profile); memberships are stored in
  `profile.segments`, the live size of each segment moves in the shared `keys.SEGMENT_SIZES`
  hash, and each join or leave is emitted as an event (`segment_join` / `segment_leave`) on the
  `segments` topic;
- slides the visitor's campaign session (30 min after the last event);
- turns `decision` records (the `decisions` topic, applied through the same `Applier`),
  `impression` / `click` / `dismiss` reactions (their `decision_id` names campaign and arm)
  and goal events (conversions) into changes of the visitor's campaign state and the
  campaign's counters. What changes is decided by engine/logic/decisions/caps.py
  (`reaction_effects`, `conversion_effects`: first exposure, first conversion within the goal
  window, the per-day roll-over) on the visitor's campaign state, which the hook asks to be
  read with the profile (`reads`): the state's new fields are per-visitor ops committed with
  the profile (compare-and-set), the counters `keys.campaign_stats` shared-table increments
  committed with the batch's offset marks — both exactly once per applied event.

A decision record is bookkeeping, not behaviour: the hook takes it back out of the
profile's `event_count`. The configuration comes from the worker's config hub
(`HookContext.hub`, started and watched by streams/hooks/__init__.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from engine.logic.decisions.caps import (
    SESSION_TTL_MS,
    CapState,
    Effects,
    conversion_effects,
    day_key,
    reaction_effects,
)
from engine.logic.decisions.config import Campaign, Config
from engine.logic.decisions.state import DECISION_TYPE, parse_decision_id, rule_view
from engine.store import keys
from engine.store.writes import Emit, Write
from models.affinity import AffinityConfig, Profile
from streams.plan import Hook, HookContext

log = logging.getLogger("kairos.worker.decisions")

REACTIONS = frozenset({"impression", "click", "dismiss"})
_enc = msgspec.msgpack.Encoder()
_STATE_READS = (keys.campaign_state, keys.campaign_session)


def segment_event(event: Mapping[str, Any], pid: str, segment: str, joined: bool,
                  ts_ms: int) -> dict[str, Any]:
    kind = "join" if joined else "leave"
    return {
        "event_id": f"{event['event_id']}:{kind}:{segment}"[:64],
        "type": f"segment_{kind}",
        "visitor_id": event["visitor_id"],
        "ts": ts_ms,
        "props": {"segment": segment, "profile_id": pid, "cause": event["event_id"]},
    }


def _get(h: Mapping[bytes, bytes], name: str) -> str | None:
    v = h.get(name.encode())
    return v.decode() if v is not None else None


def cap_state(campaign: Campaign, state: Mapping[bytes, bytes], session: Mapping[bytes, bytes],
              ts_ms: int) -> CapState:
    """One campaign's `CapState` from the visitor's stored hashes, as of `ts_ms`."""
    c = campaign.id
    at = _get(state, f"{c}:at")
    today = _get(state, f"{c}:today") if _get(state, f"{c}:day") == day_key(campaign, ts_ms) else None
    sess = session.get(c.encode())
    return CapState(today=int(today or 0), session=int(sess or 0),
                    dismissed=f"{c}:dismissed".encode() in state,
                    clicked=f"{c}:clicked".encode() in state,
                    converted=f"{c}:converted".encode() in state,
                    assigned_at=int(at) if at is not None else None,
                    arm=_get(state, f"{c}:arm"))


class DecisionHook:
    """The hook for one loaded configuration (a new one after every reload)."""

    def __init__(self, config: Config, cfg: AffinityConfig, segments_topic: str,
                 state_ttl_ms: int) -> None:
        self.config = config
        self.cfg = cfg
        self.topic = segments_topic
        self.ttl = state_ttl_ms
        self._goals = {c.goal.event for c in config.campaigns.values() if c.goal}

    def reads(self, event: Mapping[str, Any]) -> tuple[Callable[[str], str], ...]:
        etype = event.get("type")
        if etype == DECISION_TYPE or etype in REACTIONS or etype in self._goals:
            return _STATE_READS
        return ()

    def __call__(self, event: Mapping[str, Any], profile: Profile, pid: str, out: Write) -> None:
        if "decisions.session" not in out.scratch:  # the same op for each event: once a batch
            out.scratch["decisions.session"] = True
            out.op("PEXPIRE", keys.campaign_session(pid), SESSION_TTL_MS)
        etype = event["type"]
        campaigns = self.config.campaigns
        ts = int(event["ts"])
        if etype != DECISION_TYPE:
            out.scratch["decisions.last"] = event
        if etype == DECISION_TYPE:
            profile.event_count = max(0, profile.event_count - 1)
            props = event.get("props") or {}
            campaign = campaigns.get(props.get("campaign"))
            if campaign is not None and isinstance(props.get("arm"), str):
                self._apply(out, pid, campaign, ts, lambda st: reaction_effects(
                    campaign, st, "decision", props["arm"], ts))
            return
        if etype in REACTIONS:
            ref = parse_decision_id(event.get("decision_id"))
            campaign = campaigns.get(ref[0]) if ref else None
            if ref is not None and campaign is not None:
                self._apply(out, pid, campaign, ts, lambda st: reaction_effects(
                    campaign, st, etype, ref[1], ts))
        if etype in self._goals:
            for campaign in self.config.campaigns_with_goal(etype):
                self._apply(out, pid, campaign, ts,
                            lambda st, c=campaign: conversion_effects(c, st, etype, ts))

    def _apply(self, out: Write, pid: str, campaign: Campaign, ts: int,
               effects_of: Callable[[CapState], Effects]) -> None:
        """Decide one campaign reaction on the visitor's state as it stands in this batch, and
        turn the effects into per-visitor ops and shared counter increments."""
        kc, kcs = keys.campaign_state(pid), keys.campaign_session(pid)
        state = out.side.setdefault(kc, {})
        session = out.side.setdefault(kcs, {})
        fx = effects_of(cap_state(campaign, state, session, ts))
        if fx.empty:
            return
        c = campaign.id
        changed: list[tuple[str, str]] = []
        if fx.set_assigned is not None:
            changed += [(f"{c}:arm", fx.set_assigned[0]), (f"{c}:at", str(fx.set_assigned[1]))]
        changed += [(f"{c}:{flag}", "1") for flag in sorted(fx.set_flags)]
        if fx.incr_today:
            day = day_key(campaign, ts)
            today = int(_get(state, f"{c}:today") or 0) if _get(state, f"{c}:day") == day else 0
            changed += [(f"{c}:day", day), (f"{c}:today", str(today + fx.incr_today))]
        if changed:
            args: list[str] = []
            for name, value in changed:
                state[name.encode()] = value.encode()
                args += (name, value)
            out.op("HSET", kc, *args)
            out.op("PEXPIRE", kc, self.ttl)
        if fx.incr_session:
            session[c.encode()] = str(int(session.get(c.encode()) or 0) + fx.incr_session).encode()
            out.op("HINCRBY", kcs, c, fx.incr_session)
            out.op("PEXPIRE", kcs, SESSION_TTL_MS)
        if fx.arm is not None:
            for stat, n in fx.stats.items():
                out.tables.hincr(keys.campaign_stats(c), f"{fx.arm}:{stat}", n)

    def finish(self, event: Mapping[str, Any], profile: Profile, pid: str, out: Write) -> None:
        """Segments, once per profile per batch, on its state after the batch's last behaviour
        event (decision records, which share batches with events, change no segment)."""
        got = out.scratch.get("decisions.last")
        if got is None:
            return
        event = got
        if not self.config.segments and not profile.segments:
            return
        ts = int(event["ts"])
        view = rule_view(profile, pid, ts, self.cfg)
        context = event.get("context") or {}
        new = self.config.evaluate_segments(view, context, ts)
        old = list(profile.segments)
        if set(new) == set(old):
            return
        profile.segments = new
        for sid, joined in [(s, True) for s in new if s not in old] + \
                           [(s, False) for s in old if s not in new]:
            out.tables.hincr(keys.SEGMENT_SIZES, sid, 1 if joined else -1)
            rec = segment_event(event, pid, sid, joined, ts)
            out.emit(Emit(self.topic, event["visitor_id"].encode(), _enc.encode([rec])))


def setup(ctx: HookContext) -> Callable[[], list[Hook]]:
    """The hooks getter: a `DecisionHook` for the hub's current configuration."""
    hub, settings = ctx.hub, ctx.settings
    made: dict[str, Any] = {}

    def hooks() -> list[Hook]:
        config = hub.decisions if hub is not None else None
        if config is None:
            return []
        if made.get("config") is not config:
            made["config"] = config
            made["hook"] = DecisionHook(config, settings.affinity, settings.segments_topic,
                                        settings.profile_ttl_ms)
        return [made["hook"]]

    return hooks
