"""`run(coro)`: asyncio.run in a thread of its own, for unit tests of async code.

In one pytest session with the browser tests, Playwright's sync API keeps an event loop
running in the main thread until the session ends (its browser is a session fixture), and
`asyncio.run` refuses to start under a running loop; a thread has none."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
