"""Hook: a short activity timeline per profile, for "one visitor, explained" on the dashboard
(the entries and their format: engine/store/activity.py). Per-visitor ops: they commit with the
profile."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine.store import keys
from engine.store.activity import KEEP, TTL_MS, entry
from engine.store.writes import Write
from models.affinity import Profile
from streams.plan import Hook, HookContext


def record_activity(event: Mapping[str, Any], profile: Profile, pid: str, out: Write) -> None:
    """The event pushed onto the profile's timeline (bounded, expiring: engine/store/activity.py
    `record_ops`, as ops of the profile's write)."""
    key = keys.activity(pid)
    out.op("LPUSH", key, entry(event))
    if "activity" not in out.scratch:  # once per profile per batch: the commit runs the write's
        out.scratch["activity"] = True  # trims and expiries after all its pushes (coalesce)
        out.op("LTRIM", key, 0, KEEP - 1)
        out.op("PEXPIRE", key, TTL_MS)


def setup(ctx: HookContext) -> Callable[[], list[Hook]]:
    return lambda: [record_activity]
