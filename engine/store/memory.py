"""How full Redis is, and whether it still takes a write: one INFO and one tiny write.

The write (`SET kx:probe 1 PX 10000`, keys.WRITE_PROBE) is the truth the stream worker meets:
with the `noeviction` policy a full Redis answers it with an OOM error.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import OutOfMemoryError, ResponseError

from engine.logic.memory import MemoryState
from engine.store import keys


def is_oom(exc: BaseException) -> bool:
    """Redis refused a write because it is out of memory (maxmemory reached)."""
    return isinstance(exc, OutOfMemoryError) or (
        isinstance(exc, ResponseError) and ("OOM" in str(exc).split(" ", 1)[0]
                                            or " OOM " in f" {exc} "))  # inside a script


class MemoryProbe:
    def __init__(self, redis: Any) -> None:
        self.r = redis

    async def read(self) -> MemoryState:
        """Raises what the client raises when Redis is unreachable."""
        info = await self.r.info("memory")
        try:
            await self.r.set(keys.WRITE_PROBE, b"1", px=10_000)
            writable = True
        except ResponseError as exc:
            if not is_oom(exc):
                raise
            writable = False
        return MemoryState(int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)),
                           str(info.get("maxmemory_policy", "")), writable)
