"""Campaigns as the API and the dashboard show them: a summary of each, and the live report
of a campaign's arms (counts, rates, lift and anytime-valid intervals against the baseline,
sample-ratio check). Pure: the counters are read by engine/store/decide_read.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.logic.decisions.assign import CONTROL
from engine.logic.decisions.config import Campaign
from engine.logic.decisions.stats import ArmCounts, report


def campaign_summary(c: Campaign) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "description": c.description,
        "status": c.status,
        "priority": c.priority,
        "zones": list(c.zones),
        "channels": sorted(c.channels) if c.channels is not None else None,
        "schedule": {
            "start": c.schedule.start.isoformat() if c.schedule.start else None,
            "end": c.schedule.end.isoformat() if c.schedule.end else None,
            "timezone": str(c.schedule.timezone),
        },
        "caps": {"per_day": c.caps.per_day, "per_session": c.caps.per_session,
                 "stop_after": sorted(c.caps.stop_after)},
        "control_percent": c.control_percent,
        "variants": [{"id": v.id, "weight": v.weight} for v in c.variants],
        "arms": c.arm_probabilities(),
        "goal": {"event": c.goal.event, "window_ms": c.goal.window_ms} if c.goal else None,
        "source": c.source,
    }


def _rate(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def stats_report(campaign: Campaign, arms: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """The answer of GET /v1/campaigns/{id}/stats from the campaign's counters
    (`{arm: {counter: n}}`)."""
    probs = campaign.arm_probabilities()
    counts = {a: ArmCounts(arms.get(a, {}).get("assigned", 0), arms.get(a, {}).get("impressions", 0),
                           arms.get(a, {}).get("clicks", 0), arms.get(a, {}).get("conversions", 0))
              for a in probs}
    rep = report(counts, probs)
    rows = []
    for arm in rep.arms:
        c = arm.counts
        row: dict[str, Any] = {
            "arm": arm.arm,
            "control": arm.arm == CONTROL,
            "expected_share": round(probs[arm.arm], 6),
            "assigned": c.assigned,
            "impressions": c.impressions,
            "clicks": c.clicks,
            "dismissals": arms.get(arm.arm, {}).get("dismissals", 0),
            "conversions": c.conversions,
            "ctr": _rate(arm.ctr),
            "conversion_rate": _rate(arm.conversion_rate),
            "verdict": arm.verdict,
        }
        if arm.comparison is not None:
            cmp = arm.comparison
            row["vs_baseline"] = {
                "diff": _rate(cmp.diff), "diff_low": _rate(cmp.diff_low), "diff_high": _rate(cmp.diff_high),
                "lift": _rate(cmp.lift), "lift_low": _rate(cmp.lift_low), "lift_high": _rate(cmp.lift_high),
                "p_value": _rate(cmp.p_value), "enough_data": cmp.enough_data,
            }
        rows.append(row)
    return {
        "campaign": campaign.id,
        "name": campaign.name,
        "baseline": rep.baseline,
        "arms": rows,
        "srm": {"p_value": _rate(rep.srm_p_value), "ok": rep.srm_ok},
        "verdict": rep.verdict,
    }
