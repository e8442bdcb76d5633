"""The faust app: the `events` topic and the agent that applies it to Redis.

The agent is thin: take a batch (small when caught up, up to `batch_max` when behind),
decode, hand it to the `Applier`, and only then let faust ack the offsets (faust's
`take_events` acks a batch when the loop asks for the next one). If Redis is down the agent
waits and retries the same batch: nothing is acked that was not applied.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

import faust
import orjson
from redis.exceptions import RedisError

from engine.logic.events import decode_events
from engine.settings import Settings
from engine.store import keys
from engine.store.profiles import ProfileStore, new_client
from streams.applier import Applier
from streams.hooks import setup_hooks
from streams.metrics import WorkerMeter
from streams.plan import DECISIONS_MARK_BASE, Emit

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
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    meter = WorkerMeter()
    state: dict[str, Any] = {}

    async def emit(items: list[Emit]) -> None:
        # send everything, then wait for the acks together: one round trip, not one per item
        futures = [await app.producer.send(item.topic, item.key, item.value, partition=None,
                                           timestamp=None, headers=None) for item in items]
        await asyncio.gather(*futures)

    async def applier() -> Applier:
        lock = state.setdefault("lock", asyncio.Lock())  # two agents share one Applier
        async with lock:
            return await _applier()

    async def _applier() -> Applier:
        if "applier" not in state:
            client = new_client(redis_url)
            state["redis"] = client
            hooks = await setup_hooks(settings, client)
            state["applier"] = Applier(ProfileStore(client, settings.profile_ttl_ms),
                                       settings.affinity, hooks=hooks, emit=emit)
        return state["applier"]

    def decode_batch(batch: Any, partition_base: int) -> list[dict[str, Any]]:
        """A batch's events, each with its record's redelivery mark; an unreadable record is
        counted and skipped (never stalls the partition)."""
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

    async def apply_until_done(ap: Applier, events: list[dict[str, Any]], what: str) -> Any:
        """Apply; while Redis is unreachable, wait and retry the same batch (faust acks the
        offsets only after this returns, so nothing is acked that was not applied)."""
        delay = 0.05
        while True:
            try:
                return await ap.apply(events)
            except (OSError, TimeoutError, RedisError) as exc:
                log.warning("redis unavailable (%s); retrying the %s in %.2fs", exc, what, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    @app.agent(topic, name="apply-events")
    async def apply_events(stream: faust.StreamT) -> None:
        ap = await applier()
        async for batch in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            res = await apply_until_done(ap, decode_batch(batch, 0), "batch")
            now = time.time()
            meter.record(res.applied, res.duplicates, [now - e.message.timestamp for e in batch])
            for e in batch:
                meter.offsets[(e.message.tp.topic, e.message.tp.partition)] = e.message.offset
            await asyncio.sleep(0)

    decisions = app.topic(settings.decisions_topic, key_type=bytes, value_type=bytes,
                          partitions=settings.partitions)

    @app.agent(decisions, name="apply-decisions")
    async def apply_decisions(stream: faust.StreamT) -> None:
        """Decision records (events of type `decision`) through the same Applier: they count
        as campaign assignments (see streams/hooks_decisions.py). Their redelivery marks live
        apart from the events topic's (partition + DECISIONS_MARK_BASE)."""
        ap = await applier()
        async for batch in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            await apply_until_done(ap, decode_batch(batch, DECISIONS_MARK_BASE), "decisions")

    @app.timer(1.0)
    async def report() -> None:
        if "redis" not in state:
            return
        lag = 0
        for (t, p), off in list(meter.offsets.items()):
            tp = next((x for x in app.consumer.assignment() if x.topic == t and x.partition == p), None)
            if tp is None:
                meter.offsets.pop((t, p), None)
                continue
            hw = app.consumer.highwater(tp)
            if hw is not None:
                lag += max(0, hw - off - 1)
        snap = meter.snapshot(lag)
        try:
            await state["redis"].hset(keys.workers(settings.group_id), worker_id, orjson.dumps(snap))
        except Exception as exc:  # pragma: no cover - reporting is best effort
            log.debug("could not report worker stats: %s", exc)

    @app.timer(settings.cf_snapshot_s)
    async def snapshot_models() -> None:
        """Per-partition models (online CF) to Redis, so the next owner of a partition resumes."""
        if "applier" in state:
            try:
                await state["applier"].hooks.snapshot()
            except (OSError, TimeoutError, RedisError) as exc:
                log.warning("could not snapshot the models: %s", exc)

    @app.on_partitions_revoked.connect
    async def models_of_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        if "applier" in state:
            lost = {tp.partition for tp in revoked if tp.topic == settings.events_topic}
            try:
                await state["applier"].hooks.revoked(lost)
            except (OSError, TimeoutError, RedisError) as exc:
                log.warning("could not snapshot the models of revoked partitions: %s", exc)

    @app.on_before_shutdown.connect
    async def models_at_shutdown(sender: Any, **kwargs: Any) -> None:
        """A clean stop (SIGTERM, Ctrl-C): the consumer has stopped; keep what was learnt."""
        if "applier" in state:
            try:
                n = await state["applier"].hooks.snapshot()
                log.info("snapshotted %s partition model(s) at shutdown", n)
            except (OSError, TimeoutError, RedisError) as exc:
                log.warning("could not snapshot the models at shutdown: %s", exc)

    app.conf.kairos_worker_id = worker_id  # type: ignore[attr-defined]
    return app
