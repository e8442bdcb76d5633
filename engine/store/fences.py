"""Which partitions a stream worker holds in Redis: its owner epoch and what it applied.

Redis is the record of what has been applied. Per consumer group, each shard of the shared
tables has a fence hash (`keys.fence`) with, for every partition `p` of the topics:

- `e<p>`: the epoch of the partition's owner. A worker that is assigned a partition raises it
  (`claim`) in every shard; every commit names the epoch it holds, and a commit from an older
  epoch (a worker that stalled past its session and came back) is refused, so it writes no
  stale state — to shared tables or anywhere in that call;
- `o<p>`: the offset of the last record whose changes to that shard's tables are in. A batch's
  changes of records at or below it are not applied again (`marks`), so a redelivered batch is
  recognised and skipped without riding on each profile;
- `a<p>` (in the partition's home shard, `keys.home_shard`): the last record applied in full.
  A worker resumes there when Kafka's committed offset is past it (Redis restarted from an AOF
  that lost its last second), and rewinds to it when Redis rolls back under it.

`Fences` is one worker's view: what it claimed, and the offsets it wrote since.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from engine.store import keys
from engine.store.client import Script, is_cluster

NONE = -1  # no offset recorded yet


@dataclass(slots=True)
class Held:
    """One partition as this worker holds it."""

    epoch: int
    applied: int = NONE  # a<p> as claimed / last written
    offsets: dict[int, int] = field(default_factory=dict)  # shard -> o<p>


@dataclass(slots=True)
class FenceState:
    """One partition as Redis has it now (read without claiming)."""

    epoch: int
    applied: int
    offsets: dict[int, int]


def _int(v: Any) -> int:
    if v is None or v == b"" or v == "":
        return NONE
    return int(v)


def mark_str(v: int) -> str:
    return "" if v == NONE else str(v)


class Fences:
    def __init__(self, client: Any, group_id: str) -> None:
        self.r = client
        self.group_id = group_id
        self.cluster = is_cluster(client)
        self.held: dict[int, Held] = {}
        self._claim = Script(client, "claim")
        self.all_keys = [keys.fence(n, group_id) for n in range(keys.SHARDS)]

    def key(self, shard: int) -> str:
        return self.all_keys[shard]

    async def claim(self, partitions: Iterable[int]) -> dict[int, Held]:
        """Take the partitions: raise their epoch above every earlier owner's in every shard,
        and read their offsets."""
        parts = sorted(set(partitions))
        if not parts:
            return {}
        if self.cluster:
            state = await self.state(parts)
            epochs = {p: state[p].epoch + 1 for p in parts}
            replies = []
            for n in range(keys.SHARDS):
                arg = msgpack.packb([[p, epochs[p]] for p in parts])
                replies.append(await self._claim([self.key(n)], [arg]))
            for i, p in enumerate(parts):
                offsets = {n: _int(replies[n][i][2][0]) for n in range(keys.SHARDS)}
                applied = _int(replies[keys.home_shard(p)][i][1])
                self.held[p] = Held(epochs[p], applied, offsets)
        else:
            arg = msgpack.packb([[p, 0] for p in parts])
            reply = await self._claim(self.all_keys, [arg])
            for p, (epoch, applied, offsets) in zip(parts, reply, strict=True):
                self.held[p] = Held(int(epoch), _int(applied),
                                    {n: _int(o) for n, o in enumerate(offsets)})
        return {p: self.held[p] for p in parts}

    async def state(self, partitions: Sequence[int]) -> dict[int, FenceState]:
        """The partitions' epochs and offsets as Redis has them (the highest epoch of any
        shard), without claiming."""
        pipe = self.r.pipeline(transaction=False)
        for n in range(keys.SHARDS):
            fields = [f for p in partitions for f in (f"e{p}", f"o{p}", f"a{p}")]
            pipe.hmget(self.key(n), fields)
        replies = await pipe.execute()
        out: dict[int, FenceState] = {}
        for i, p in enumerate(partitions):
            epoch, offsets = 0, {}
            for n, vals in enumerate(replies):
                e, o = vals[3 * i], vals[3 * i + 1]
                epoch = max(epoch, int(e) if e else 0)
                offsets[n] = _int(o)
            applied = _int(replies[keys.home_shard(p)][3 * i + 2])
            out[p] = FenceState(epoch, applied, offsets)
        return out

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.held.pop(p, None)

    def marks(self, partitions: Iterable[int]) -> dict[int, dict[int, int]]:
        """shard -> partition -> offset already applied there (for `Tables` to skip)."""
        out: dict[int, dict[int, int]] = {}
        for p in partitions:
            h = self.held.get(p)
            if h is None:
                continue
            for n, o in h.offsets.items():
                if o != NONE:
                    out.setdefault(n, {})[p] = o
        return out

    def entries(self, upto: Mapping[int, int], shards: Iterable[int], *, applied: bool
                ) -> list[tuple[int, int, str, str, str, int]]:
        """The fence checks and advances of a commit touching `shards` for the partitions of
        `upto` (partition -> last offset of the batch): (shard, partition, epoch, expected
        offset, new offset, set applied). With `applied`, every partition's home shard is in."""
        out = []
        want = set(shards)
        for p, last in upto.items():
            h = self.held[p]
            sh = want | {keys.home_shard(p)} if applied else want
            for n in sorted(sh):
                cur = h.offsets.get(n, NONE)
                out.append((n, p, str(h.epoch), mark_str(cur), str(max(cur, last)),
                            int(applied and n == keys.home_shard(p))))
        return out

    def advanced(self, entries: Iterable[tuple[int, int, str, str, str, int]]) -> None:
        """The entries of a successful commit: remember the new offsets."""
        for n, p, _, _, new, home in entries:
            h = self.held.get(p)
            if h is not None:
                h.offsets[n] = int(new)
                if home:
                    h.applied = int(new)
