"""Stream hook modules: what else changes when an event is applied to a profile.

Each module listed in `HOOK_MODULES` has `async def setup(settings, redis) -> getter`,
where `getter()` returns the hooks to run for the next batch (so hooks follow hot-reloaded
configuration). A hook is a pure function (see `streams.plan.Hook`): it may update the
profile and returns `Op`s (committed atomically with the profile, so exactly once) and
`Emit`s (produced after the commit, at least once).
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
]


async def setup_hooks(settings: Settings, redis: Any, modules: Sequence[str] | None = None
                      ) -> Callable[[], list[Hook]]:
    getters = []
    for name in HOOK_MODULES if modules is None else modules:
        getters.append(await importlib.import_module(name).setup(settings, redis))

    def hooks() -> list[Hook]:
        out: list[Hook] = []
        for g in getters:
            out.extend(g())
        return out

    return hooks
