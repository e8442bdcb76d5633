"""Stream hook modules: what else changes when an event is applied to a profile.

Each module listed in `HOOK_MODULES` has `async def setup(settings, redis) -> getter`,
where `getter()` returns the hooks to run for the next batch (so hooks follow hot-reloaded
configuration). A hook is a pure function (see `streams.plan.Hook`): it may update the
profile and returns `Op`s (committed atomically with the profile, so exactly once) and
`Emit`s (produced after the commit, at least once).

A getter may carry `lifecycle`: an object with async `prepare(events)` (before each batch is
planned), `snapshot()` (periodically) and `revoked(partitions)` (the worker lost partitions);
streams/hooks_cf.py uses them to keep per-partition models in memory.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from engine.settings import Settings
from streams.plan import Hook

HOOK_MODULES: list[str] = [
    "streams.hooks_traffic",
    "streams.hooks_activity",
    "streams.hooks_decisions",
    "streams.hooks_reco",
    "streams.hooks_cf",
]


class Hooks:
    """The hooks of every module (call it per batch) and their modules' lifecycle steps."""

    def __init__(self, getters: Sequence[Callable[[], list[Hook]]]) -> None:
        self.getters = list(getters)
        self.lifecycles = [g.lifecycle for g in getters if hasattr(g, "lifecycle")]

    def __call__(self) -> list[Hook]:
        out: list[Hook] = []
        for g in self.getters:
            out.extend(g())
        return out

    async def prepare(self, events: Sequence[Any]) -> None:
        for lc in self.lifecycles:
            await lc.prepare(events)

    async def snapshot(self) -> int:
        """Snapshot every module's changed state; returns how many parts were written."""
        n = 0
        for lc in self.lifecycles:
            n += await lc.snapshot()
        return n

    async def revoked(self, partitions: set[int]) -> None:
        for lc in self.lifecycles:
            await lc.revoked(partitions)


async def setup_hooks(settings: Settings, redis: Any, modules: Sequence[str] | None = None
                      ) -> Hooks:
    getters = []
    for name in HOOK_MODULES if modules is None else modules:
        getters.append(await importlib.import_module(name).setup(settings, redis))
    return Hooks(getters)
