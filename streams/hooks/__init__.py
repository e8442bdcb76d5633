"""Stream hooks: what else changes when an event is applied to a profile.

A hook is a pure callable (see `streams.plan`, "Hooks"): `hook(event, profile, pid, out)` may
update the profile, add per-visitor ops (`out.op`, committed with the profile), emits
(`out.emit`, produced after the commit, at least once) and changes to shared tables
(`out.tables.zincr / hincr / hset`, aggregated over the batch and committed once per batch with
the offset marks: exactly once). Each module in `MODULES` has `setup(ctx) -> getter`, plain
wiring with no I/O: `ctx` is the `streams.plan.HookContext`, and `getter()` returns the hooks to
run for the next batch (so hooks follow hot-reloaded configuration).

A new learner plugs in as one more module here: a hook object with `__call__` (per applied
event) and, as it needs, `finish` (once per profile per batch), `reads` (per-visitor hashes to
read before planning) and `unstored` (events counted but not stored); a getter with a
`lifecycle` if it keeps per-partition state in memory (below). It never does I/O itself.

A getter may carry `lifecycle`: an object with async `prepare(events)` (before each batch is
planned), `snapshot()` (periodically) and `revoked(partitions)` (the worker lost partitions),
whose I/O goes through engine/store; streams/hooks/cf.py keeps per-partition models that way.

`setup_hooks` is the worker's one start-up step for all of them: it starts what the hooks need
from outside (the decision configuration, watched; the segments topic; the model snapshot
store) and then calls each module's `setup`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from engine.confighub import ConfigHub, default_hub
from engine.eventlog import ensure_topics
from engine.settings import Settings
from engine.store.snapshots import ModelSnapshots
from streams.hooks import activity, cf, decisions, reco, traffic
from streams.plan import Hook, HookContext

#: Every hook module, in the order their hooks run.
MODULES: tuple[ModuleType, ...] = (traffic, activity, decisions, reco, cf)


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


async def setup_hooks(settings: Settings, redis: Any, modules: Sequence[ModuleType] | None = None,
                      hub: ConfigHub | None = None,
                      epoch_of: Callable[[int], int | None] = lambda p: None) -> Hooks:
    """Start what the hooks need (the decision configuration, loaded and watched; the
    segments topic) and set up every module's hooks. `epoch_of(partition)`: the epoch this
    worker holds a partition at (engine/store/fences.py), so that model snapshots are fenced."""
    if hub is None:
        hub = default_hub(settings.config_dir, settings.config_reload_debounce_ms)
        await hub.start()
    if settings.kafka_bootstrap:
        with contextlib.suppress(Exception):
            await ensure_topics(settings.kafka_bootstrap,
                                {settings.segments_topic: settings.partitions}, 10.0)
    ctx = HookContext(settings, hub, ModelSnapshots(redis, settings.group_id, epoch_of)
                      if redis is not None else None)
    return Hooks([m.setup(ctx) for m in (MODULES if modules is None else modules)])
