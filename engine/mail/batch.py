"""Group commit: callers that arrive while a batch is being written wait, and go together in
the next one.

    commit = GroupCommit(write_many)          # write_many(list[item]) -> list[result], in order
    results = await commit.submit([item, ...])

Used where a per-message round trip or fsync was the cost: the outbox's Maildir writes (one
thread hop and one shared journal commit per batch) and the mailer's "sent" updates (one
compare-and-set statement per batch). Nothing waits for a batch to fill: the first caller
starts a write at once, and whoever came meanwhile goes in the next, so a lone message is
never delayed and a busy stream is batched by itself (`linger_s` trades that for bigger
batches: each batch waits that long for more, unless it is full). A failed write fails every caller of
that batch with its exception, the next batch is tried afresh.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(self, write: Callable[[list[T]], Awaitable[Sequence[R]]], max_batch: int = 256,
                 linger_s: float = 0.0) -> None:
        self.write = write
        self.max_batch = max_batch
        self.linger_s = linger_s  # > 0: a batch waits this long for more (unless it is full)
        self._pending: list[tuple[list[T], asyncio.Future[list[R]]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # batches written
        self.items = 0  # items written in them

    async def submit(self, items: list[T]) -> list[R]:
        """Write ``items`` (in the next batch); their results, in order."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[R]] = loop.create_future()
        self._pending.append((items, fut))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return await fut

    async def _run(self) -> None:
        while self._pending:
            if self.linger_s > 0 and sum(len(items) for items, _ in self._pending) < self.max_batch:
                await asyncio.sleep(self.linger_s)
            take, size = 0, 0
            while take < len(self._pending) and (take == 0 or size + len(self._pending[take][0]) <= self.max_batch):
                size += len(self._pending[take][0])
                take += 1
            batch, self._pending = self._pending[:take], self._pending[take:]
            try:
                results = list(await self.write([x for items, _ in batch for x in items]))
            except Exception as exc:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.batches += 1
            self.items += size
            at = 0
            for items, fut in batch:
                if not fut.done():
                    fut.set_result(results[at : at + len(items)])
                at += len(items)

    async def drain(self) -> None:
        """Wait for the batches in flight."""
        while self._task is not None and not self._task.done():
            await asyncio.wait([self._task])
