"""One batch of records from a topic: decoded into events, then applied until it is done.

`decode_batch` turns faust's events (anything with `.message` having `value`, `tp.partition`,
`offset` and `timestamp`) into the plain event dicts the planner takes, each with its record's
redelivery mark (`_p` partition, `_o` offset, `_t` record time in ms); an unreadable record is
counted and skipped, so it never stalls its partition. `apply_until_done` applies and, while
Redis is unreachable, waits and retries the same batch: faust acks the offsets only after it
returns, so nothing is acked that was not applied. A Redis out of memory (maxmemory with
`noeviction`) is retried the same way: it is logged as such once per episode, and counted
(`WorkerMeter.store_full_retries_total`, `kairos_worker_store_full*` in /metrics).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from redis.exceptions import RedisError

from engine.logic.events import decode_events
from engine.store.memory import is_oom
from streams.metrics import WorkerMeter

log = logging.getLogger("kairos.worker")

T = TypeVar("T")

#: What "Redis is unreachable" looks like (anything else is a bug and stops the agent).
UNAVAILABLE = (OSError, TimeoutError, RedisError)


def decode_batch(batch: Iterable[Any], partition_base: int, meter: WorkerMeter
                 ) -> list[dict[str, Any]]:
    """A batch's events, each with its record's redelivery mark (partition + `partition_base`,
    so that two topics' marks stay apart)."""
    events: list[dict[str, Any]] = []
    for ev in batch:
        msg = ev.message
        try:
            got = decode_events(msg.value)
        except Exception as exc:
            meter.bad_records += 1
            log.error("skipping unreadable record at %s@%s: %s", msg.tp, msg.offset, exc)
            continue
        mark = {"_p": partition_base + msg.tp.partition, "_o": msg.offset,
                "_t": int(msg.timestamp * 1000)}
        for e in got:
            e.update(mark)
        events.extend(got)
    return events


async def apply_until_done(apply: Callable[[Sequence[dict[str, Any]]], Awaitable[T]],
                           events: Sequence[dict[str, Any]], what: str,
                           sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                           meter: WorkerMeter | None = None) -> T:
    """Apply; while Redis is unreachable or out of memory, wait (50 ms, doubling up to 2 s)
    and retry."""
    delay = 0.05
    while True:
        try:
            result = await apply(events)
        except UNAVAILABLE as exc:
            if is_oom(exc):
                if meter is not None:
                    meter.store_full_retries_total += 1
                    if not meter.store_full:
                        log.error("Redis is out of memory (maxmemory reached): the %s waits and "
                                  "is retried, nothing is lost; free memory or raise maxmemory "
                                  "(%s)", what, exc)
                    meter.store_full = True
                log.warning("redis out of memory; retrying the %s in %.2fs", what, delay)
            else:
                log.warning("redis unavailable (%s); retrying the %s in %.2fs", exc, what, delay)
            await sleep(delay)
            delay = min(delay * 2, 2.0)
            continue
        if meter is not None and meter.store_full:
            meter.store_full = False
            log.warning("Redis takes the worker's writes again")
        return result
