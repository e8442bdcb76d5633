"""Campaign selection: per requested zone, the highest-priority eligible campaign.

Eligibility = active status, schedule, channel, zone, frequency caps, then targeting (with live
segment membership). Ties are broken by campaign id; a campaign fills at most one zone per call.
The control group is decided like any arm: its decision occupies the zone with no content.
A campaign with `slots: N` fills its zone with N decisions (one per slot, distinct variants,
each with its own probability and decision id).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from engine.logic.decisions.assign import Assignment, arm_of, bucket, canonical_visitor_id
from engine.logic.decisions.caps import CapState, cap_reason
from engine.logic.decisions.config import Campaign, Config
from engine.logic.decisions.features import visitor_features
from engine.logic.decisions.policy import new_model, pick
from engine.logic.decisions.rules import Now
from engine.logic.decisions.templates import RenderError, template_vars

CapsInput = Mapping[str, CapState | Mapping[str, Any]]


class Decision(NamedTuple):
    """What to show in one zone; ``content`` is ``None`` for the control group.

    Immutable (a named tuple: made several times per call, ~4x cheaper than a frozen
    dataclass, whose every field is set through ``object.__setattr__``)."""

    zone: str
    campaign_id: str
    campaign_name: str
    variant_id: str | None
    control: bool
    probability: float
    content: dict[str, str] | None
    token: str | None = None  # a learning campaign's random part of the decision id
    policy: str = "fixed"
    slot: int | None = None  # the slot's position when the campaign shows several
    features: Mapping[str, Any] | None = None  # what a contextual policy decided on

    @property
    def arm(self) -> str:
        return "control" if self.control else str(self.variant_id)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "zone": self.zone,
            "campaign": self.campaign_id,
            "campaign_name": self.campaign_name,
            "variant": self.variant_id,
            "control": self.control,
            "probability": self.probability,
            "content": self.content,
        }
        if self.slot is not None:
            out["slot"] = self.slot
        return out


_NO_STATE = CapState()  # a visitor never shown the campaign (frozen: shared)


def _state(caps_state: CapsInput | None, campaign_id: str) -> CapState:
    raw = caps_state.get(campaign_id) if caps_state else None
    if raw is None:
        return _NO_STATE
    return raw if isinstance(raw, CapState) else CapState.from_mapping(raw)


def ineligibility(
    campaign: Campaign,
    profile: Mapping[str, Any],
    context: Mapping[str, Any],
    now: Now,
    state: CapState,
    zone: str | None = None,
) -> str | None:
    """Why ``campaign`` cannot be shown now (a short reason), or ``None`` if it can.

    ``profile`` must already carry live segments (see ``Config.evaluate_segments``).
    """
    if campaign.status != "active":
        return f"status:{campaign.status}"
    if zone is not None and zone not in campaign.zones:
        return "zone"
    channel = context.get("channel")
    if campaign.channels is not None and channel not in campaign.channels:
        return "channel"
    if not campaign.schedule.contains(now):
        return "schedule"
    capped = cap_reason(campaign.caps, state)
    if capped:
        return f"capped:{capped}"
    if not campaign.targeting(profile, context, now):
        return "targeting"
    return None


def _requested_zones(context: Mapping[str, Any], zones: Sequence[str] | None) -> list[str]:
    raw = zones if zones is not None else context.get("zones")
    if not isinstance(raw, list | tuple):
        return []
    out: list[str] = []
    for z in raw:
        if isinstance(z, str) and z not in out:
            out.append(z)
    return out


def with_live_segments(
    config: Config, profile: Mapping[str, Any], context: Mapping[str, Any], now: Now,
    zones: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A copy of the profile view whose ``segments`` are re-evaluated now: with ``zones``,
    only those a selection for them reads (``Config.segments_for``)."""
    view = dict(profile)
    only = config.segments_for(tuple(zones)) if zones is not None else None
    config.evaluate_segments(profile, context, now, only, into=view)
    return view


