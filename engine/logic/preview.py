"""`kairos preview CAMPAIGN --visitor ID`: the content a visitor would get from a campaign.

`render_preview` is pure (config, profile view, context, time in; text out). `preview` reads
the visitor's profile from Redis when a Redis URL is configured (an external one, or the one
`kairos up` prints), else renders for an empty profile. Preview ignores caps, schedule and
targeting, but says whether they would let the campaign through right now.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from typing import Any

from engine.logic.decisions.assign import assign
from engine.logic.decisions.caps import CapState
from engine.logic.decisions.config import Config, load_config
from engine.logic.decisions.select import ineligibility, with_live_segments
from engine.logic.decisions.state import rule_view
from engine.logic.decisions.templates import RenderError, template_vars
from engine.settings import Settings
from models.affinity import Profile


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
    v = campaign.variant(chosen)
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


async def _profile(settings: Settings, visitor_id: str) -> tuple[str, Profile | None]:
    from engine.store.profiles import ProfileStore, new_client

    assert settings.redis_url
    client = new_client(settings.redis_url, timeout=3.0)
    try:
        found = await ProfileStore(client, settings.profile_ttl_ms).find(visitor_id)
    finally:
        await client.aclose()
    if found is None:
        return f"v:{visitor_id}", None
    return found[0], found[1].profile


def preview(settings: Settings, campaign_id: str, visitor_id: str, variant: str | None = None,
            context: Mapping[str, Any] | None = None) -> str:
    config = load_config(settings.config_dir)  # raises ConfigError with file:line problems
    now_ms = int(time.time() * 1000)
    pid, profile, note = f"v:{visitor_id}", None, ""
    if settings.redis_url:
        try:
            pid, profile = asyncio.run(_profile(settings, visitor_id))
            if profile is None:
                note = f"(no profile for {visitor_id!r}: rendering for an empty one)\n"
        except Exception as exc:
            note = f"(Redis unreachable: {exc}; rendering for an empty profile)\n"
    else:
        note = "(no KAIROS_REDIS_URL: rendering for an empty profile)\n"
    view = rule_view(profile, pid, now_ms, settings.affinity)
    return note + render_preview(config, campaign_id, view, dict(context or {}), now_ms, variant)


def parse_context(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    with contextlib.suppress(ValueError):
        doc = json.loads(text)
        if isinstance(doc, dict):
            return doc
    raise PreviewError("--context must be a JSON object, e.g. '{\"page_type\": \"home\"}'")
