"""Apply a batch of events to Redis: read, plan (pure), commit.

Two read round trips and (on one server) one write per batch: the aliases; then the profiles
with their tombstones and the per-visitor hashes hooks asked for; then one script call that
checks every fence and revision and writes everything or nothing (engine/store/profiles.py).

- A profile that changed under the batch (another worker wrote the same merged user) or a
  tombstone that appeared: nothing was written, so the batch is read and planned again.
- A fence that refuses the call: the partition's state in Redis is read back. A newer owner
  holds it (this worker stalled past its session): `Lost` — its events are not applied here.
  Redis lost what this worker wrote (restarted from an AOF missing its last second): `Rewind` —
  the consumer reads those partitions again from what Redis has applied. Redis lost the
  claim only: the partitions are claimed again and the batch retried.

On a Redis Cluster the steps of a commit are separate calls (shared tables first, then each
profile, then the merges' second steps and the applied marks): a profile that conflicts
there is planned again on its own, its shared changes being in already.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.store.fences import NONE
from engine.store.profiles import Phase, ProfileStore
from engine.store.writes import Emit, Tables
from models.affinity import AffinityConfig
from streams.plan import Hook, needed_pids, plan, side_reads

MAX_ATTEMPTS = 8


class Lost(Exception):
    """A newer owner holds these partitions: this worker must not apply their events."""

    def __init__(self, partitions: set[int]) -> None:
        super().__init__(f"partitions {sorted(partitions)} are held by a newer owner")
        self.partitions = partitions


class Rewind(Exception):
    """Redis has applied these partitions only up to before the batch (it restarted from an AOF
    that lost its last second): read them again from these offsets."""

    def __init__(self, offsets: dict[int, int]) -> None:
        super().__init__(f"redis rolled back: read again from {offsets}")
        self.offsets = offsets


@dataclass
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    conflicts: int = 0
    unstored: int = 0  # consent declined: counted in the traffic only
    erased: int = 0  # of erased profiles: counted in the traffic only
    dropped_ops: int = 0  # past some event's op budget


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

    @property
    def fences(self) -> Any:
        return self.store.fences

    async def apply(self, events: Sequence[Mapping[str, Any]]) -> BatchResult:
        result = BatchResult()
        upto: dict[int, int] = {}
        for ev in events:
            p = ev.get("_p")
            if p is not None and ev["_o"] > upto.get(p, -1):
                upto[p] = ev["_o"]
        unknown = set(upto) - set(self.fences.held)
        if unknown:
            await self.fences.claim(unknown)
        pending = list(events)
        if self.prepare is not None:
            await self.prepare(pending)
        phases = Phase.ALL
        for _ in range(MAX_ATTEMPTS):
            hooks = self.hooks()
            aliases = await self.store.aliases(ev["visitor_id"] for ev in pending)
            stored = await self.store.load(needed_pids(pending, aliases),
                                           side_reads(pending, aliases, hooks))
            shared = Phase.SHARED in phases
            tables = Tables(marks=self.fences.marks(upto)) if shared else Tables()
            outcome = plan(pending, aliases, stored, self.cfg, hooks, tables)
            res = await self.store.commit(outcome.writes, tables if shared else None, upto,
                                          phases)
            if res.fenced:
                await self._fenced(upto)
                continue
            if shared and (res.ok or self.store.cluster):
                result.unstored += outcome.unstored
                result.erased += outcome.erased
                result.dropped_ops += outcome.dropped_ops
            emits: list[Emit] = []
            for i in res.written:
                w = outcome.writes[i]
                result.applied += w.applied
                result.duplicates += w.duplicates
                emits.extend(w.emits)
            for i in res.erased if self.store.cluster else ():
                result.erased += outcome.writes[i].applied
            if emits and self.emit is not None:
                await self.emit(emits)
            if res.ok:
                return result
            result.conflicts += 1
            if self.store.cluster:
                # shared tables are in: plan only the events of the conflicting profiles again
                retry = sorted(i for c in res.conflicts for i in outcome.writes[c].events)
                pending = [pending[i] for i in retry]
                phases = Phase.PROFILES | Phase.APPLIED
                if not pending:
                    phases = Phase.APPLIED
            # on one server nothing was written: read and plan the whole batch again
        raise RuntimeError(f"profile writes kept conflicting after {MAX_ATTEMPTS} attempts")

    async def _fenced(self, upto: Mapping[int, int]) -> None:
        """A fence refused the commit: find out why, and raise or fix it for a retry."""
        state = await self.fences.state(sorted(upto))
        lost: set[int] = set()
        rewind: dict[int, int] = {}
        reclaim: list[int] = []
        for p, st in state.items():
            held = self.fences.held[p]
            if st.epoch > held.epoch:
                lost.add(p)
                continue
            if st.epoch < held.epoch:
                reclaim.append(p)  # Redis lost the claim (restarted from an older AOF)
            if st.applied < held.applied:
                rewind[p] = st.applied + 1 if st.applied != NONE else 0
            held.offsets = dict(st.offsets)
            held.applied = st.applied
        if lost:
            self.fences.forget(lost)
            raise Lost(lost)
        if reclaim:
            await self.fences.claim(reclaim)
        if rewind:
            raise Rewind(rewind)
