"""Live counters in Redis: one hash per second, merged from every API process and the stream,
and each worker's own measurements.

`kx:s:<second>` (keys.live_second) holds a second's counters with a TTL
(engine.logic.livestats.SECOND_TTL_MS), so memory is bounded by the window, never by the
number of visitors; `kx:workers:<group>` (keys.workers) maps worker id -> JSON of what it
measured about itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from engine.logic.livestats import SECOND_TTL_MS
from engine.store import keys


def _workers(raw: Mapping[bytes, bytes]) -> dict[str, Any]:
    return {k.decode(): orjson.loads(v) for k, v in raw.items()}


class LiveStore:
    def __init__(self, redis: Any, group_id: str) -> None:
        self.r = redis
        self.group_id = group_id

    async def add(self, seconds: Mapping[int, Mapping[str, int]]) -> None:
        """Add finished seconds' counters (one pipeline)."""
        pipe = self.r.pipeline(transaction=False)
        for second, counts in seconds.items():
            key = keys.live_second(second)
            for name, n in counts.items():
                pipe.hincrby(key, name, n)
            pipe.pexpire(key, SECOND_TTL_MS)
        await pipe.execute()

    async def read(self, seconds: Sequence[int]) -> tuple[list[Counter[str]], dict[str, Any]]:
        """The merged counters of each second, and the workers' reports (one pipeline)."""
        pipe = self.r.pipeline(transaction=False)
        for s in seconds:
            pipe.hgetall(keys.live_second(s))
        pipe.hgetall(keys.workers(self.group_id))
        *hashes, workers = await pipe.execute()
        return ([Counter({k.decode(): int(v) for k, v in h.items()}) for h in hashes],
                _workers(workers))

    async def workers(self) -> dict[str, Any]:
        """Worker id -> what it last reported about itself."""
        return _workers(await self.r.hgetall(keys.workers(self.group_id)))

    async def report_worker(self, worker_id: str, measurements: Mapping[str, Any]) -> None:
        await self.r.hset(keys.workers(self.group_id), worker_id, orjson.dumps(measurements))
