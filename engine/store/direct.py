"""One read-only Lua script called on a few dedicated Redis connections: the hot path's read.

redis-py's pool (its lock, connection accounting, metrics and event hooks on every get and
release) costs more than the round trip itself at the rates a decision endpoint serves
(bench/decide_profile.py measured it: an EVALSHA through redis-py's `Script` took half again
the CPU of the same call made here). `ScriptCaller` keeps
its own connections (made by the client's pool, so with its address, timeouts, TLS and
credentials; at most `max_open`, on top of the pool's own bound) and calls the script by its
SHA.

- A connection is used by one call at a time and given back only after its whole reply was
  read; one that fails or is interrupted midway (an error, a timeout, a cancellation) is
  closed, never reused, so a reply can never be read by another caller.
- An idle connection the server closed (a restart, an idle timeout) fails on its next use:
  the call is made once more on a fresh connection. That is only safe because the script
  only reads (`ScriptCaller` is for read-only scripts).
- NOSCRIPT (a restarted or flushed server) loads the script and calls it once more.

For a single server only (`redis.asyncio.Redis`): on a Redis Cluster the client routes each
command by its keys' slot, and the decide read is made of pipelines there
(engine/store/decide_read.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError


class ScriptCaller:
    def __init__(self, redis: Any, source: str, max_open: int = 64, max_idle: int = 32) -> None:
        self.redis = redis
        self.pool = redis.connection_pool
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.max_open = max_open
        self.max_idle = max_idle
        self._idle: deque[Any] = deque()
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        self.open = 0  # connections made and not closed (idle or in use)

    async def _connection(self) -> tuple[Any, bool]:
        """(a connection, whether it was used before)."""
        while self._idle:
            conn = self._idle.pop()
            if conn.is_connected:
                return conn, True
            self.open -= 1
        if self._closed:
            raise RedisConnectionError("the script caller is closed")
        if self.open >= self.max_open:
            raise RedisConnectionError(f"all {self.max_open} connections are busy")
        self.open += 1
        conn = self.pool.make_connection()
        try:
            await conn.connect()
        except BaseException:
            self.open -= 1
            raise
        return conn, False

    def _give_back(self, conn: Any) -> None:
        if len(self._idle) < self.max_idle and not self._closed:
            self._idle.append(conn)
        else:
            self._drop(conn)

    def _drop(self, conn: Any) -> None:
        self.open -= 1
        task = asyncio.ensure_future(_disconnect(conn))
        self._closing.add(task)  # held until done: a task nobody references may be collected
        task.add_done_callback(self._closing.discard)

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            return await self._call(keys, args)
        except NoScriptError:
            await self.redis.script_load(self.source)
            return await self._call(keys, args)

    async def _call(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        conn, reused = await self._connection()
        try:
            return await self._on(conn, keys, args)
        except (RedisConnectionError, OSError):
            if not reused:
                raise
        # the idle connection had been closed by the server (a restart, an idle timeout), and
        # the others idle since then likely were too: drop them, once more on a new one
        self._idle_flush()
        conn, _ = await self._connection()
        return await self._on(conn, keys, args)

    def _idle_flush(self) -> None:
        while self._idle:
            self._drop(self._idle.pop())

    async def _on(self, conn: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            await conn.send_packed_command(
                hiredis.pack_command(("EVALSHA", self.sha, len(keys), *keys, *args)), False)
            reply = await conn.read_response()
        except ResponseError:
            self._give_back(conn)  # an error reply (NOSCRIPT, ...) was read whole: in step
            raise
        except BaseException:
            self._drop(conn)  # interrupted midway: its next reply may be this one's
            raise
        self._give_back(conn)
        return reply

    async def warm(self, connections: int = 2) -> None:
        """Load the script and open a few connections ahead of the first call (at start-up:
        the first decisions should not pay a connect and a NOSCRIPT round trip)."""
        await self.redis.script_load(self.source)
        made = [(await self._connection())[0] for _ in range(connections)]
        for conn in made:
            self._give_back(conn)

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            self.open -= 1
            await _disconnect(self._idle.pop())
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


async def _disconnect(conn: Any) -> None:
    with contextlib.suppress(Exception):
        await conn.disconnect()
