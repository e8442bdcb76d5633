"""Hook: count applied events per second by type and channel (for the live dashboard)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from engine.logic.livestats import SECOND_TTL_MS
from engine.store import keys
from engine.store.writes import Emit, Op
from models.affinity import Profile
from streams.plan import Hook, HookContext


def count_traffic(event: Mapping[str, Any], profile: Profile, pid: str) -> Iterable[Op | Emit]:
    second = int(event.get("received_at") or event["ts"]) // 1000
    key = keys.live_second(second)
    return (
        Op("HINCRBY", key, (f"t:{event['type']}", 1)),
        Op("HINCRBY", key, (f"c:{event.get('channel') or 'unknown'}", 1)),
        Op("HINCRBY", key, ("applied", 1)),
        Op("PEXPIRE", key, (SECOND_TTL_MS,)),
    )


def setup(ctx: HookContext) -> Callable[[], list[Hook]]:
    return lambda: [count_traffic]
