"""Model snapshots in Redis: the per-partition models a worker keeps in memory (online CF),
saved so that the worker that owns a partition next resumes from them.

`keys.cf_snapshot(group, partition)` holds a model's bytes (models/reco/cf.py `snapshot()`);
saving also prunes the partition's item-vector hash (`keys.cf_items`) to the model's items.
Both keys are in the partition's home shard with its fence (engine/store/fences.py): a save
from a worker that no longer holds the partition is refused (lua/save_snapshot.lua).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from engine.store import keys
from engine.store.client import Script, mget


class ModelSnapshots:
    def __init__(self, redis: Any, group_id: str,
                 epoch_of: Callable[[int], int | None] = lambda p: None) -> None:
        self.r = redis
        self.group_id = group_id
        self.epoch_of = epoch_of  # the epoch this worker holds a partition at (None: unfenced)
        self._save = Script(redis, "save_snapshot")

    async def load(self, partitions: Sequence[int]) -> list[bytes | None]:
        """The stored snapshot of each partition (None where there is none)."""
        return await mget(self.r, [keys.cf_snapshot(self.group_id, p) for p in partitions])

    async def save(self, partition: int, blob: bytes, item_ids: Callable[[], Iterable[str]]
                   ) -> bool:
        """Store the snapshot and drop the item vectors of items the model no longer has
        (`item_ids()` is asked after the read of the stored ones: the model may have learnt
        meanwhile). False when the partition's fence refused it."""
        ikey = keys.cf_items(self.group_id, partition)
        stored = await self.r.hkeys(ikey)
        keep = set(item_ids())
        gone = [k for k in stored if k.decode() not in keep]
        epoch = self.epoch_of(partition)
        fence = keys.fence(keys.home_shard(partition), self.group_id)
        ok = await self._save([fence, keys.cf_snapshot(self.group_id, partition), ikey],
                              [partition, "" if epoch is None else str(epoch), blob, *gone])
        return bool(ok)
