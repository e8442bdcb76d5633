"""A short activity timeline per profile, for "one visitor, explained" on the dashboard.

The last `KEEP` events of a profile, as compact msgpack entries, kept `TTL_MS` after the
visitor's last event: a live view of active visitors, so it costs memory only while a visitor
is active (the profile blob itself keeps the long-term state). The stream hook
(streams/hooks/activity.py) writes the entries with the profile; the API reads them here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack

from engine.store import keys
from engine.store.writes import Op

KEEP = 30
TTL_MS = 30 * 60 * 1000


def entry(event: Mapping[str, Any]) -> bytes:
    item = event.get("item") or {}
    lines = event.get("items") or []
    ids = [item["id"]] if item.get("id") else [ln["id"] for ln in lines[:5]]
    row = [int(event["ts"]), event["type"], ids, event.get("channel"), event.get("decision_id"),
           (item.get("categories") or [None])[0], item.get("brand")]
    return msgpack.packb(row)


def decode_entry(raw: bytes) -> dict[str, Any]:
    ts, etype, ids, channel, decision_id, category, brand = msgpack.unpackb(raw)
    return {"ts": ts, "type": etype, "items": ids, "channel": channel, "decision_id": decision_id,
            "category": category, "brand": brand}


def record_ops(event: Mapping[str, Any], pid: str) -> tuple[Op, ...]:
    """The ops that push one applied event onto the profile's timeline (bounded, expiring)."""
    key = keys.activity(pid)
    return (Op("LPUSH", key, (entry(event),)), Op("LTRIM", key, (0, KEEP - 1)),
            Op("PEXPIRE", key, (TTL_MS,)))


class ActivityStore:
    """The timelines, read side."""

    def __init__(self, redis: Any) -> None:
        self.r = redis

    async def recent(self, pid: str, n: int = 30) -> list[dict[str, Any]]:
        """The profile's last `n` events, newest first, decoded."""
        return [decode_entry(raw) for raw in await self.r.lrange(keys.activity(pid), 0, n - 1)]
