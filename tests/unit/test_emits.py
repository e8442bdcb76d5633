"""The worker's emits (streams/app.py `Emits`): handed to the producer at once, in order, and
acknowledged later, with a stand-in for faust's producer (`send` returns a future, as it does
once the record is queued)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from engine.store.writes import Emit
from streams.app import Emits
from streams.metrics import WorkerMeter
from tests.unit import aio


class Producer:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.futures: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, key: bytes, value: bytes, **_: Any) -> asyncio.Future[Any]:
        self.sent.append(value)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut


def emits() -> tuple[Emits, Producer]:
    producer = Producer()
    return Emits(SimpleNamespace(producer=producer), WorkerMeter()), producer  # type: ignore[arg-type]


def test_a_call_queues_in_order_without_waiting_and_acked_waits_for_every_ack() -> None:
    async def go() -> None:
        e, producer = emits()
        await e([Emit("segments", b"v1", b"a"), Emit("segments", b"v1", b"b")])
        await e([Emit("segments", b"v2", b"c")])  # returned with no ack yet
        assert producer.sent == [b"a", b"b", b"c"]
        waiting = asyncio.ensure_future(e.acked())
        await asyncio.sleep(0)
        assert not waiting.done()  # acks outstanding
        for f in producer.futures:
            f.set_result(None)
        await waiting
        assert e.meter.emits_lost_total == 0
        await e.acked()  # nothing left: returns at once

    aio.run(go())


def test_a_failed_send_is_counted_and_the_others_still_acknowledged() -> None:
    async def go() -> None:
        e, producer = emits()
        await e([Emit("segments", b"v", b"x"), Emit("segments", b"v", b"y")])
        producer.futures[0].set_exception(RuntimeError("broker gone"))
        producer.futures[1].set_result(None)
        await e.acked()
        assert e.meter.emits_lost_total == 1

    aio.run(go())


def test_a_call_waits_once_too_many_are_outstanding() -> None:
    async def go() -> None:
        e, producer = emits()
        e.MAX_UNACKED = 3
        await e([Emit("s", b"v", b"1"), Emit("s", b"v", b"2")])
        call = asyncio.ensure_future(e([Emit("s", b"v", b"3")]))
        await asyncio.sleep(0)
        assert not call.done()  # three outstanding: it waits for them
        for f in producer.futures:
            f.set_result(None)
        await call

    aio.run(go())
