"""Model snapshots in Redis: the per-partition models a worker keeps in memory (online CF),
saved so that the worker that owns a partition next resumes from them.

`keys.cf_snapshot(group, partition)` holds a model's bytes (models/reco/cf.py `snapshot()`);
saving also prunes the partition's item-vector hash (`keys.cf_items`) to the model's items.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from engine.store import keys


class ModelSnapshots:
    def __init__(self, redis: Any, group_id: str) -> None:
        self.r = redis
        self.group_id = group_id

    async def load(self, partitions: Sequence[int]) -> list[bytes | None]:
        """The stored snapshot of each partition (None where there is none)."""
        return list(await self.r.mget([keys.cf_snapshot(self.group_id, p) for p in partitions]))

    async def save(self, partition: int, blob: bytes, item_ids: Callable[[], Iterable[str]]
                   ) -> None:
        """Store the snapshot and drop the item vectors of items the model no longer has
        (`item_ids()` is asked after the read of the stored ones: the model may have learnt
        meanwhile)."""
        ikey = keys.cf_items(self.group_id, partition)
        stored = await self.r.hkeys(ikey)
        keep = set(item_ids())
        gone = [k for k in stored if k.decode() not in keep]
        pipe = self.r.pipeline(transaction=False)
        pipe.set(keys.cf_snapshot(self.group_id, partition), blob)
        for i in range(0, len(gone), 1000):
            pipe.hdel(ikey, *gone[i:i + 1000])
        await pipe.execute()  # (also lets the agents run between two partitions' snapshots)
