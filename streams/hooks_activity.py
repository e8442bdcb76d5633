"""Hook: a short activity timeline per profile, for "one visitor, explained" on the dashboard.

The last 30 events of a profile, as compact msgpack entries, kept 30 minutes after the
visitor's last event: a live view of active visitors, so it costs memory only while a visitor
is active (the profile blob itself keeps the long-term state).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgpack

from engine.settings import Settings
from engine.store import keys
from models.affinity import Profile
from streams.plan import Emit, Hook, Op

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


def record_activity(event: Mapping[str, Any], profile: Profile, pid: str) -> Iterable[Op | Emit]:
    key = keys.activity(pid)
    return (Op("LPUSH", key, (entry(event),)), Op("LTRIM", key, (0, KEEP - 1)),
            Op("PEXPIRE", key, (TTL_MS,)))


async def setup(settings: Settings, redis: Any) -> Callable[[], list[Hook]]:
    return lambda: [record_activity]
