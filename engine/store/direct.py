"""One read-only Lua script called on one multiplexed Redis connection: the hot path's read.

redis-py's pool and its asyncio connection (a lock, connection accounting, event hooks, a
StreamReader and a chain of coroutines for each reply) cost several times the round trip itself
at the rates a decision endpoint serves: measured (uvloop, 16 calls in flight), an EVALSHA
through redis-py's connections took ~31 µs of CPU, the same call here ~6 µs. `ScriptCaller`
keeps one connection per process, made and greeted by the client's pool (so with its address,
timeouts, TLS, credentials and database), then read by its own protocol (hiredis' reader on
the transport): every call appends its command to the connection and waits for its reply, in
order, as Redis answers them (a pipeline that many callers share).

- Commands issued in the same turn of the event loop go out in one write, and their replies
  usually come back in one read: under load one system call serves many decisions.
- Replies are matched to calls in order. A call that stops waiting (its deadline passed, its
  task was cancelled) leaves its place in the queue: its reply is read and dropped, so a reply
  can never reach another caller and the connection stays usable.
- A connection the server closed (a restart, an idle timeout, CLIENT KILL) fails the calls
  waiting on it; each is made once more on a fresh connection. That is only safe because the
  script only reads (`ScriptCaller` is for read-only scripts).
- NOSCRIPT (a restarted or flushed server) loads the script and calls it once more.
- `timeout` bounds a call: past it the call raises TimeoutError (no task nor `wait_for` per
  call: one timer). When more than `max_pending` calls wait on one connection (a hung server),
  new calls fail at once rather than queue without bound.

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


class _Lost(RedisConnectionError):
    """The connection closed while the call waited for its reply (it may be made again)."""


class _Mux(asyncio.Protocol):
    """The protocol of one connection: commands written in order, replies matched in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.out: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.closed = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:  # not Redis speaking: nothing is in step
                self._fail(RedisConnectionError(f"protocol error: {exc}"))
                if self.transport is not None:
                    self.transport.close()
                return
            if reply is False:
                return
            if not waiting:  # a reply nobody asked for: out of step
                self._fail(RedisConnectionError("unexpected reply"))
                if self.transport is not None:
                    self.transport.close()
                return
            fut = waiting.popleft()
            if not fut.done():
                if isinstance(reply, hiredis.ReplyError):
                    text = str(reply)
                    fut.set_exception(NoScriptError(text) if text.startswith("NOSCRIPT")
                                      else ResponseError(text))
                else:
                    fut.set_result(reply)

    def eof_received(self) -> bool:
        self._fail(_Lost("the server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(_Lost(f"connection lost: {exc}" if exc else "connection closed"))

    # -- calls
    def _fail(self, exc: Exception) -> None:
        self.closed = True
        self.out.clear()
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(exc)

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        fut = self.loop.create_future()
        self.waiting.append(fut)
        if not self.out:
            self.loop.call_soon(self._flush)
        self.out.append(packed)
        return fut

    def _flush(self) -> None:
        if self.out and not self.closed and self.transport is not None:
            data = self.out[0] if len(self.out) == 1 else b"".join(self.out)
            self.out.clear()
            self.transport.write(data)


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class ScriptCaller:
    def __init__(self, redis: Any, source: str, max_pending: int = 10_000) -> None:
        self.redis = redis
        self.pool = redis.connection_pool
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.max_pending = max_pending
        self._conn: Any = None  # redis-py's Connection (it greeted the server; it closes it)
        self._mux: _Mux | None = None
        self._connecting: asyncio.Future[_Mux] | None = None
        self._closed = False
        self.open = 0  # connections made and not closed

    async def _connection(self) -> _Mux:
        mux = self._mux
        if mux is not None and not mux.closed:
            return mux
        if self._closed:
            raise RedisConnectionError("the script caller is closed")
        if self._connecting is None:  # one connect at a time: the others wait for it
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done():
                self._connecting = None

    async def _connect(self) -> _Mux:
        if self._conn is not None:  # the previous one, lost
            self._drop()
        conn = self.pool.make_connection()
        await conn.connect()  # address, TLS, AUTH, SELECT, as the client's pool does
        transport = conn._writer.transport  # redis-py keeps its stream writer there
        mux = _Mux(asyncio.get_running_loop())
        mux.transport = transport
        transport.set_protocol(mux)  # from here on this protocol reads the replies
        if self._closed:
            _close(conn)
            raise RedisConnectionError("the script caller is closed")
        self._conn, self._mux = conn, mux
        self.open += 1
        return mux

    def _drop(self) -> None:
        conn, self._conn, self._mux = self._conn, None, None
        if conn is not None:
            self.open -= 1
            _close(conn)

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any],
                       timeout: float | None = None) -> Any:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        packed = hiredis.pack_command(("EVALSHA", self.sha, len(keys), *keys, *args))
        mux = self._mux
        if mux is not None and not mux.closed and len(mux.waiting) < self.max_pending:
            # the usual case, in this frame: what `_call` and `_once` do on an open connection
            fut = mux.send(packed)
            timer = None if deadline is None else loop.call_at(deadline, _expire, fut)
            try:
                return await fut
            except _Lost:  # the server had closed it: once more, on a new one (as `_call`)
                pass
            except NoScriptError:
                await self._load(deadline)
                return await self._call(packed, deadline)
            finally:
                if timer is not None:
                    timer.cancel()
            try:
                return await self._once(packed, deadline)
            except NoScriptError:
                await self._load(deadline)
                return await self._call(packed, deadline)
        try:
            return await self._call(packed, deadline)
        except NoScriptError:
            await self._load(deadline)
            return await self._call(packed, deadline)

    async def _load(self, deadline: float | None) -> None:
        load = self.redis.script_load(self.source)
        if deadline is None:
            await load
        else:
            await asyncio.wait_for(load, max(deadline - asyncio.get_running_loop().time(), 0))

    async def _call(self, packed: bytes, deadline: float | None) -> Any:
        try:
            return await self._once(packed, deadline)
        except _Lost:
            pass
        # the connection had been closed by the server (a restart, an idle timeout): once
        # more, on a new one
        return await self._once(packed, deadline)

    async def _once(self, packed: bytes, deadline: float | None) -> Any:
        loop = asyncio.get_running_loop()
        mux = self._mux
        if mux is None or mux.closed:
            if deadline is None:
                mux = await self._connection()
            else:
                mux = await asyncio.wait_for(self._connection(), max(deadline - loop.time(), 0))
        if len(mux.waiting) >= self.max_pending:
            raise RedisConnectionError(f"{self.max_pending} calls already wait for Redis")
        fut = mux.send(packed)
        if deadline is None:
            return await fut
        timer = loop.call_at(deadline, _expire, fut)
        try:
            return await fut
        finally:
            timer.cancel()

    async def warm(self) -> None:
        """Load the script and open the connection ahead of the first call (at start-up: the
        first decisions should not pay a connect and a NOSCRIPT round trip)."""
        await self.redis.script_load(self.source)
        await self._connection()

    def sockname(self) -> Any:
        """The local address of the open connection (None when there is none)."""
        mux = self._mux
        if mux is None or mux.closed or mux.transport is None:
            return None
        return mux.transport.get_extra_info("sockname")

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            with contextlib.suppress(BaseException):
                await self._connecting
        self._drop()


def _close(conn: Any) -> None:
    """Close a connection this module took over (its stream reader no longer hears the
    transport, so redis-py's own `disconnect` would wait for a close it never sees)."""
    writer = conn._writer
    conn._reader = conn._writer = None
    if writer is not None:
        with contextlib.suppress(Exception):
            writer.transport.close()
