"""The learner: the one process that owns every learning campaign's model (`kairos learner`).

It reads the `decisions` topic (what the API decided, with the probability of what it showed),
the `events` topic (clicks, conversions, explicit rewards, goal events) and the `rank` topic
(the Rank/Reward API's decisions, rewards and activations) from every
partition, by manual assignment — not as a member of the stream workers' consumer group, so
the stream worker stays as it is — and hands the records to the pure
`engine.logic.decisions.learning.OfferLearner`, which joins each decision to its rewards within
`reward_window_s` and updates the campaign's bandit once per closed decision.

Ownership and exactly-once counting:

* one learner writes at a time: it holds a lease in Redis (`learner_lease_ms`, renewed every
  third of it) and every write is fenced by it (lua/learner_commit.lua);
* its consumer offsets live in its snapshot, not in Kafka: every `learner_snapshot_s` it
  stores the whole state (the reward join, every model, the offsets) together with what it
  publishes and logs, in one script. A learner killed with SIGKILL restarts from that
  snapshot and re-reads from its offsets, so every reward after them is counted once, and
  none before them again;
* changed models are published every `model_publish_s` as versioned bytes
  (`keys.model` + a version in `keys.model_versions`); API processes reload them in seconds
  (engine/flows/models.py), never on a request's path.

Windows close by the wall clock less `CLOSE_LAG_S` (what the two topics may lag each other),
and only once the backlog present at start-up has been read (a restarted learner does not
close a window before it re-read the reactions behind it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.confighub import ConfigHub, default_hub
from engine.eventlog import ensure_topics
from engine.logic.decisions.learning import OfferLearner
from engine.logic.events import decode_events
from engine.logic.rank import restore_rank_model
from engine.settings import Settings
from engine.store.learning import LearnerStore, LeaseLost, PropensityStore
from engine.store.profiles import new_client
from models.propensity.online import SessionPropensity

log = logging.getLogger("kairos.learner")

CLOSE_LAG_S = 2.0
FETCH_MAX = 5000


def _wall() -> datetime:
    return datetime.now(UTC)


class Learner:
    """One learner process's loop (see the module docstring)."""

    def __init__(self, settings: Settings, redis_url: str, bootstrap: str,
                 wall: Callable[[], datetime] = _wall) -> None:
        self.s = settings
        self.redis_url = redis_url
        self.bootstrap = bootstrap
        self.wall = wall
        self.token = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self.topics = (settings.decisions_topic, settings.events_topic, settings.rank_topic)
        self.lost = False  # the lease went to another learner: write nothing more

    def clock(self) -> datetime:
        return self.wall() - timedelta(seconds=CLOSE_LAG_S)

    def _propensity(self, blob: bytes | None) -> SessionPropensity:
        gap = int(self.s.propensity_session_gap_s * 1000)
        if blob:
            try:
                sp = SessionPropensity.restore(blob)
                sp.gap_ms = gap
                return sp
            except ValueError as exc:
                log.warning("propensity snapshot not readable (%s); starting afresh", exc)
        return SessionPropensity(gap_ms=gap)

    async def _take_lease(self, store: LearnerStore, stop: asyncio.Event) -> bool:
        said = False
        while not stop.is_set():
            if await store.hold(self.token, self.s.learner_lease_ms):
                return True
            if not said:
                log.info("another learner holds the lease; waiting for it")
                said = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        return False

    async def run(self, stop: asyncio.Event) -> None:
        s = self.s
        redis = new_client(self.redis_url, timeout=5.0, max_connections=4)
        store = LearnerStore(redis, s.group_id)
        self.scores = PropensityStore(redis)
        hub = default_hub(s.config_dir, s.config_reload_debounce_ms)
        consumer: AIOKafkaConsumer | None = None
        learner: OfferLearner | None = None
        try:
            if not await self._take_lease(store, stop):
                return
            await hub.start()
            learner = OfferLearner.restore(
                await store.load(), self.clock, timedelta(seconds=s.reward_window_s),
                s.default_reward,
                lambda blob: restore_rank_model(blob, s.rank_apprentice, s.rank_agreement,
                                                s.rank_agreement_window),
                self._propensity if s.propensity else None)
            log.info("learner %s resumes at %s", self.token, learner.offsets or "the beginning")
            with contextlib.suppress(Exception):
                await ensure_topics(self.bootstrap, {t: s.partitions for t in self.topics}, 10.0)
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                        enable_auto_commit=False, auto_offset_reset="earliest",
                                        fetch_max_wait_ms=s.fetch_max_wait_ms,
                                        max_partition_fetch_bytes=4 * 1024 * 1024)
            await consumer.start()
            tps = await self._partitions(consumer, stop)
            consumer.assign(tps)
            log.info("reading %s", ", ".join(f"{t} ({sum(tp.topic == t for tp in tps)} "
                                             "partitions)" for t in self.topics))
            for tp in tps:
                off = learner.offsets.get(f"{tp.topic}:{tp.partition}")
                if off is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, off)
            backlog = {tp: end for tp, end in (await consumer.end_offsets(tps)).items()}
            await self._loop(consumer, store, learner, hub, backlog, stop)
        finally:
            if consumer is not None:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            if learner is not None and not self.lost:
                with contextlib.suppress(Exception):
                    await self._commit(store, learner, snapshot=True)
                    log.info("snapshot at shutdown")
            with contextlib.suppress(Exception):
                await store.release(self.token)
            with contextlib.suppress(Exception):
                await hub.stop()
            await redis.aclose()

    async def _partitions(self, consumer: AIOKafkaConsumer, stop: asyncio.Event
                          ) -> list[TopicPartition]:
        """Every partition of both topics (waiting for topics not created yet)."""
        while True:
            cluster = await consumer._client.fetch_all_metadata()  # aiokafka's metadata call
            parts = {t: sorted(cluster.partitions_for_topic(t) or ()) for t in self.topics}
            if all(parts.values()) or stop.is_set():
                return [TopicPartition(t, p) for t, ps in parts.items() for p in ps]
            log.info("waiting for the topics %s", [t for t, ps in parts.items() if not ps])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async def _loop(self, consumer: AIOKafkaConsumer, store: LearnerStore,
                    learner: OfferLearner, hub: ConfigHub, backlog: dict[TopicPartition, int],
                    stop: asyncio.Event) -> None:
        s = self.s
        config_version = -1
        now = time.monotonic()
        last_publish = last_snapshot = now
        last_lease = -1e9  # renew at once: a slow start-up (load) may have outlived the lease
        snapshot_offsets = dict(learner.offsets)
        caught_up = False
        while not stop.is_set():
            if hub.version != config_version and hub.decisions is not None:
                config_version = hub.version
                learner.configure(hub.decisions)
            batch = await consumer.getmany(timeout_ms=200, max_records=FETCH_MAX)
            for tp, messages in batch.items():
                take = learner.decision if tp.topic == s.decisions_topic else \
                    learner.rank if tp.topic == s.rank_topic else learner.event
                for m in messages:
                    try:
                        records = decode_events(m.value) if m.value is not None else []
                    except Exception as exc:
                        log.error("skipping unreadable record at %s@%s: %s", tp, m.offset, exc)
                        records = []
                    for rec in records:
                        take(rec)
                    learner.seen(tp.topic, tp.partition, m.offset)
            if not caught_up:
                caught_up = all(learner.offsets.get(f"{tp.topic}:{tp.partition}", 0) >= end
                                for tp, end in backlog.items())
                if caught_up:
                    log.info("read the backlog; closing reward windows from now on")
            if caught_up:
                learner.advance()
            now = time.monotonic()
            try:
                scores = learner.take_scores()
                if scores:
                    try:
                        await self.scores.put_many(scores, int(s.propensity_ttl_s * 1000))
                    except BaseException:
                        learner.scores = {**scores, **learner.scores}
                        raise
                if now - last_lease >= s.learner_lease_ms / 3000:
                    if not await store.hold(self.token, s.learner_lease_ms):
                        raise LeaseLost("the lease expired and another learner took it")
                    last_lease = now
                if now - last_snapshot >= s.learner_snapshot_s and (
                        learner.offsets != snapshot_offsets or learner.changed or learner.rows):
                    await self._commit(store, learner, snapshot=True)
                    snapshot_offsets = dict(learner.offsets)
                    last_snapshot = last_publish = now
                elif now - last_publish >= s.model_publish_s and learner.changed:
                    await self._commit(store, learner, snapshot=False)
                    last_publish = now
            except LeaseLost:
                self.lost = True
                raise
            except Exception as exc:  # Redis unavailable: keep learning, commit later
                log.warning("learner commit failed (%s); retrying", exc)

    async def _commit(self, store: LearnerStore, learner: OfferLearner, snapshot: bool) -> None:
        models = learner.take_changed()
        rows = learner.take_rows() if snapshot else {}
        blob = learner.snapshot() if snapshot else None
        try:
            stats = {**learner.counters,
                     **{f"drift:{k}": v for k, v in learner.drift_detections.items()}}
            versions = await store.commit(self.token, models, rows, blob, stats,
                                          self.s.learning_log_max,
                                          int(self.wall().timestamp() * 1000))
        except BaseException:
            learner.changed.update(models)  # publish them next time
            for cid, r in rows.items():
                learner.rows[cid] = r + learner.rows.get(cid, [])
            raise
        if versions:
            log.info("published %s", ", ".join(f"{k} v{v}" for k, v in sorted(versions.items())))


def run(settings: Settings, redis_url: str, bootstrap: str) -> int:
    """`kairos learner`: run until SIGTERM or Ctrl-C (a clean stop snapshots first)."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Learner(settings, redis_url, bootstrap).run(stop)

    try:
        asyncio.run(main())
    except LeaseLost as exc:
        log.error("stopping: %s", exc)
        return 3
    return 0