def select(
    config: Config,
    profile: Mapping[str, Any],
    context: Mapping[str, Any],
    now: Now,
    caps_state: CapsInput | None = None,
    zones: Sequence[str] | None = None,
    recommendations: Sequence[Mapping[str, Any]] = (),
    models: Mapping[str, Any] | None = None,
    token: Callable[[], str] | None = None,
) -> list[Decision]:
    """Decisions for the requested zones (``zones`` or ``context["zones"]``), in request order.

    A learning campaign (``campaign.learns``) picks its variant with its bandit from
    ``models`` (a fresh one when absent), drawn with the random part ``token()`` of the
    decision's id (engine/logic/decisions/policy.py)."""
    requested = _requested_zones(context, zones)
    if not requested:
        return []
    view = with_live_segments(config, profile, context, now, requested)
    visitor = canonical_visitor_id(profile)
    used: set[str] = set()
    variables: Mapping[str, Any] | None = None
    features: dict[str, Any] | None = None
    decisions: list[Decision] = []
    for zone in requested:
        for campaign in config.by_zone.get(zone, ()):
            if campaign.id in used:
                continue
            state = _state(caps_state, campaign.id)
            if ineligibility(campaign, view, context, now, state, zone) is not None:
                continue
            random_part = None
            feats = None
            if campaign.learns:
                random_part = token() if token is not None else "0"
                model = (models or {}).get(campaign.id) or new_model(campaign.policy)
                if campaign.contextual:
                    if features is None:
                        features = visitor_features(view, context)
                    feats = features
                p = pick(campaign, model, visitor, random_part, feats)
                if p.slots:
                    filled = _slots(campaign, p.slots, zone, random_part, feats, view, context,
                                    recommendations, variables)
                    if filled is None:
                        continue
                    variables = filled[1]
                    used.add(campaign.id)
                    decisions.extend(filled[0])
                    break
                arm = Assignment(p.variant, p.control, p.probability, 0.0)
            else:
                arm = arm_of(bucket(campaign.id, visitor), campaign.arms,
                             campaign.total_weight, campaign.control_percent)
            content = None
            if not arm.control:
                variant = campaign.variant(str(arm.variant))
                if variant is None:
                    continue
                if variables is None:
                    variables = template_vars(view, context, recommendations)
                try:
                    content = variant.template.render(variables)
                except RenderError:
                    continue
            used.add(campaign.id)
            decisions.append(
                Decision(
                    zone,
                    campaign.id,
                    campaign.name,
                    arm.variant,
                    arm.control,
                    arm.probability,
                    content,
                    random_part,
                    campaign.policy.kind,
                    0 if campaign.slots > 1 else None,
                    feats,
                )  # fmt: skip
            )
            break
    return decisions


def _slots(campaign: Campaign, slots: Sequence[tuple[str, float]], zone: str, random_part: str,
           features: Mapping[str, Any] | None, view: Mapping[str, Any],
           context: Mapping[str, Any], recommendations: Sequence[Mapping[str, Any]],
           variables: Mapping[str, Any] | None
           ) -> tuple[list[Decision], Mapping[str, Any]] | None:
    """One decision per slot of a multi-slot campaign (None when a variant cannot render)."""
    if variables is None:
        variables = template_vars(view, context, recommendations)
    out = []
    for i, (vid, probability) in enumerate(slots):
        variant = campaign.variant(vid)
        if variant is None:
            return None
        try:
            content = variant.template.render(variables)
        except RenderError:
            return None
        out.append(Decision(zone, campaign.id, campaign.name, vid, False, probability, content,
                            random_part, campaign.policy.kind, i, features))
    return out, variables


def explain(
    config: Config,
    profile: Mapping[str, Any],
    context: Mapping[str, Any],
    now: Now,
    caps_state: CapsInput | None = None,
    zones: Sequence[str] | None = None,
) -> dict[str, list[tuple[str, str | None]]]:
    """Per zone, every candidate campaign in priority order with its ineligibility reason."""
    view = with_live_segments(config, profile, context, now)
    return {
        zone: [
            (c.id, ineligibility(c, view, context, now, _state(caps_state, c.id), zone))
            for c in config.by_zone.get(zone, ())
        ]
        for zone in _requested_zones(context, zones)
    }
