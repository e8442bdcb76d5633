"""The Kafka edge of the API: append accepted events to the `events` topic.

`append` returns only after the broker has acknowledged every record; when the broker
cannot be reached within the deadline it raises `LogUnavailable` and the API answers 503
(the client may resend: the stream dedupes by `event_id`). Events of one visitor in one
request travel as one record keyed by the visitor, which keeps them ordered on one
partition and costs one produce per visitor instead of one per event.

`DecisionLog` buffers the decision records of the API's decisions and produces them to the
`decisions` topic every 50 ms, one Kafka record per partition (the stream counts them as
campaign assignments).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner

from engine.logic.events import Event, encode_events

log = logging.getLogger("kairos.ingest")
decisions_log = logging.getLogger("kairos.decide")
_enc = msgspec.msgpack.Encoder()
# the producer's own default (what a record keyed by the visitor gets on the events topic)
_PARTITIONER = DefaultPartitioner()


class LogUnavailable(Exception):
    """The broker did not acknowledge in time."""


async def ensure_topics(bootstrap: str, topics: dict[str, int], timeout_s: float = 30.0) -> None:
    """Create the topics with their partition counts if they do not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        todo = [NewTopic(name, num_partitions=n, replication_factor=1)
                for name, n in topics.items() if name not in existing]
        if todo:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(todo)
    finally:
        await admin.close()


def group_by_visitor(events: Sequence[Event]) -> list[tuple[bytes, bytes]]:
    """(key, value) records: one per visitor, events in request order."""
    groups: dict[str, list[Event]] = {}
    for ev in events:
        groups.setdefault(ev.visitor_id, []).append(ev)
    return [(vid.encode(), encode_events(evs)) for vid, evs in groups.items()]


class EventLog:
    def __init__(self, bootstrap: str, topic: str, *, linger_ms: int = 1, timeout_s: float = 5.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.linger_ms = linger_ms
        self.timeout_s = timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._starting: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        # acks=all with idempotence: a broker failover or a retried send neither loses nor
        # duplicates a record (the broker drops a resend by producer id and sequence)
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            linger_ms=self.linger_ms,
            max_batch_size=256 * 1024,
            request_timeout_ms=int(self.timeout_s * 1000),
            enable_idempotence=True,
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def producer(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        if self._starting is None or self._starting.done():
            self._starting = asyncio.create_task(self._start())
        try:
            await asyncio.wait_for(asyncio.shield(self._starting), self.timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise LogUnavailable(f"broker unreachable: {exc or type(exc).__name__}") from None
        assert self._producer is not None
        return self._producer

    async def append(self, records: Sequence[tuple[bytes, bytes]], topic: str | None = None
                     ) -> None:
        """Produce to the events topic (or `topic`) and wait for every acknowledgement."""
        producer = await self.producer()

        async def send_all() -> None:
            futures = [await producer.send(topic or self.topic, value, key=key)
                       for key, value in records]
            await asyncio.gather(*futures)

        try:
            await asyncio.wait_for(send_all(), self.timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise LogUnavailable(f"broker did not acknowledge: {exc or type(exc).__name__}") from None

    async def ready(self) -> bool:
        try:
            producer = await self.producer()
            return bool(await asyncio.wait_for(producer.client.fetch_all_metadata(), 2.0))
        except Exception:
            return False

    async def close(self) -> None:
        if self._starting and not self._starting.done():
            self._starting.cancel()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


class DecisionLog:
    """Decision records on the `decisions` topic, produced in batches every `flush_s`.

    One Kafka record per partition per flush, holding the decision records of every request
    that partition's visitors made since the last one: aiokafka costs ~10 µs of CPU for each
    record sent and ~0.5 ms for each produce round trip (bench/decide.py's notes), more than
    deciding. The partition of each visitor is the one the producer would give a record keyed
    by the visitor (aiokafka's `DefaultPartitioner`, murmur2 of the key), as the events topic
    has it: the worker that owns a visitor's events owns its decisions. The stream and the
    learner read a record as a list of events, whoever they are for (streams/batch.py).

    A failed produce is logged and dropped (the decisions stand; only their counts are lost);
    `close` sends what is still buffered.
    """

    #: at most this many decision records in one Kafka record (~250 B each, more with a
    #: contextual policy's features: well under the producer's 1 MB request size)
    MAX_PER_RECORD = 500

    def __init__(self, log: EventLog, topic: str, flush_s: float = 0.05) -> None:
        self.log = log
        self.topic = topic
        self.flush_s = flush_s
        self._buffer: list[tuple[bytes, list[dict[str, Any]]]] = []
        self._pending: set[asyncio.Task[None]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._partition_of: dict[bytes, int] = {}  # visitor key -> partition (bounded)
        self._partitions: list[int] = []  # the topic's, as `_partition_of` was computed for

    def add(self, key: bytes, records: list[dict[str, Any]]) -> None:
        """Queue one request's decision records (of the visitor `key`); they are produced
        with the others within `flush_s`."""
        self._buffer.append((key, records))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(self.flush_s))
            self._pending.add(self._flusher)
            self._flusher.add_done_callback(self._pending.discard)

    def _partition(self, key: bytes, partitions: Sequence[int]) -> int:
        got = self._partition_of.get(key)
        if got is None:
            got = _PARTITIONER(key, partitions, partitions)
            if len(self._partition_of) >= 100_000:
                self._partition_of.clear()
            self._partition_of[key] = got
        return got

    def by_partition(self, batch: Sequence[tuple[bytes, list[dict[str, Any]]]],
                     partitions: Sequence[int]) -> list[tuple[int, bytes]]:
        """(partition, record value) of a batch: each value a msgpack list of events."""
        if list(partitions) != self._partitions:
            self._partition_of.clear()  # the topic has other partitions now
            self._partitions = list(partitions)
        groups: dict[int, list[dict[str, Any]]] = {}
        for key, records in batch:
            groups.setdefault(self._partition(key, partitions), []).extend(records)
        out = []
        step = self.MAX_PER_RECORD
        for part, recs in groups.items():
            out.extend((part, _enc.encode(recs[i:i + step])) for i in range(0, len(recs), step))
        return out

    async def _flush(self, after_s: float) -> None:
        await asyncio.sleep(after_s)
        # records added while a batch is being sent go out in the next turn of this loop
        # (`add` starts no flusher while this one runs: they would otherwise wait for the
        # next decision, however long that takes)
        while self._buffer:
            batch, self._buffer = self._buffer, []
            try:
                producer = await self.log.producer()
                partitions = sorted(await producer.partitions_for(self.topic))
                sent = [await producer.send(self.topic, value, partition=part)
                        for part, value in self.by_partition(batch, partitions)]
                results = await asyncio.gather(*sent, return_exceptions=True)
                failed = [r for r in results if isinstance(r, BaseException)]
                if failed:
                    raise failed[0]
            except Exception as exc:  # the decisions stand; only their counts are lost
                decisions_log.warning("could not log the decision records of %d requests: %s",
                                      len(batch), exc)

    async def close(self) -> None:
        if self._buffer:
            await self._flush(0)
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=2.0)
