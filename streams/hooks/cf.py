"""Hook: online collaborative filtering in the worker, one model per events partition.

Each partition of the events topic has its own `models.reco.cf.OnlineMF` (BPR with river's SGD)
in the worker that owns the partition; a visitor's events all go to one partition (the record
key is the visitor), so the visitor's vector lives in exactly one model. Each applied event is queued for the
profile (`pid`: a visitor, or the known user after an identity merge); the first `finish` of
the batch teaches each partition's model its queued events as one mini-batch
(`OnlineMF.learn_many`: the negatives `learn_one` would draw, the steps taken together in
numpy) and converts the vectors to export once. Once per profile per batch (`finish`) the hook
writes:

- the profile's vector: `keys.cf_visitor(pid)` = uint16 partition + float32 factors, with the
  profile's TTL (a per-visitor op, committed with the profile);
- the vectors of the items the batch changed: `keys.cf_items(group, partition)`, item -> float32
  factors + bias (a shared table in the partition's home shard, committed under its fence: a
  worker that lost the partition cannot overwrite them with its stale model).

The API scores the `cf` ingredient's candidates with them (`models.reco.cf.score_exported`):
one key more in the read it already does, one HMGET beside the catalog read.

Resuming: every `cf_snapshot_s` the worker writes each changed model's snapshot to
`keys.cf_snapshot(group, partition)` and prunes the item hash to the model's items; when it
loses a partition it snapshots that model and drops it, and a clean stop snapshots them all;
the first batch from a partition it does not hold restores the snapshot (`prepare`). What is
learnt between the last snapshot and a crash is lost to this model (the events are applied once
and not replayed to it); a write that conflicts and is planned again takes its learning step
again. Both only nudge an SGD model.

`OnlineCF` is the pure hook (models in memory, no I/O); `CFLifecycle` restores and saves its
models through engine/store/snapshots.py.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from engine.settings import Settings
from engine.store import keys
from engine.store.snapshots import ModelSnapshots
from engine.store.writes import Write
from models.affinity import Profile
from models.reco.cf import OnlineMF
from streams.plan import DECISIONS_MARK_BASE, Hook, HookContext

log = logging.getLogger("kairos.cf")

_HEADER = struct.Struct("<H")


def partition_of(event: Mapping[str, Any]) -> int | None:
    p = event.get("_p")
    return p if isinstance(p, int) and 0 <= p < DECISIONS_MARK_BASE else None


class OnlineCF:
    """The worker's CF models by partition, as a hook with `finish`. Pure: the snapshots are
    read and written by `CFLifecycle`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models: dict[int, OnlineMF] = {}
        self.changed: set[int] = set()  # partitions learnt since their last snapshot
        self._pending: dict[str, tuple[int, set[str]]] = {}  # pid -> (partition, items)
        self._queued: dict[int, list[tuple[Mapping[str, Any], str]]] = {}  # to learn
        self._users: dict[int, dict[str, bytes]] = {}  # exported vectors of the batch
        self._items: dict[int, dict[str, bytes]] = {}
        self._batch = 0  # id() of the batch's Tables those vectors belong to
        self.ttl_ms = settings.profile_ttl_ms

    def new_model(self, partition: int) -> OnlineMF:
        s = self.settings
        return OnlineMF(n_factors=s.cf_factors, max_items=s.cf_max_items,
                        max_visitors=s.cf_max_visitors, seed=partition)

    def model(self, partition: int) -> OnlineMF:
        m = self.models.get(partition)
        if m is None:
            m = self.models[partition] = self.new_model(partition)
        return m

    # -- the hook ------------------------------------------------------------------------
    def __call__(self, event: Mapping[str, Any], profile: Profile, pid: str, out: Write) -> None:
        p = partition_of(event)
        if p is None:
            return
        model = self.model(p)
        if event.get("type") not in model.weights:
            return
        self._queued.setdefault(p, []).append((event, pid))  # learnt at the first finish
        entry = self._pending.get(pid)
        if entry is None or entry[0] != p:
            self._pending[pid] = (p, set())

    def _learn(self, batch: int) -> None:
        """The batch's learning steps, one mini-batch per partition (`OnlineMF.learn_many`),
        then the vectors to export, converted once for the batch (`batch`: its id)."""
        if batch != self._batch:  # (vectors left by a batch whose planning was cut short)
            self._users, self._items, self._batch = {}, {}, batch
        queued, self._queued = self._queued, {}
        pending = self._pending
        for p, pairs in queued.items():
            model = self.models[p]
            changed: set[str] = set()
            pids: set[str] = set()
            for (_, pid), touched in zip(pairs, model.learn_many(pairs), strict=True):
                if not touched:
                    continue
                self.changed.add(p)
                entry = pending.get(pid)
                if entry is not None and entry[0] == p:
                    entry[1].update(touched)
                    changed.update(touched)
                    pids.add(pid)
            if changed:
                self._users.setdefault(p, {}).update(model.export_users(pids))
                self._items.setdefault(p, {}).update(model.export_items(changed))

    def finish(self, event: Mapping[str, Any], profile: Profile, pid: str, out: Write) -> None:
        if self._queued:
            self._learn(id(out.tables))
        got = self._pending.pop(pid, None)
        users, vecs_of = self._users, self._items
        if not self._pending:  # the batch's last profile: drop the batch's exported vectors
            self._users, self._items = {}, {}
        if got is None or not got[1]:
            return
        p, items = got
        user = users.get(p, {}).get(pid)
        if user is not None:
            out.op("SET", keys.cf_visitor(pid), _HEADER.pack(p) + user, "PX", self.ttl_ms)
        ikey = keys.cf_items(self.settings.group_id, p)
        vecs = vecs_of.get(p, {})
        hset = out.tables.hset
        for iid in sorted(items):
            vec = vecs.get(iid)
            if vec is not None:
                hset(ikey, iid, vec)

    # -- the state the lifecycle saves and restores ------------------------------------------
    def unknown_partitions(self, events: Sequence[Mapping[str, Any]]) -> list[int]:
        """The partitions of a batch that have no model here yet."""
        return sorted({p for e in events if (p := partition_of(e)) is not None} - set(self.models))

    def restore(self, partition: int, blob: bytes | None) -> None:
        """Resume a partition's model from its snapshot (a fresh one when there is none, or
        when it cannot be read)."""
        model = None
        if blob:
            try:
                model = OnlineMF.restore(blob)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("online CF: partition %d snapshot unreadable (%s): starting afresh",
                            partition, exc)
        if model is None:
            model = self.new_model(partition)
        else:
            log.info("online CF: partition %d resumed (%d items, %d visitors)", partition,
                     len(model.item_ids()), model.size()["max_visitors"])
        self.models[partition] = model

    def take_due(self, partitions: Iterable[int] | None = None) -> list[int]:
        """The partitions to snapshot now (the changed ones, or those of `partitions` held
        here), no longer marked changed (a batch learnt meanwhile marks them again)."""
        todo = sorted(self.changed if partitions is None else set(partitions) & set(self.models))
        self.changed -= set(todo)
        return todo

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            del self.models[p]
            self.changed.discard(p)


