"""The faust app: the worker's process (CLI, lifecycle, timers, producer), and nothing else.

The events and decisions topics are read by one task, `streams.consumer.BulkConsumer` (an
aiokafka consumer of the group that takes whole fetches: faust's per-record stream machinery
costs ~85 µs of CPU per record, aiokafka's bulk fetch ~2). It hands each batch to the `Worker`
(streams/worker.py: decode, apply until done) and commits the offsets only after that. If
Redis is down the worker waits and retries the same batch: nothing is committed that was not
applied. The timers report the worker's measurements and snapshot its per-partition models;
the producer sends what the hooks emit (segment joins and leaves).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

import faust

from engine.settings import Settings
from engine.store.writes import Emit
from streams.consumer import BulkConsumer
from streams.metrics import WorkerMeter
from streams.worker import Worker

log = logging.getLogger("kairos.worker")


#: The worker allocates many short-lived objects per event while holding large, long-lived
#: state (the per-partition CF models): with CPython's default thresholds the collector's full
#: passes over that state cost more than the events themselves (measured in-process: 93 -> 36 µs
#: per one-event record with the profile alone). Young objects are collected 70x less often;
#: what exists at start-up is frozen out of the collector's passes.
GC_THRESHOLDS = (50_000, 50, 100)


class Emits:
    """The worker's emits (segment joins and leaves), sent after the commit that made them
    and acknowledged later: `__call__` hands them to the producer in commit order, `acked` waits
    for their acknowledgements. The consumer calls `acked` before it commits offsets and when
    it lets partitions go, and a call waits when `MAX_UNACKED` are outstanding. Waiting after
    every commit put a broker round trip (linger + acks) into each of the worker's cycles: in
    the soak at 1,000 events/s most cycles had a join or a leave to send. A send that fails
    is logged and counted in `meter.emits_lost_total` (the commit that made it stands, as when
    the worker dies between its commit and the acknowledgement)."""

    MAX_UNACKED = 10_000

    def __init__(self, app: faust.App, meter: WorkerMeter) -> None:
        self.app = app
        self.meter = meter
        self._unacked: list[asyncio.Future[Any]] = []

    async def __call__(self, items: Sequence[Emit]) -> None:
        send = self.app.producer.send
        self._unacked += [await send(item.topic, item.key, item.value, partition=None,
                                     timestamp=None, headers=None) for item in items]
        if len(self._unacked) >= self.MAX_UNACKED:
            await self.acked()

    async def acked(self) -> None:
        """Wait for every emit sent so far to be acknowledged (or to fail: logged, counted)."""
        if not self._unacked:
            return
        futures, self._unacked = self._unacked, []
        failed = [r for r in await asyncio.gather(*futures, return_exceptions=True)
                  if isinstance(r, BaseException)]
        if failed:
            self.meter.emits_lost_total += len(failed)
            log.warning("%d segment events could not be sent: %s", len(failed), failed[0])


def create_app(settings: Settings, bootstrap: str, redis_url: str) -> faust.App:
    (settings.var_dir / "faust").mkdir(parents=True, exist_ok=True)
    gc.set_threshold(*GC_THRESHOLDS)
    app = faust.App(
        f"{settings.group_id}-app",  # faust's own group subscribes to nothing
        broker=[f"kafka://{b}" for b in bootstrap.split(",")],
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        topic_replication_factor=1,
        # faust's own consumer (its leader topic only) joins its group before the app's tasks
        # start: after a crash it waits for the dead member's session like ours does
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.heartbeat_interval_ms / 1000,
        producer_linger_ms=settings.producer_linger_ms,
        datadir=str(settings.var_dir / "faust"),
        store="memory://",
    )

    meter = WorkerMeter()
    emit = Emits(app, meter)
    worker = Worker(settings, redis_url, f"{socket.gethostname()}:{os.getpid()}", emit,
                    acked=emit.acked, meter=meter)
    consumer = BulkConsumer(settings, bootstrap, worker)

    @app.task
    async def consume() -> None:
        await worker.applier()
        gc.freeze()
        await consumer.run()

    @app.timer(1.0)
    async def report() -> None:
        if worker.live is not None:
            await worker.report(consumer.lag())

    @app.timer(settings.cf_snapshot_s)
    async def snapshot_models() -> None:
        await worker.snapshot_models()

    @app.on_before_shutdown.connect
    async def models_at_shutdown(sender: Any, **kwargs: Any) -> None:
        """A clean stop (SIGTERM, Ctrl-C): finish the batch, commit, keep what was learnt."""
        await consumer.stop()
        n = await worker.snapshot_models(" at shutdown")
        if n is not None:
            log.info("snapshotted %s partition model(s) at shutdown", n)

    app.conf.kairos_worker_id = worker.worker_id  # type: ignore[attr-defined]
    app.conf.kairos_consumer = consumer  # type: ignore[attr-defined]
    return app
