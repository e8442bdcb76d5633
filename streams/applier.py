"""Apply a batch of events to Redis: read, plan (pure), commit with compare-and-set.

Two reads and one write round trip per batch. A write whose profile changed under it
(another worker wrote the same merged user) is planned again from fresh state; the
dedupe marks in each profile make that, and any redelivery after a crash, harmless.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.store.profiles import ProfileStore
from engine.store.writes import Emit
from models.affinity import AffinityConfig
from streams.plan import Hook, needed_pids, plan

MAX_ATTEMPTS = 8


@dataclass
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    conflicts: int = 0


class Applier:
    def __init__(
        self,
        store: ProfileStore,
        cfg: AffinityConfig,
        hooks: Callable[[], Sequence[Hook]] = lambda: (),
        emit: Callable[[Sequence[Emit]], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.hooks = hooks  # called per batch: hooks follow hot-reloaded configuration
        self.emit = emit
        self.prepare: Callable[[Sequence[Mapping[str, Any]]], Awaitable[None]] | None = getattr(
            hooks, "prepare", None)  # streams.hooks.Hooks: load per-partition state first

    async def apply(self, events: Sequence[Mapping[str, Any]]) -> BatchResult:
        result = BatchResult()
        pending = list(events)
        if self.prepare is not None:
            await self.prepare(pending)
        for _ in range(MAX_ATTEMPTS):
            aliases = await self.store.aliases(ev["visitor_id"] for ev in pending)
            stored = await self.store.load(needed_pids(pending, aliases))
            outcome = plan(pending, aliases, stored, self.cfg, self.hooks())
            oks = await self.store.commit(outcome.writes)
            retry: list[int] = []
            emits: list[Emit] = []
            for w, ok in zip(outcome.writes, oks, strict=True):
                if ok:
                    result.applied += w.applied
                    result.duplicates += w.duplicates
                    emits.extend(w.emits)
                else:
                    retry.extend(w.events)
            if emits and self.emit is not None:
                await self.emit(emits)
            if not retry:
                return result
            # the successful writes are in; plan only the events of the failed ones again
            result.conflicts += 1
            pending = [pending[i] for i in sorted(retry)]
        raise RuntimeError(f"profile writes kept conflicting after {MAX_ATTEMPTS} attempts")
