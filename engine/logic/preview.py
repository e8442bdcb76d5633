"""`kairos preview CAMPAIGN --visitor ID`: the content a visitor would get from a campaign.

`render_preview` is pure (config, profile view, context, time in; text out); engine/flows/preview.py
reads the visitor's profile for it. Preview ignores caps, schedule and targeting, but says
whether they would let the campaign through right now.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

from engine.logic.decisions.assign import assign
from engine.logic.decisions.caps import CapState
from engine.logic.decisions.config import Config
from engine.logic.decisions.select import ineligibility, with_live_segments
from engine.logic.decisions.templates import RenderError, template_vars


class PreviewError(Exception):
    pass


def render_preview(config: Config, campaign_id: str, view: Mapping[str, Any],
                   context: Mapping[str, Any], now_ms: int, variant: str | None = None) -> str:
    campaign = config.campaigns.get(campaign_id)
    if campaign is None:
        raise PreviewError(f"unknown campaign {campaign_id!r} (known: {', '.join(config.campaigns)})")
    live = with_live_segments(config, view, context, now_ms)
    arm = assign(campaign.id, str(view["profile_id"]), campaign.weights, campaign.control_percent)
    lines = [f"campaign  {campaign.id} ({campaign.name}), from {campaign.source}",
             f"visitor   {view['profile_id']}  segments: {', '.join(live['segments']) or '-'}",
             f"assigned  {arm.arm} (p = {arm.probability:.3f})"]
    why = ineligibility(campaign, live, context, now_ms, CapState())
    lines.append(f"eligible  {'yes' if why is None else 'no: ' + why} (caps not checked)")
    chosen = variant or (arm.variant if not arm.control else campaign.variants[0].id)
    v = campaign.variant(chosen) if chosen is not None else None
    if v is None:
        raise PreviewError(f"campaign {campaign.id} has no variant {chosen!r}")
    if arm.control and variant is None:
        lines.append(f"(control: the visitor sees nothing; showing variant {v.id})")
    try:
        content = v.template.render(template_vars(live, context))
    except RenderError as exc:
        raise PreviewError(str(exc)) from None
    lines.append(f"--- variant {v.id}")
    for name, text in content.items():
        lines.append(f"[{name}]")
        lines.append(text.rstrip("\n"))
    return "\n".join(lines)


def parse_context(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    with contextlib.suppress(ValueError):
        doc = json.loads(text)
        if isinstance(doc, dict):
            return doc
    raise PreviewError("--context must be a JSON object, e.g. '{\"page_type\": \"home\"}'")
