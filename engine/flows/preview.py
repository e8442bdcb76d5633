"""`kairos preview CAMPAIGN --visitor ID`: the content a visitor would get from a campaign.

Reads the visitor's profile from Redis when a Redis URL is configured (an external one, or the
one `kairos up` prints), else renders for an empty profile; the rendering is the pure
`engine.logic.preview.render_preview`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from engine.logic.decisions.config import load_config
from engine.logic.decisions.state import rule_view
from engine.logic.preview import render_preview
from engine.settings import Settings
from engine.store.profiles import ProfileStore, new_client
from models.affinity import Profile


async def _profile(settings: Settings, visitor_id: str) -> tuple[str, Profile | None]:
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
