"""Hook: a short activity timeline per profile, for "one visitor, explained" on the dashboard
(the entries and their format: engine/store/activity.py). Per-visitor ops: they commit with the
profile."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine.store.activity import record_ops
from engine.store.writes import Write
from models.affinity import Profile
from streams.plan import Hook, HookContext


def record_activity(event: Mapping[str, Any], profile: Profile, pid: str, out: Write) -> None:
    for op in record_ops(event, pid):
        out.op(op.command, op.key, *op.args)


def setup(ctx: HookContext) -> Callable[[], list[Hook]]:
    return lambda: [record_activity]
