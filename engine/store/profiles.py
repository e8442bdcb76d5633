"""The Redis edge for profiles, in domain words.

`ProfileStore` reads aliases and profiles for a batch, commits planned writes with
compare-and-set (one server-side script per profile, all in one pipeline), and finds a
profile by visitor or user id for the API. Key formats live in `engine.store.keys`, the
write contract in `engine.store.writes`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

import msgpack
import redis.asyncio as aioredis

from engine.store import keys, script
from engine.store.writes import Op, Stored, Write, coalesce
from models.affinity import Profile

_REV = struct.Struct(">I")


def new_client(url: str, *, timeout: float | None = 5.0, max_connections: int = 64) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout,
        max_connections=max_connections, health_check_interval=0,
    )


def _next_rev(rev: bytes) -> bytes:
    n = _REV.unpack(rev)[0] if rev else 0
    return _REV.pack((n + 1) & 0xFFFFFFFF)


def _arg(a: Any) -> bytes | str:
    return a if isinstance(a, bytes | str) else repr(a)


def _pack_ops(ops: Sequence[Op]) -> bytes:
    """All ops of a write as one msgpack array of [command, key, args...] (strings and
    bytes, as Redis would have received them as separate arguments)."""
    # raw strings, not msgpack's bin type: Lua's cmsgpack predates bin and Lua strings are
    # binary-safe anyway
    return msgpack.packb([[op.command, op.key, *(_arg(a) for a in op.args)] for op in ops],
                         use_bin_type=False)


def decode(blob: bytes | None) -> Stored:
    if not blob:
        return Stored()
    return Stored(bytes(blob[:4]), Profile.restore(bytes(blob[4:])))


class ProfileStore:
    """Profiles, aliases and their atomic commit."""

    def __init__(self, client: aioredis.Redis, ttl_ms: int) -> None:
        self.r = client
        self.ttl_ms = ttl_ms
        self._commit = client.register_script(script("commit_profile"))

    async def aliases(self, visitor_ids: Iterable[str]) -> dict[str, str | None]:
        vids = list(dict.fromkeys(visitor_ids))
        if not vids:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for v in vids:
            pipe.get(keys.alias(v))
        vals = await pipe.execute()
        return {v: (x.decode() if x else None) for v, x in zip(vids, vals, strict=True)}

    async def load(self, pids: Iterable[str]) -> dict[str, Stored]:
        pids = list(pids)
        if not pids:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for pid in pids:
            pipe.get(keys.profile(pid))
        blobs = await pipe.execute()
        return {pid: decode(b) for pid, b in zip(pids, blobs, strict=True)}

    async def commit(self, writes: Sequence[Write]) -> list[bool]:
        """Write each planned profile iff nobody else wrote it since it was read."""
        if not writes:
            return []
        pipe = self.r.pipeline(transaction=False)
        ttl = str(self.ttl_ms)
        for w in writes:
            ks = [keys.profile(w.pid)]
            ops = coalesce(w.ops)
            args: list[bytes | str] = [w.expected, _next_rev(w.expected) + w.profile.snapshot(), ttl,
                                       str(len(w.deletes)), str(len(w.aliases)), str(len(ops))]
            for pid, rev in w.deletes:
                ks.append(keys.profile(pid))
                args.append(rev)
            for vid, target in w.aliases:
                ks.append(keys.alias(vid))
                args.append(target)
            if ops:
                args.append(_pack_ops(ops))
            await self._commit(keys=ks, args=args, client=pipe)
        results = await pipe.execute()
        return [bool(x) for x in results]

    async def find(self, some_id: str) -> tuple[str, Stored] | None:
        """A profile by visitor id (following its alias) or by user id."""
        pipe = self.r.pipeline(transaction=False)
        pipe.get(keys.alias(some_id))
        pipe.get(keys.profile(keys.visitor_pid(some_id)))
        pipe.get(keys.profile(keys.user_pid(some_id)))
        alias, vblob, ublob = await pipe.execute()
        if alias:
            pid = alias.decode()
            blob = await self.r.get(keys.profile(pid))
            if blob:
                return pid, decode(blob)
        if vblob:
            return keys.visitor_pid(some_id), decode(vblob)
        if ublob:
            return keys.user_pid(some_id), decode(ublob)
        return None
