"""The decide read's own connection (engine/store/direct.py) on real Valkey: a reply is never
read by another caller, a connection the server closed is replaced, NOSCRIPT is recovered, a
deadline is kept."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from engine.store.direct import ScriptCaller
from engine.store.profiles import new_client

pytestmark = pytest.mark.integration

# echoes its argument, padded: a long reply, so that a cancellation can land mid-read
ECHO = """
return ARGV[1] .. string.rep('.', tonumber(ARGV[2]))
"""


@pytest.fixture
async def client(redis_server):
    c = new_client(redis_server.url)
    yield c
    await c.aclose()


async def test_cancelled_calls_never_leak_a_reply_to_the_next_caller(client) -> None:
    caller = ScriptCaller(client, ECHO)
    try:
        for n in range(40):
            slow = asyncio.ensure_future(caller(["k"], [f"slow{n}", 2_000_000]))
            for _ in range(n % 8):  # cancelled at a different point of the call each time
                await asyncio.sleep(0)
            slow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slow
            answers = await asyncio.gather(*(caller(["k"], [f"x{n}.{i}", 0]) for i in range(4)))
            assert answers == [f"x{n}.{i}".encode() for i in range(4)]
        assert caller.open == 1
    finally:
        await caller.close()


async def test_a_connection_closed_by_the_server_is_replaced(client) -> None:
    caller = ScriptCaller(client, ECHO)
    try:
        await caller.warm()
        assert await caller(["k"], ["a", 0]) == b"a"
        host, port = caller.sockname()[:2]  # the server closes the caller's connection
        await client.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")
        await asyncio.sleep(0.05)
        assert await caller(["k"], ["b", 0]) == b"b"  # on a new connection
        assert await caller(["k"], ["c", 0]) == b"c"
        # killed while calls wait for their replies: each is made once more
        slow = [asyncio.ensure_future(caller(["k"], [f"s{i}", 3_000_000])) for i in range(4)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        host, port = caller.sockname()[:2]
        await client.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")
        got = await asyncio.gather(*slow)
        assert [g[:2] for g in got] == [f"s{i}".encode() for i in range(4)]
        assert caller.open == 1
    finally:
        await caller.close()


async def test_noscript_loads_the_script_again(client) -> None:
    caller = ScriptCaller(client, ECHO)
    try:
        assert await caller(["k"], ["a", 0]) == b"a"
        await client.script_flush()
        assert await caller(["k"], ["b", 0]) == b"b"
    finally:
        await caller.close()
    assert caller.open == 0


async def test_a_call_past_its_timeout_raises_and_the_next_one_is_answered(client) -> None:
    caller = ScriptCaller(client, ECHO)
    try:
        await caller.warm()
        await client.execute_command("CLIENT", "PAUSE", "300", "ALL")  # answers nothing for 0.3 s
        with pytest.raises(TimeoutError):
            await caller(["k"], ["late", 0], timeout=0.05)
        assert await caller(["k"], ["next", 0], timeout=5) == b"next"  # the late reply dropped
    finally:
        await caller.close()
