"""Hook: a short activity timeline per profile, for "one visitor, explained" on the dashboard
(the entries and their format: engine/store/activity.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from engine.store.activity import record_ops
from engine.store.writes import Emit, Op
from models.affinity import Profile
from streams.plan import Hook, HookContext


def record_activity(event: Mapping[str, Any], profile: Profile, pid: str) -> Iterable[Op | Emit]:
    return record_ops(event, pid)


def setup(ctx: HookContext) -> Callable[[], list[Hook]]:
    return lambda: [record_activity]
