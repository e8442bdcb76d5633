"""One batch of records from a topic: decoded into events, then applied until it is done.

`decode_batch` turns Kafka records (anything with `value`, `partition`, `offset` and
`timestamp` in ms, as aiokafka's `ConsumerRecord`) into the plain event dicts the planner takes,
each with its record's redelivery mark (`_p` partition, `_o` offset, `_t` record time in ms).
Every event is checked against the event spec's types again (a record may have been written to
the topic by something other than the API): an unreadable record, or an event in it that does
not fit the spec, is counted and skipped, so it never stalls its partition.

`apply_until_done` applies and, while Redis is unreachable (or answers that it cannot take
writes now: loading, out of memory, busy), waits and retries the same batch: the consumer
commits the offsets only after it returns, so nothing is committed that was not applied. Any
other failure is a record the engine cannot apply: the batch is split in halves until the
failing records are alone, and those are counted and skipped (`bad_records`) — the worker
never stalls or dies on one record (the halves that apply are committed on their own, and a
half applied twice changes nothing).

A Redis out of memory (maxmemory with `noeviction`) is retried the same way: it is logged as
such once per episode, and counted (`WorkerMeter.store_full_retries_total`,
`kairos_worker_store_full*` in /metrics).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import msgspec
from redis import exceptions as rx

from engine.logic.events import Event, bounds_error
from engine.store.memory import is_oom
from streams.metrics import WorkerMeter

log = logging.getLogger("kairos.worker")

T = TypeVar("T")

#: What "Redis is unreachable" looks like: wait and retry the same batch.
UNAVAILABLE = (OSError, TimeoutError, rx.ConnectionError, rx.TimeoutError)
#: Error replies that mean "not now" rather than "not this batch".
_TRANSIENT_REPLIES = (rx.OutOfMemoryError, rx.ReadOnlyError, rx.ClusterError, rx.TryAgainError,
                      rx.AskError)
_TRANSIENT_CODES = ("LOADING", "OOM", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY",
                    "NOREPLICAS", "MOVED", "ASK")

_typed = msgspec.msgpack.Decoder(list[Event])
_raw = msgspec.msgpack.Decoder(list[Any])


def transient(exc: BaseException) -> bool:
    """Redis cannot take this batch now (down, loading, full, failing over): retry it."""
    if isinstance(exc, UNAVAILABLE + _TRANSIENT_REPLIES):
        return True
    if isinstance(exc, rx.ResponseError):
        text = str(exc)
        # an error of a command inside a script arrives wrapped ("... OOM command not allowed")
        return any(text.startswith(c) or f" {c} " in f" {text} " for c in _TRANSIENT_CODES)
    return isinstance(exc, rx.RedisError | rx.RedisClusterException)


def _events(value: bytes) -> tuple[list[dict[str, Any]], int]:
    """The events of one record that fit the spec, and how many did not."""
    try:
        typed = _typed.decode(value)
        bad = 0
    except msgspec.ValidationError:
        typed, bad = [], 0
        for raw in _raw.decode(value):
            try:
                typed.append(msgspec.convert(raw, Event))
            except (msgspec.ValidationError, TypeError, ValueError, RecursionError):
                bad += 1
    out = []
    for e in typed:
        if isinstance(e.ts, int) and bounds_error(e) is None:
            out.append(msgspec.to_builtins(e))
        else:
            bad += 1  # the API always writes epoch ms, within the spec's bounds
    return out, bad


def decode_batch(batch: Iterable[Any], partition_base: int, meter: WorkerMeter
                 ) -> list[dict[str, Any]]:
    """A batch's events, each with its record's redelivery mark (partition + `partition_base`,
    so that two topics' marks stay apart)."""
    events: list[dict[str, Any]] = []
    for msg in batch:
        try:
            got, bad = _events(msg.value)
        except Exception as exc:  # not msgpack, nested too deep, not an array...
            meter.bad_records += 1
            log.error("skipping unreadable record at %s-%s@%s: %s", getattr(msg, "topic", "?"),
                      msg.partition, msg.offset, exc)
            continue
        if bad:
            meter.bad_events += bad
            log.error("skipping %d event(s) that do not fit the spec at %s-%s@%s", bad,
                      getattr(msg, "topic", "?"), msg.partition, msg.offset)
        mark = {"_p": partition_base + msg.partition, "_o": msg.offset, "_t": int(msg.timestamp)}
        for e in got:
            e.update(mark)
        events.extend(got)
    return events


def say_retry(exc: BaseException, what: str, delay: float, meter: WorkerMeter | None) -> None:
    """Log (and count) a transient Redis failure before `what` is retried in `delay` s: an out
    of memory is named once, loudly, with what to do, and sets the meter's `store_full`."""
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
        log.warning("redis unavailable (%r); retrying the %s in %.2fs", exc, what, delay)


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
        except Exception as exc:
            if not transient(exc):
                raise
            say_retry(exc, what, delay, meter)
            await sleep(delay)
            delay = min(delay * 2, 2.0)
            continue
        if meter is not None and meter.store_full:
            meter.store_full = False
            log.warning("Redis takes the worker's writes again")
        return result


def by_record(events: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The events grouped by their record (partition, offset), in order."""
    out: list[list[dict[str, Any]]] = []
    last: tuple[Any, Any] | None = None
    for e in events:
        mark = (e.get("_p"), e.get("_o"))
        if mark != last or not out:
            out.append([])
            last = mark
        out[-1].append(e)
    return out


async def apply_isolating(apply: Callable[[Sequence[dict[str, Any]]], Awaitable[T]],
                          events: Sequence[dict[str, Any]], what: str,
                          skipped: Callable[[Sequence[dict[str, Any]], BaseException], None],
                          passthrough: tuple[type[BaseException], ...] = (),
                          sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                          meter: WorkerMeter | None = None) -> list[T]:
    """Apply (retrying while Redis is away); when the batch fails for another reason, split it
    by records into halves and apply each the same way, down to single records, which are
    skipped (`skipped(events, exc)`). `passthrough` exceptions are raised as they are.
    Returns the results of the parts that applied."""
    try:
        return [await apply_until_done(apply, events, what, sleep, meter)]
    except passthrough:
        raise
    except Exception as exc:
        records = by_record(events)
        if len(records) <= 1:
            skipped(events, exc)
            return []
        log.warning("the %s failed (%r): applying it in halves to find the record", what, exc)
        mid = len(records) // 2
        first = [e for r in records[:mid] for e in r]
        second = [e for r in records[mid:] for e in r]
        return [*await apply_isolating(apply, first, what, skipped, passthrough, sleep, meter),
                *await apply_isolating(apply, second, what, skipped, passthrough, sleep, meter)]
