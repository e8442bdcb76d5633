"""The faust app: its topics, agents and timers, and nothing else.

The agents are thin: take a batch (small when caught up, up to `batch_max` when behind), hand
it to the `Worker` (streams/worker.py: decode, apply until done), and only then let faust ack
the offsets (faust's `take_events` acks a batch when the loop asks for the next one). If Redis
is down the worker waits and retries the same batch: nothing is acked that was not applied.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import faust

from engine.settings import Settings
from engine.store.writes import Emit
from streams.plan import DECISIONS_MARK_BASE
from streams.worker import Worker

log = logging.getLogger("kairos.worker")


def _cap_fetch_wait(wait_ms: int) -> None:
    """faust hard-codes its consumer's fetch_max_wait_ms to 1500. Measured with
    bench/freshness.py at 1,000 events/s over 4 partitions, records waited ~1.5 s for it
    (p50 1.5 s, p99 2.6 s, lag 0, worker half idle), so set our own right after faust makes
    the consumer (aiokafka reads it when the consumer starts)."""
    from faust.transport.drivers import aiokafka as driver

    cls = driver.AIOKafkaConsumerThread
    original = getattr(cls, "_kairos_original_create", None) or cls._create_worker_consumer

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = wait_ms
        return consumer

    cls._kairos_original_create = original  # type: ignore[attr-defined]
    cls._create_worker_consumer = create  # type: ignore[method-assign]


def create_app(settings: Settings, bootstrap: str, redis_url: str) -> faust.App:
    (settings.var_dir / "faust").mkdir(parents=True, exist_ok=True)
    _cap_fetch_wait(settings.fetch_max_wait_ms)
    app = faust.App(
        settings.group_id,
        broker=[f"kafka://{b}" for b in bootstrap.split(",")],
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.heartbeat_interval_ms / 1000,
        broker_commit_interval=0.5,
        broker_max_poll_records=settings.batch_max,
        stream_buffer_maxsize=max(4096, settings.batch_max * 4),
        stream_wait_empty=False,
        producer_linger_ms=settings.producer_linger_ms,
        datadir=str(settings.var_dir / "faust"),
        store="memory://",
    )
    topic = app.topic(settings.events_topic, key_type=bytes, value_type=bytes,
                      partitions=settings.partitions)

    async def emit(items: Sequence[Emit]) -> None:
        # send everything, then wait for the acks together: one round trip, not one per item
        futures = [await app.producer.send(item.topic, item.key, item.value, partition=None,
                                           timestamp=None, headers=None) for item in items]
        await asyncio.gather(*futures)

    worker = Worker(settings, redis_url, f"{socket.gethostname()}:{os.getpid()}", emit)

    @app.agent(topic, name="apply-events")
    async def apply_events(stream: faust.StreamT) -> None:
        await worker.applier()
        async for batch in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            res = await worker.apply(batch, 0, "batch")
            now = time.time()
            worker.meter.record(res.applied, res.duplicates,
                                [now - e.message.timestamp for e in batch])
            for e in batch:
                worker.meter.offsets[(e.message.tp.topic, e.message.tp.partition)] = e.message.offset
            await asyncio.sleep(0)

    decisions = app.topic(settings.decisions_topic, key_type=bytes, value_type=bytes,
                          partitions=settings.partitions)

    @app.agent(decisions, name="apply-decisions")
    async def apply_decisions(stream: faust.StreamT) -> None:
        """Decision records (events of type `decision`) through the same Applier: they count
        as campaign assignments (see streams/hooks/decisions.py). Their redelivery marks live
        apart from the events topic's (partition + DECISIONS_MARK_BASE)."""
        await worker.applier()
        async for batch in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            await worker.apply(batch, DECISIONS_MARK_BASE, "decisions")

    @app.timer(1.0)
    async def report() -> None:
        if worker.live is not None:
            await worker.report(_lag(app, worker.meter.offsets))

    @app.timer(settings.cf_snapshot_s)
    async def snapshot_models() -> None:
        await worker.snapshot_models()

    @app.on_partitions_revoked.connect
    async def models_of_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        await worker.revoked({tp.partition for tp in revoked if tp.topic == settings.events_topic})

    @app.on_before_shutdown.connect
    async def models_at_shutdown(sender: Any, **kwargs: Any) -> None:
        """A clean stop (SIGTERM, Ctrl-C): the consumer has stopped; keep what was learnt."""
        n = await worker.snapshot_models(" at shutdown")
        if n is not None:
            log.info("snapshotted %s partition model(s) at shutdown", n)

    app.conf.kairos_worker_id = worker.worker_id  # type: ignore[attr-defined]
    return app


def _lag(app: faust.App, offsets: dict[tuple[str, int], int]) -> int:
    """Records behind the high-water marks of the partitions this worker holds (and forget
    the offsets of partitions it no longer holds)."""
    lag = 0
    for (t, p), off in list(offsets.items()):
        tp = next((x for x in app.consumer.assignment() if x.topic == t and x.partition == p), None)
        if tp is None:
            offsets.pop((t, p), None)
            continue
        hw = app.consumer.highwater(tp)
        if hw is not None:
            lag += max(0, hw - off - 1)
    return lag