class CFLifecycle:
    """`OnlineCF`'s models to and from Redis (streams/app.py calls these steps)."""

    def __init__(self, cf: OnlineCF, snapshots: ModelSnapshots | None) -> None:
        self.cf = cf
        self.snapshots = snapshots

    async def prepare(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Before a batch: restore the snapshot of every partition seen for the first time."""
        new = self.cf.unknown_partitions(events)
        if not new or self.snapshots is None:
            return
        blobs = await self.snapshots.load(new)
        for p, blob in zip(new, blobs, strict=True):
            self.cf.restore(p, blob)

    async def snapshot(self, partitions: Iterable[int] | None = None) -> int:
        """Write the snapshots of the changed models (or of `partitions`); returns how many.
        Also drops item vectors the model evicted from its Redis hash."""
        if self.snapshots is None:
            return 0
        todo = self.cf.take_due(partitions)  # (before any await)
        for p in todo:
            model = self.cf.models[p]
            blob = model.snapshot()  # ~60-90 ms at the default caps, on the worker's loop
            await self.snapshots.save(p, blob, model.item_ids)
        return len(todo)

    async def revoked(self, partitions: Iterable[int]) -> None:
        """The worker lost these partitions: snapshot their models and forget them."""
        lost = [p for p in partitions if p in self.cf.models]
        if not lost:
            return
        await self.snapshot(lost)
        self.cf.forget(lost)


def setup(ctx: HookContext) -> Callable[[], list[Hook]]:
    cf = OnlineCF(ctx.settings)

    def hooks() -> list[Hook]:
        return [cf]

    hooks.lifecycle = CFLifecycle(cf, ctx.snapshots)  # type: ignore[attr-defined]
    return hooks
