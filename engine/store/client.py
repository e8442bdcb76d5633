"""The one place Redis clients are made, and how Kairos calls its scripts.

`KAIROS_REDIS_URL` picks the client: `redis://`, `rediss://` or `unix://` a single server
(redis-py's `Redis`), `redis+cluster://host:port[,host:port…]` a Redis Cluster (redis-py's
`RedisCluster`, which finds the other nodes from the ones given). Every store in
engine/store takes the client made here and asks `is_cluster` where the two differ (a
script whose keys span several slots is split by slot on a cluster).

`Script` runs a Lua file from engine/store/lua by its SHA. On a single server it packs the
command with hiredis (redis-py's own pure-Python packing costs ~1 µs per argument: 12 ms for
the 10,000 keys a batch commit can declare) and sends it on a pooled connection; on a cluster
it goes through redis-py (routed by its keys' slot).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import hiredis
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from engine.store import script

CLUSTER_SCHEME = "redis+cluster://"
SCHEMES = ("redis://", "rediss://", "unix://", CLUSTER_SCHEME)
#: Connections a client keeps at most (per node on a cluster).
MAX_CONNECTIONS = 64
#: Script calls `Script.run_all` keeps in flight on a cluster: redis-py's cluster client
#: refuses a call beyond `MAX_CONNECTIONS` to one node (MaxConnectionsError) instead of waiting
#: for a free connection, so even if every call went to one node, half are left for the
#: client's other users.
CLUSTER_IN_FLIGHT = MAX_CONNECTIONS // 2


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The (host, port) seeds of a `redis+cluster://h:p,h:p` URL."""
    rest = url[len(CLUSTER_SCHEME):].split("/", 1)[0]
    out = []
    for part in rest.split(","):
        part = part.strip()
        if not part:
            continue
        u = urlsplit(f"redis://{part}")
        out.append((u.hostname or "127.0.0.1", u.port or 6379))
    if not out:
        raise ValueError(f"no host:port in {url!r}")
    return out


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEME)


def new_client(url: str, *, timeout: float | None = 5.0,
               max_connections: int = MAX_CONNECTIONS, wait_s: float | None = None) -> Any:
    """An asyncio client for `url` (a `RedisCluster` for `redis+cluster://`). With `wait_s`
    (a single server), a call beyond `max_connections` in flight waits up to `wait_s` for a
    free connection instead of failing at once (MaxConnectionsError): the API, whose requests
    each hold a few connections at a time, so a burst of requests queues instead of erring."""
    if wait_s is not None and not is_cluster_url(url):
        return aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            max_connections=max_connections, health_check_interval=0, timeout=wait_s))
    if is_cluster_url(url):
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in cluster_nodes(url)],
            socket_timeout=timeout, socket_connect_timeout=timeout,
            max_connections=max_connections, health_check_interval=0,
        )
    return aioredis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout,
        max_connections=max_connections, health_check_interval=0,
    )


def new_sync_client(url: str, *, timeout: float | None = 10.0) -> Any:
    """A blocking client for `url` (tests, benchmarks and the CLI)."""
    import redis as sync

    if is_cluster_url(url):
        from redis.cluster import ClusterNode as SyncNode
        from redis.cluster import RedisCluster as SyncCluster

        return SyncCluster(startup_nodes=[SyncNode(h, p) for h, p in cluster_nodes(url)],
                           socket_timeout=timeout, socket_connect_timeout=timeout)
    return sync.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def slot(key: str | bytes) -> int:
    """The Redis Cluster slot of a key (its hash tag's, when it has one)."""
    return int(key_slot(key.encode() if isinstance(key, str) else key))


