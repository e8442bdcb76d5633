"""Hook: count events per second by type and channel (for the live dashboard).

Counts every applied event and every event counted but not stored (consent declined, an
erased profile: `unstored`), as changes to the second's shared hash (`keys.live_second`),
aggregated over the batch and committed once with the offset marks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine.logic.livestats import SECOND_TTL_MS
from engine.store import keys
from engine.store.writes import Tables, Write
from models.affinity import Profile
from streams.plan import Hook, HookContext


class Traffic:
    def __call__(self, event: Mapping[str, Any], profile: Profile, pid: str, out: Write) -> None:
        self.unstored(event, out.tables)

    def unstored(self, event: Mapping[str, Any], tables: Tables) -> None:
        key = keys.live_second(int(event.get("received_at") or event["ts"]) // 1000)
        tables.hincr(key, f"t:{event['type']}", 1, SECOND_TTL_MS)
        tables.hincr(key, f"c:{event.get('channel') or 'unknown'}", 1, SECOND_TTL_MS)
        tables.hincr(key, "applied", 1, SECOND_TTL_MS)


count_traffic = Traffic()


def setup(ctx: HookContext) -> Callable[[], list[Hook]]:
    return lambda: [count_traffic]
