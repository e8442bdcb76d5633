"""The campaign listing and each campaign's live report (the API and the dashboard)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from engine.confighub import ConfigHub
from engine.logic.campaigns import campaign_summary, stats_report
from engine.store.decide_read import DecideReader


class UnknownCampaign(LookupError):
    pass


class StatsUnavailable(Exception):
    """The campaign counters could not be read."""


class Campaigns:
    def __init__(self, hub: ConfigHub, reader: DecideReader) -> None:
        self.hub = hub
        self.reader = reader

    async def listing(self) -> dict[str, Any]:
        """Every campaign and segment (with its live size) and the configuration's status."""
        config = self.hub.decisions
        sizes: dict[str, int] = {}
        with contextlib.suppress(Exception):
            sizes = await asyncio.wait_for(self.reader.segment_sizes(), 1.0)
        return {
            "campaigns": [campaign_summary(c) for c in config.campaigns.values()] if config else [],
            "segments": [{"id": s.id, "name": s.name, "description": s.description,
                          "source": s.source, "size": sizes.get(s.id, 0)}
                         for s in config.segments.values()] if config else [],
            "config": self.hub.status(),
        }

    async def stats(self, campaign_id: str) -> dict[str, Any]:
        """The live report of one campaign; `UnknownCampaign` or `StatsUnavailable`."""
        config = self.hub.decisions
        campaign = config.campaigns.get(campaign_id) if config else None
        if campaign is None:
            raise UnknownCampaign(campaign_id)
        try:
            arms = await self.reader.counters(campaign_id)
        except Exception as exc:
            raise StatsUnavailable(str(exc)) from exc
        return stats_report(campaign, arms)
