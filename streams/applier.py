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

Overlapping (one server): given the batch that comes next (`ahead`), the applier reads what that
batch needs just before sending this batch's commit, and plans it while Redis runs the commit
(the commit script is most of Redis's time: its wait was half the worker's wall time). The
plan ahead sees this batch as committed: the profiles this batch writes as it writes them (the
objects themselves, `Profile.settle`d to what their blobs restore: not the blobs just encoded,
decoded again), its merges' aliases and deletions, the per-visitor hashes as its hooks
left them; everything else as read, which this commit does not change. It is kept only if this
commit wrote everything (`ok`); otherwise it is dropped and the next batch is read and planned
again after this one is settled, as without overlap. Nothing of the plan ahead is written
before it is committed as any batch is (fenced, compare-and-set on every profile), so a plan
ahead that something else made stale is refused and planned again. Its hooks' learning (the
online CF) is redone then, as for a conflict.

On a Redis Cluster the steps of a commit are separate calls (shared tables first, then each
profile, then the merges' second steps and the applied marks): a profile that conflicts
there is planned again on its own, its shared changes being in already.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.store.fences import NONE
from engine.store.profiles import CommitResult, Phase, ProfileStore
from engine.store.writes import Emit, Stored, Tables
from models.affinity import AffinityConfig
from streams.plan import Hook, Outcome, needed_pids, plan, side_reads

log = logging.getLogger("kairos.worker")

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


#: What comes next, for the overlap: the next part, or (chaining batches) a function that
#: returns it, asked for just before this part's commit is sent (None: nothing to overlap)
Ahead = Sequence[Mapping[str, Any]] | Callable[[], Awaitable[Sequence[Mapping[str, Any]] | None]]


@dataclass(slots=True)
class _Ahead:
    """The next batch, planned while this one's commit ran (valid once that commit is in)."""

    events: Sequence[Mapping[str, Any]]
    outcome: Outcome


def _upto(events: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    upto: dict[int, int] = {}
    for ev in events:
        p = ev.get("_p")
        if p is not None and ev["_o"] > upto.get(p, -1):
            upto[p] = ev["_o"]
    return upto


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
        self._ahead: _Ahead | None = None
        self.overlapped = 0  # batches whose plan ahead was committed
        self.dropped_ahead = 0  # plans ahead dropped (this batch's commit was not all in)

    @property
    def fences(self) -> Any:
        return self.store.fences

    def forget_ahead(self) -> None:
        """Drop a plan ahead that was not used (the caller's batch ended)."""
        self._ahead = None

    async def apply(self, events: Sequence[Mapping[str, Any]],
                    ahead: Ahead | None = None) -> BatchResult:
        """Apply `events`; with `ahead` (the batch the caller applies next, on one server, or
        a function that returns it once this one is planned), plan that one while this one's
        commit runs (the module docstring)."""
        result = BatchResult()
        upto = _upto(events)
        unknown = set(upto) - set(self.fences.held)
        if unknown:
            await self.fences.claim(unknown)
        pending = list(events)
        if self.prepare is not None:
            await self.prepare(pending)
        spec, self._ahead = self._ahead, None
        if spec is not None and spec.events is not events:
            spec = None
        phases = Phase.ALL
        for attempt in range(MAX_ATTEMPTS):
            shared = Phase.SHARED in phases
            if spec is not None:
                outcome, spec = spec.outcome, None
                self.overlapped += 1
            else:
                aliases, stored, hooks = await self._read(pending)
                tables = Tables(marks=self.fences.marks(upto)) if shared else Tables()
                outcome = plan(pending, aliases, stored, self.cfg, hooks, tables)
            if ahead is not None and attempt == 0 and not self.store.cluster:
                res = await self._commit_overlapping(outcome, upto, ahead)
            else:
                res = await self.store.commit(outcome.writes, outcome.tables if shared else None,
                                              upto, phases)
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

    async def _read(self, events: Sequence[Mapping[str, Any]], after: Outcome | None = None
                    ) -> tuple[dict[str, str | None], dict[str, Stored], Sequence[Hook]]:
        """What planning `events` reads: their aliases (as `after`'s merges leave them, when
        they are planned on top of that outcome), the profiles and the hooks' side reads."""
        hooks = self.hooks()
        aliases = await self.store.aliases(ev["visitor_id"] for ev in events)
        if after is not None:
            for w in after.writes:
                for vid, target in w.aliases:
                    aliases[vid] = target
        stored = await self.store.load(needed_pids(events, aliases),
                                       side_reads(events, aliases, hooks))
        return aliases, stored, hooks

    async def _commit_overlapping(self, outcome: Outcome, upto: Mapping[int, int],
                                  next_part: Ahead) -> CommitResult:
        """Commit `outcome` (one server, every phase) and plan `ahead` while Redis runs it."""
        ahead = await next_part() if callable(next_part) else next_part
        if not ahead:
            return await self.store.commit(outcome.writes, outcome.tables, upto, Phase.ALL)
        read = None
        if all(p in self.fences.held for p in _upto(ahead)):
            try:
                if self.prepare is not None:
                    await self.prepare(ahead)
                read = await self._read(ahead, outcome)
            except Exception as exc:  # the commit below meets it again, or it was the batch's
                log.debug("could not read ahead (%r): the next batch is read after this one", exc)
        finish, blobs = await self.store.start_commit(outcome.writes, outcome.tables, upto)
        if read is not None:
            try:
                self._ahead = _Ahead(ahead, self._plan_ahead(ahead, outcome, blobs, *read))
            except Exception as exc:  # planned again after this commit, raised there if it must
                log.debug("could not plan ahead (%r): the next batch is planned again", exc)
                self._ahead = None
        try:
            res = await finish()
        except BaseException:
            self._ahead = None
            raise
        if not res.ok and self._ahead is not None:
            self._ahead = None
            self.dropped_ahead += 1
        return res

    def _plan_ahead(self, ahead: Sequence[Mapping[str, Any]], outcome: Outcome,
                    blobs: Mapping[str, bytes], aliases: Mapping[str, str | None],
                    stored: dict[str, Stored], hooks: Sequence[Hook]) -> Outcome:
        """Plan `ahead` on what Redis holds once `outcome` is committed (the docstring)."""
        for w in outcome.writes:
            for pid, _ in w.deletes:
                if pid in stored:
                    stored[pid] = Stored(erased=stored[pid].erased)
        for w in outcome.writes:
            old = stored.get(w.pid)
            if old is None:
                continue
            # the profile as written, not its blob decoded again: `settle` leaves it what
            # the blob restores (the commit is sent: this outcome's profiles are not read
            # again, a retry reads and plans anew)
            w.profile.settle()
            stored[w.pid] = Stored(blobs[w.pid][:4], w.profile, old.erased,
                                   {**old.side, **{k: dict(v) for k, v in w.side.items()}})
        tables = Tables(marks=self.fences.marks(_upto(ahead)))
        return plan(ahead, aliases, stored, self.cfg, hooks, tables)

    async def _fenced(self, upto: Mapping[int, int]) -> None:
        """A fence refused the commit: find out why, and raise or fix it for a retry."""
        # Redis may have lost writes (or the claim): the shared tables' expiries and sizes are
        # seen to again on their next batch (engine/store/writes.py `Upkeep`)
        self.store.upkeep.forget()
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