def by_slot(keys: Iterable[str]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for k in keys:
        out.setdefault(slot(k), []).append(k)
    return out


async def mget(client: Any, keys: Sequence[str]) -> list[Any]:
    """MGET that works on a cluster too (there: one MGET per slot, pipelined by redis-py)."""
    if not keys:
        return []
    if is_cluster(client):
        return list(await client.mget_nonatomic(list(keys)))
    return list(await client.mget(list(keys)))


class Script:
    """A Lua script of engine/store/lua, called by SHA (loaded again when the server lost it)."""

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.text = script(name)
        self.sha = hashlib.sha1(self.text.encode()).hexdigest()
        self.cluster = is_cluster(client)
        self._registered = client.register_script(self.text)

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        if self.cluster:
            return await self._registered(keys=list(keys), args=list(args))
        return await self._packed(keys, args)

    async def load(self) -> None:
        """Load the script on every primary (before calls queued on a pipeline with `on`)."""
        await self.client.script_load(self.text)

    async def run_all(self, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]],
                      concurrency: int = 256) -> list[Any]:
        """Many calls at once (on a cluster each goes to its slot's node: redis-py's cluster
        pipelines refuse scripts), their answers in order; at most `concurrency` in flight,
        on a cluster at most `CLUSTER_IN_FLIGHT` (a batch of 2,000 one-event records is 2,000
        profile calls: more than the connections of a node)."""
        limit = asyncio.Semaphore(min(concurrency, CLUSTER_IN_FLIGHT) if self.cluster
                                  else concurrency)

        async def one(keys: Sequence[Any], args: Sequence[Any]) -> Any:
            async with limit:
                return await self(keys, args)

        return list(await asyncio.gather(*(one(keys, args) for keys, args in calls)))

    async def pipelined(self, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        """Many calls on one connection in one round trip (a single server; on a cluster,
        `run_all`), their answers in order. A script error of one call is raised after every
        answer was read; a server that lost the script gets it again and the calls once more."""
        if self.cluster:
            return await self.run_all(calls)
        return await pipelined_scripts(self.client, [(self, k, a) for k, a in calls])

    async def start(self, keys: Sequence[Any], args: Sequence[Any]
                    ) -> Callable[[], Awaitable[Any]]:
        """Send one call (a single server) and return once the server has all of it; the
        returned coroutine function reads its answer. Between the two the caller may compute
        while the server runs the script (the stream worker plans its next batch then): the
        whole command is flushed to the socket first, since a command still in this process's
        write buffer would wait for the event loop, and the server for it. The answer must be
        read (it releases the connection); a server that lost the script gets it again and the
        call is made once more there."""
        if self.cluster:
            reply = await self(keys, args)

            async def done() -> Any:
                return reply
            return done
        pool = self.client.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(hiredis.pack_command(
                ("EVALSHA", self.sha, len(keys), *keys, *(_arg(a) for a in args))),
                check_health=False)
            await _flushed(conn)
        except BaseException:
            await conn.disconnect()
            await pool.release(conn)
            raise

        async def answer() -> Any:
            try:
                reply = await conn.read_response()
            except redis.exceptions.NoScriptError:
                await pool.release(conn)
                await self.client.script_load(self.text)
                return await self._packed(keys, args)
            except redis.exceptions.ResponseError:
                await pool.release(conn)
                raise  # the script's own error: the connection is fine
            except BaseException:
                await conn.disconnect()
                await pool.release(conn)
                raise
            await pool.release(conn)
            return reply
        return answer

    async def _packed(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        pool = self.client.connection_pool
        cmd = ("EVALSHA", self.sha, len(keys), *keys, *(_arg(a) for a in args))
        for attempt in (0, 1):
            conn = await pool.get_connection()
            try:
                await conn.send_packed_command(hiredis.pack_command(cmd), check_health=False)
                return await conn.read_response()
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                await self.client.script_load(self.text)
            except redis.exceptions.ResponseError:
                raise  # the script's own error: the connection is fine
            except BaseException:
                await conn.disconnect()
                raise
            finally:
                await pool.release(conn)
        raise AssertionError("unreachable")  # pragma: no cover


async def pipelined_scripts(client: Any,
                            calls: Sequence[tuple[Script, Sequence[Any], Sequence[Any]]]) -> list[Any]:
    """Calls of one or more scripts on one connection in one round trip (a single server), their
    answers in order: a request's reads that do not depend on each other cost one connection
    and one wake-up, not one each. A script error of one call is raised after every answer was
    read; a server that lost a script gets the scripts again and the calls once more."""
    if not calls:
        return []
    packed = b"".join(hiredis.pack_command(("EVALSHA", sc.sha, len(k), *k, *(_arg(a) for a in a_)))
                      for sc, k, a_ in calls)
    for attempt in (0, 1):
        pool = client.connection_pool
        conn = await pool.get_connection()
        out: list[Any] = []
        errors: list[BaseException] = []
        try:
            await conn.send_packed_command(packed, check_health=False)
            for _ in calls:
                try:
                    out.append(await conn.read_response())
                except redis.exceptions.ResponseError as exc:  # parsed whole: read on
                    out.append(None)
                    errors.append(exc)
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        if not errors:
            return out
        if attempt or not any(isinstance(e, redis.exceptions.NoScriptError) for e in errors):
            raise errors[0]
        for text in dict.fromkeys(sc.text for sc, _, _ in calls):
            await client.script_load(text)
    raise AssertionError("unreachable")  # pragma: no cover


def _arg(a: Any) -> Any:
    if isinstance(a, bytes | str | int):
        return a
    if isinstance(a, float):
        return repr(a)
    return str(a)


async def _flushed(conn: Any) -> None:
    """Wait until the connection's write buffer is empty (the kernel has the whole command):
    `drain` alone returns below the transport's low-water mark, with up to 16 KiB left."""
    transport = getattr(getattr(conn, "_writer", None), "transport", None)
    if transport is None:
        return
    while transport.get_write_buffer_size() > 0 and not transport.is_closing():
        transport.set_write_buffer_limits(high=0)
        try:
            await conn._writer.drain()
        finally:
            transport.set_write_buffer_limits()
