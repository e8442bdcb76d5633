"""Stream hook of the decisions capability: segments, caps and campaign counters.

For every event applied to a profile (never a duplicate), `DecisionHook`:

- re-evaluates the configured segments on the changed profile, once per profile per batch
  (its `finish`, after the batch's last event for that profile); memberships are stored in
  `profile.segments`, the live size of each segment moves by `HINCRBY` on
  `keys.SEGMENT_SIZES`, and each join or leave is emitted as an event (`segment_join` /
  `segment_leave`) on the `segments` topic;
- slides the visitor's campaign session (30 min after the last event);
- turns `decision` records (the `decisions` topic, applied through the same `Applier`),
  `impression` / `click` / `dismiss` reactions (their `decision_id` names campaign and arm)
  and goal events (conversions) into `CAMPAIGN` ops. That op is the commit script's
  server-side twin of `engine.logic.decisions.caps`: first exposure, first conversion within the
  goal window and the per-day roll-over depend on stored state, which a pure hook cannot
  read, so they are decided inside the same atomic commit as the profile write — exactly
  once per applied event.

A decision record is bookkeeping, not behaviour: the hook takes it back out of the
profile's `event_count`. The configuration comes from the worker's config hub
(`HookContext.hub`, started and watched by streams/hooks/__init__.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from engine.logic.decisions.caps import SESSION_TTL_MS, day_key
from engine.logic.decisions.config import Campaign, Config
from engine.logic.decisions.state import DECISION_TYPE, parse_decision_id, rule_view
from engine.store import keys
from engine.store.writes import Emit, Op
from models.affinity import AffinityConfig, Profile
from streams.plan import Hook, HookContext

log = logging.getLogger("kairos.worker.decisions")

REACTIONS = frozenset({"impression", "click", "dismiss"})
_enc = msgspec.msgpack.Encoder()


def campaign_op(kind: str, campaign: Campaign, arm: str, event: Mapping[str, Any], pid: str,
                state_ttl_ms: int) -> Op:
    """The `CAMPAIGN` op of one event (its id makes every op distinct: never coalesced)."""
    ts_ms = int(event["ts"])
    window = campaign.goal.window_ms if campaign.goal else 0
    return Op("CAMPAIGN", keys.campaign_state(pid), (
        kind, campaign.id, arm, str(ts_ms), day_key(campaign, ts_ms), str(window),
        keys.campaign_stats(campaign.id), keys.campaign_session(pid), str(SESSION_TTL_MS),
        str(state_ttl_ms), str(event["event_id"]),
    ))


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


class DecisionHook:
    """The hook for one loaded configuration (a new one after every reload)."""

    def __init__(self, config: Config, cfg: AffinityConfig, segments_topic: str,
                 state_ttl_ms: int) -> None:
        self.config = config
        self.cfg = cfg
        self.topic = segments_topic
        self.ttl = state_ttl_ms

    def __call__(self, event: Mapping[str, Any], profile: Profile, pid: str) -> Iterable[Op | Emit]:
        out: list[Op | Emit] = [Op("PEXPIRE", keys.campaign_session(pid), (str(SESSION_TTL_MS),))]
        etype = event["type"]
        campaigns = self.config.campaigns
        if etype == DECISION_TYPE:
            profile.event_count = max(0, profile.event_count - 1)
            props = event.get("props") or {}
            campaign = campaigns.get(props.get("campaign"))
            if campaign is not None and isinstance(props.get("arm"), str):
                out.append(campaign_op("decision", campaign, props["arm"], event, pid, self.ttl))
            return out
        if etype in REACTIONS:
            ref = parse_decision_id(event.get("decision_id"))
            campaign = campaigns.get(ref[0]) if ref else None
            if ref is not None and campaign is not None:
                out.append(campaign_op(etype, campaign, ref[1], event, pid, self.ttl))
        for campaign in self.config.campaigns_with_goal(etype):
            out.append(campaign_op("conversion", campaign, "", event, pid, self.ttl))
        return out

    def finish(self, event: Mapping[str, Any], profile: Profile, pid: str) -> Iterable[Op | Emit]:
        """Segments, once per profile per batch, on its state after the batch."""
        if event["type"] == DECISION_TYPE:
            return []
        return self._segments(event, profile, pid, int(event["ts"]))

    def _segments(self, event: Mapping[str, Any], profile: Profile, pid: str,
                  ts: int) -> list[Op | Emit]:
        if not self.config.segments and not profile.segments:
            return []
        view = rule_view(profile, pid, ts, self.cfg)
        context = event.get("context") or {}
        new = self.config.evaluate_segments(view, context, ts)
        old = list(profile.segments)
        if set(new) == set(old):
            return []
        profile.segments = new
        out: list[Op | Emit] = []
        for sid, joined in [(s, True) for s in new if s not in old] + \
                           [(s, False) for s in old if s not in new]:
            out.append(Op("HINCRBY", keys.SEGMENT_SIZES, (sid, "1" if joined else "-1")))
            rec = segment_event(event, pid, sid, joined, ts)
            out.append(Emit(self.topic, event["visitor_id"].encode(), _enc.encode([rec])))
        return out


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
