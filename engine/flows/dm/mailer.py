"""The mail worker (`kairos mailer`): takes sends from the `dm.sends` topic and from its
sweep of PostgreSQL, and delivers each exactly once.

    record on dm.sends (or the sweep) -> SendScheduler (partner + global token buckets)
      -> claim (compare-and-set in PostgreSQL) -> suppressed? -> render the pinned version
      (per-recipient recommendations where the template asks) -> SMTP -> classify the answer
      -> sent | retry later (same Message-ID) | hard bounce: suppress | given up: failed
      -> the journey member's next step

Also in this process: journey steps that are due (the sweep makes their sends), journey exits
on web behaviour (a consumer of the `events` topic), and the bounce listener (an SMTP server
for DSNs to the VERP addresses).

Guarantees. The rows are the truth and the topic only wakes the mailer: a record that is
lost (the produce failed, the mailer restarted) is found by the sweep. A send is claimed by a
compare-and-set with a lease and finished by another; a mailer killed between the SMTP
server's "250" and its own update leaves a claim that expires, and the next claim sends it
again with the same Message-ID (the send id's), which mailbox providers and the local outbox
collapse into one message. Each partner's sends are owned by the mailer that holds the
partner's partition of `dm.sends`, so one rate bucket per partner is kept in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from engine.db.control import ControlPlane
from engine.db.dm import DmStore
from engine.eventlog import EventLog
from engine.flows.dm.library import Library
from engine.flows.dm.personalise import Personaliser, partner_of, recipient, values_for
from engine.flows.dm.portal import publish
from engine.flows.dm.tracking import Tracking, member_of, save_member
from engine.logic.dm import journeys as jr
from engine.logic.dm.sending import (
    FAILED,
    HARD_BOUNCE,
    RELAY_ERROR,
    RETRY_SCHEDULE,
    SENT,
    SUPPRESSED,
    Rate,
    SendScheduler,
    TrackingUrls,
    compose_mail,
    retry_at,
)
from engine.logic.dm.templates import RenderError, ValuesError
from engine.mail.batch import GroupCommit
from engine.mail.sender import Relay, SmtpSender
from engine.settings import Settings

log = logging.getLogger("kairos.mailer")


def _now() -> datetime:
    return datetime.now(UTC)


def link_rows(links: Any) -> list[dict[str, Any]]:
    return [{"index": lk.index, "kind": lk.kind, "url": lk.url,
             "item": dict(lk.item) if lk.item else None} for lk in links]


class Mailer:
    def __init__(self, settings: Settings, store: DmStore, control: ControlPlane, library: Library,
                 tracking: Tracking, personaliser: Personaliser, urls: TrackingUrls, verp_key: bytes,
                 sends_log: EventLog, relay: Relay, *, worker_id: str | None = None,
                 catalog: Callable[[list[str]], Awaitable[Mapping[str, Mapping[str, Any]]]] | None = None,
                 clock: Callable[[], datetime] = _now) -> None:
        s = settings
        self.settings = s
        self.store = store
        self.control = control
        self.library = library
        self.tracking = tracking
        self.personaliser = personaliser
        self.urls = urls
        self.verp_key = verp_key
        self.sends_log = sends_log
        self.relay = relay
        self.catalog = catalog  # item id -> catalog record: what a data-item link is about
        self.clock = clock
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        scale = 60.0 / s.dm_rate_window_s
        self.scheduler = SendScheduler(Rate(s.dm_partner_rate * scale), Rate(s.dm_global_rate * scale))
        self.lease = timedelta(seconds=s.dm_claim_lease_s)
        self.schedule = tuple(d * s.dm_retry_scale for d in RETRY_SCHEDULE)
        self._queued: set[str] = set()
        self._wake = asyncio.Event()
        self._senders: asyncio.Queue[SmtpSender] = asyncio.Queue()
        for _ in range(s.dm_senders):
            self._senders.put_nowait(SmtpSender(relay))
        self._tasks: set[asyncio.Task[None]] = set()
        self._owned: set[int] | None = None  # partitions of dm.sends held (None: all)
        self._owner: dict[str, int] = {}  # partner id -> its partition of dm.sends
        self._reply_to: dict[str, asyncio.Future[str]] = {}
        self._in_flight = 0  # sends claimed by this process and not finished yet
        self._active: dict[str, asyncio.Event] = {}  # those sends: set when each is finished
        self._sweeps = 0
        self.max_in_flight = max(8, 8 * s.dm_senders)
        # the outcomes of all senders go to PostgreSQL together, one statement per batch
        # (a batch gathers for FINISH_LINGER_S: the "sent" of a send that was handed over may
        # wait that long, a mailer killed meanwhile sends it again with the same Message-ID)
        self._finished: GroupCommit[dict[str, Any], bool] = GroupCommit(
            self._finish_many, max_batch=500, linger_s=self.FINISH_LINGER_S)
        self.sent = 0

    # -- intake ---------------------------------------------------------------------------------
    def owns(self, partner_id: str) -> bool:
        if self._owned is None:
            return True
        part = self._owner.get(partner_id)
        if part is None:
            from aiokafka.partitioner import DefaultPartitioner

            parts = list(range(self.settings.partitions))
            part = self._owner[partner_id] = DefaultPartitioner()(partner_id.encode(), parts, parts)
        return part in self._owned

    def enqueue(self, send_id: str, partner_id: str) -> None:
        if send_id in self._queued:
            return
        self._queued.add(send_id)
        self.scheduler.add(send_id, partner_id)
        self._wake.set()

    async def consume_sends(self) -> None:
        from aiokafka import AIOKafkaConsumer

        s = self.settings
        consumer = AIOKafkaConsumer(
            s.dm_sends_topic, bootstrap_servers=s.kafka_bootstrap, group_id=f"{s.group_id}-mailer",
            enable_auto_commit=True, auto_commit_interval_ms=500, auto_offset_reset="earliest",
            session_timeout_ms=s.session_timeout_ms, heartbeat_interval_ms=s.heartbeat_interval_ms)
        await consumer.start()
        self._owned = set()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=1000)
                self._owned = {tp.partition for tp in consumer.assignment()}
                for msgs in batch.values():
                    for m in msgs:
                        try:
                            rec = orjson.loads(m.value)
                            self.enqueue(str(rec["send_id"]), str(rec["partner_id"]))
                        except (orjson.JSONDecodeError, KeyError, TypeError):
                            log.warning("bad dm.sends record at offset %s dropped", m.offset)
        finally:
            await consumer.stop()

    FINISH_LINGER_S = 0.02
    # sends are claimed up to this far ahead of their rate-limit slot, so a fast rate claims
    # (and reads recommendations for) a batch at once rather than one send per token
    LOOKAHEAD = timedelta(milliseconds=250)
    SWEEP_BACKLOG = 500  # with more than this queued here, the sweep leaves the sends for later

    async def sweep_once(self) -> None:
        now = self.clock()
        grace = timedelta(seconds=max(5.0, 3 * self.settings.dm_sweep_s))
        # Due retries and expired claims every sweep; queued sends whose record may have been
        # lost when nothing is queued here, or every 10th sweep (else each sweep reads the
        # same queued rows of a big campaign again, for nothing); nothing while this process
        # has a backlog of its own.
        pending = self.scheduler.pending()
        self._sweeps += 1
        lost = grace if pending == 0 or self._sweeps % 10 == 0 else None
        rows = await self.store.due_sends(now, queued_older_than=lost) if pending < self.SWEEP_BACKLOG else []
        for row in rows:
            if self.owns(row["partner_id"]):
                self.enqueue(row["id"], row["partner_id"])
        for member in await self.store.due_members(now, stale=self.lease):
            try:
                await self._step(member, now)
            except Exception:
                log.exception("journey step of %s failed", member["campaign_id"])

    async def sweep(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except Exception as exc:  # PostgreSQL away: try again next time
                log.warning("sweep failed: %s", exc)
            await asyncio.sleep(self.settings.dm_sweep_s)

    async def _step(self, row: Mapping[str, Any], now: datetime) -> None:
        """A member's due step: its message and send (published like a quick send's)."""
        c = await self.store.campaign(row["partner_id"], row["campaign_id"])
        got = await self.library.journey(c["version"]) if c else None
        if c is None or got is None:
            return
        journey, versions = got
        member = member_of(row)
        if member.step >= len(journey.steps):
            await save_member(self.store, c["id"], jr.step_sent(journey, member, member.step, now), now)
            return
        tv = await self.library.template(versions[member.step])
        contact = await self.store.contact(row["partner_id"], row["contact_id"])
        if tv is None or contact is None:
            await save_member(self.store, c["id"], jr.exit_member(member, jr.EXIT_FAILED, now), now)
            return
        message = await self.store.message(row["partner_id"], c["id"], member.step, tv.id, tv.version)
        blocked = await self.store.suppressed([contact["email_key"]])
        made = await self.store.add_sends(row["partner_id"], c["id"], message, [{
            "contact_id": contact["id"], "to_email": contact["email"], "email_key": contact["email_key"],
            "state": "suppressed" if blocked else "queued"}])
        if blocked:
            await save_member(self.store, c["id"], jr.on_send_outcome(journey, member, member.step, SUPPRESSED, now), now)
            return
        await publish(self.sends_log, made)

    # -- delivery -------------------------------------------------------------------------------
    async def dispatch(self) -> None:
        """Claim what the rate limits let go (one compare-and-set for all of it), up to
        `max_in_flight` sends at once; each claimed batch is prepared together
        (recommendations in one pipelined read) and sent over the pool of SMTP connections."""
        while True:
            self._wake.clear()
            room = self.max_in_flight - self._in_flight
            now = self.clock()
            # claim in batches: wait for half the room to be free unless that is everything
            # queued (a claim per finished send would be a query per message)
            claim = room > 0 and (room >= self.max_in_flight // 2 or self.scheduler.pending() <= room)
            ready = self.scheduler.ready_at(now, limit=room, horizon=self.LOOKAHEAD) if claim else []
            if ready:
                ids = [sid for sid, _, _ in ready]
                slot = {sid: at for sid, _, at in ready}
                try:
                    rows = await self.store.claim(ids, self.worker_id, self.lease, now)
                except Exception as exc:
                    log.warning("claim failed (%s); the sweep offers them again", exc)
                    rows = []
                got = {r["id"] for r in rows}
                for sid in ids:
                    if sid not in got:
                        self._queued.discard(sid)  # sent, or taken by another claim
                if rows:
                    self._in_flight += len(rows)
                    for r in rows:
                        self._active[r["id"]] = asyncio.Event()
                    self._spawn(self._batch(rows, slot))
                continue
            nxt = self.scheduler.next_at(now)
            wait = 1.0 if nxt is None or not claim else max(0.0, min(1.0, (nxt - now).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _batch(self, rows: list[dict[str, Any]], slot: Mapping[str, datetime] | None = None) -> None:
        try:
            items = await self._prefetch(rows)
        except Exception as exc:  # each send then asks on its own
            log.warning("recommendations for a batch failed: %s", exc)
            items = {}
        for r in rows:
            self._spawn(self._process(r, items.get(r["id"]), (slot or {}).get(r["id"])))

    async def _prefetch(self, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """Send id -> its recommended items, for the sends of a batch whose template places
        them: one read of every recipient's profile and tables per template version."""
        by_version: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            if r["test"] or not r["suppressed"]:
                by_version.setdefault(r["template_version"], []).append(r)
        out: dict[str, list[dict[str, Any]]] = {}
        for version, group in by_version.items():
            tv = await self.library.template(version)
            if tv is None or tv.recommendation is None:
                continue
            found = await self.personaliser.items_many(tv, [_contact(r) for r in group])
            out.update((r["id"], items) for r, items in zip(group, found, strict=True))
        return out

    async def _process(self, row: Mapping[str, Any], items: list[dict[str, Any]] | None = None,
                       not_before: datetime | None = None) -> None:
        try:
            await self.deliver(row, items, not_before)
        except Exception:
            log.exception("send %s failed; its claim expires and it is tried again", row["id"])
        finally:
            self._queued.discard(row["id"])
            self._in_flight -= 1
            if (done := self._active.pop(row["id"], None)) is not None:
                done.set()
            self._wake.set()

    async def settled(self, send_id: str, timeout: float = 30.0) -> None:
        """Wait until this process is done with the send (its outcome written), if it has it:
        a DSN can arrive before the "sent" of its send is (it waits for its group commit)."""
        done = self._active.get(send_id)
        if done is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout)

    async def _reply_address(self, partner_id: str) -> str:
        got = self._reply_to.get(partner_id)
        if got is None:  # one look-up per partner, however many sends ask at once
            got = self._reply_to[partner_id] = asyncio.ensure_future(self._look_up_reply(partner_id))
        try:
            return await asyncio.shield(got)
        except Exception:
            self._reply_to.pop(partner_id, None)
            raise

    async def _look_up_reply(self, partner_id: str) -> str:
        users = [u for u in await self.control.list_users(partner_id=partner_id) if u.disabled_at is None]
        return users[0].email if users else ""

    async def deliver(self, row: Mapping[str, Any], items: list[dict[str, Any]] | None = None,
                      not_before: datetime | None = None) -> str:
        """One claimed send to its outcome; returns it. `items`: its recommendations, read
        with its batch's (None: read them here); `not_before`: its rate-limit slot. An SMTP
        connection of the pool is held for the hand-over only (not while composing, nor while
        the outcome is written)."""
        sid, now = row["id"], self.clock()
        if not row["test"] and row["suppressed"]:
            await self._finish(row, SUPPRESSED, now)
            return SUPPRESSED
        tv = await self.library.template(row["template_version"])
        if tv is None:
            await self._finish(row, FAILED, now, reply="the pinned template version is not stored")
            return FAILED
        contact = _contact(row)
        if items is None:
            items = await self.personaliser.items(tv, contact)
        try:
            envelope, rendered = compose_mail(
                tv, values_for(tv, row["campaign_values"], row["member_values"]), send_id=sid,
                to=recipient(contact, row["to_email"]),
                partner=partner_of(row["partner_name"], await self._reply_address(row["partner_id"])),
                urls=self.urls, verp_key=self.verp_key, now=now, items=items, track=not row["test"])
        except (ValuesError, RenderError, ValueError) as exc:
            await self._finish(row, FAILED, now, reply=f"cannot render: {exc}")
            return FAILED
        if not_before is not None and (wait := (not_before - self.clock()).total_seconds()) > 0:
            await asyncio.sleep(wait)  # its rate-limit slot (it was claimed a little ahead)
        sender = await self._senders.get()
        try:
            delivery = await sender.send(envelope)
        finally:
            self._senders.put_nowait(sender)
        now = self.clock()
        reply = delivery.reply
        if delivery.outcome == SENT:
            await self._finish(row, SENT, now, code=reply.code, reply=reply.message,
                               links=await self._links(rendered.links))
            self.sent += 1
            return SENT
        if delivery.outcome == HARD_BOUNCE:
            await self._finish(row, HARD_BOUNCE, now, code=reply.code, reply=reply.message)
            await self.tracking.bounce(sid, "hard", _status(reply.message, "5.0.0"), reply.message)
            return HARD_BOUNCE
        attempts = int(row["attempts"]) + 1
        at = retry_at(attempts, now, random.random(), self.schedule)
        if delivery.outcome == RELAY_ERROR:
            log.error("the SMTP relay refused us (%s %s): check KAIROS_SMTP_URL", reply.code, reply.message)
        if at is None:
            await self._finish(row, FAILED, now, code=reply.code, reply=reply.message, attempts=attempts)
            await self.tracking.bounce(sid, "soft", _status(reply.message, "4.0.0"), "given up: " + reply.message)
            return FAILED
        await self._finish(row, "retry", now, code=reply.code, reply=reply.message, attempts=attempts, next_at=at)
        self._wake.set()
        return "retry"

    async def _links(self, links: Any) -> list[dict[str, Any]]:
        """The send's links as rendered, a data-item link's item with its categories and
        brand from the catalog (so a click on it moves those affinities)."""
        rows = link_rows(links)
        bare = [r["item"]["id"] for r in rows if r["item"] and "categories" not in r["item"]]
        if bare and self.catalog is not None:
            try:
                found = await self.catalog(bare)
            except Exception as exc:
                log.warning("catalog look-up for a mail's links failed: %s", exc)
                found = {}
            for r in rows:
                rec = found.get(r["item"]["id"]) if r["item"] else None
                if rec is not None:
                    r["item"] = {"id": r["item"]["id"], "categories": list(rec.get("categories") or []),
                                 "brand": rec.get("brand")}
        return rows

    async def _finish_many(self, outcomes: list[dict[str, Any]]) -> list[bool]:
        done = await self.store.finish_many(self.worker_id, outcomes)
        return [o["id"] in done for o in outcomes]

    async def _finish(self, row: Mapping[str, Any], outcome: str, now: datetime, **kw: Any) -> None:
        state = {SENT: "sent", HARD_BOUNCE: "bounced", SUPPRESSED: "suppressed", FAILED: "failed"}.get(outcome, outcome)
        done = await self._finished.submit([{"id": row["id"], "state": state, "at": now, **kw}])
        if not done[0]:
            log.warning("send %s: the claim was lost before it finished (another mailer has it)", row["id"])
            return
        if row["campaign_kind"] == "journey" and row["contact_id"]:
            await self._journey_outcome(row, outcome, now)

    async def _journey_outcome(self, row: Mapping[str, Any], outcome: str, now: datetime) -> None:
        got = await self.library.journey(row["campaign_version"])
        member_row = await self.store.member(row["campaign_id"], row["contact_id"])
        if got is None or member_row is None:
            return
        m = jr.on_send_outcome(got[0], member_of(member_row), row["step"], outcome, now)
        await save_member(self.store, row["campaign_id"], m, now, in_flight=outcome == "retry" and m.active)

    # -- journey exits on web behaviour ---------------------------------------------------------------
    async def consume_events(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from engine.logic.events import decode_events

        s = self.settings
        consumer = AIOKafkaConsumer(
            s.events_topic, bootstrap_servers=s.kafka_bootstrap, group_id=f"{s.group_id}-dm-exits",
            enable_auto_commit=True, auto_offset_reset="latest",
            session_timeout_ms=s.session_timeout_ms, heartbeat_interval_ms=s.heartbeat_interval_ms)
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=1000)
                types = await self._exit_types()
                for msgs in batch.values():
                    for m in msgs:
                        try:
                            events = decode_events(m.value)
                        except Exception:
                            continue
                        for ev in events:
                            if ev.get("type") in types and ev.get("channel") != "email":
                                await self.on_event(ev)
        finally:
            await consumer.stop()

    async def _exit_types(self) -> set[str]:
        cfg = await self.library.current()
        return {e.type for j in cfg.journeys.values() for e in j.exit_events}

    async def on_event(self, event: Mapping[str, Any]) -> int:
        """A web event of a contact's linked profile: the journey members it exits."""
        contacts = await self.store.contacts_of_profile(event.get("visitor_id"), event.get("user_id"))
        n = 0
        now = self.clock()
        for row in await self.store.active_members_of([c["id"] for c in contacts]):
            got = await self.library.journey(row["version"])
            if got is None:
                continue
            before = member_of(row)
            after = jr.on_event(got[0], before, event, now)
            if after is not before:
                await save_member(self.store, row["campaign_id"], after, now, in_flight=row["in_flight"] and after.active)
                await self.control.audit("mailer", "dm.journey.exit", row["campaign_id"], partner_id=row["partner_id"],
                                         detail={"contact": row["contact_id"], "event": event.get("type")})
                n += 1
        return n

    # -- running ----------------------------------------------------------------------------------------
    async def close(self) -> None:
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._finished.drain(), 10)
        while not self._senders.empty():
            await self._senders.get_nowait().close()


def _contact(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the templates and the recommendations know of a claimed send's contact."""
    if not row["contact_id"]:
        return None
    return {"id": row["contact_id"], "first_name": row["first_name"], "last_name": row["last_name"],
            "attributes": row["attributes"], "visitor_id": row["visitor_id"], "user_id": row["user_id"]}


def _status(message: str, default: str) -> str:
    import re

    m = re.search(r"\b([245]\.\d{1,3}\.\d{1,3})\b", message or "")
    return m.group(1) if m else default


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run a mailer until `stop` is set: the wiring of `kairos mailer`."""
    from engine.confighub import ConfigHub
    from engine.db import new_engine
    from engine.eventlog import ensure_topics
    from engine.flows.dm.library import register
    from engine.flows.recommend import CATALOG_CACHE_S, Recommender
    from engine.logic.dm.sending import BotRules, TokenSigner
    from engine.logic.recipes import load_recipes
    from engine.mail.outbox import BounceHandler, SmtpServer
    from engine.store.catalog import CachedCatalog, CatalogStore
    from engine.store.profiles import ProfileStore, new_client
    from engine.store.reco_read import RecoReader

    s = settings
    assert s.database_url and s.kafka_bootstrap and s.redis_url
    stack = contextlib.AsyncExitStack()
    async with stack:
        control = ControlPlane(new_engine(s.database_url))
        stack.push_async_callback(control.close)
        store = DmStore(control.engine)
        hub = ConfigHub(s.config_dir, debounce_ms=s.config_reload_debounce_ms)
        register(hub)
        hub.register("recipes", load_recipes, ("recipes",))
        await hub.start()
        stack.push_async_callback(hub.stop)
        library = Library(hub, store)
        await library.current()
        with contextlib.suppress(Exception):
            await ensure_topics(s.kafka_bootstrap, {s.dm_sends_topic: s.partitions, s.events_topic: s.partitions}, 10.0)
        sends_log = EventLog(s.kafka_bootstrap, s.dm_sends_topic, timeout_s=s.produce_timeout_s)
        events_log = EventLog(s.kafka_bootstrap, s.events_topic, timeout_s=s.produce_timeout_s)
        stack.push_async_callback(sends_log.close)
        stack.push_async_callback(events_log.close)
        client = new_client(s.redis_url, timeout=2.0)
        stack.push_async_callback(client.aclose)
        catalog = CatalogStore(client)
        recommender = Recommender(ProfileStore(client, s.profile_ttl_ms), RecoReader(client, s.group_id),
                                  CachedCatalog(catalog, ttl_s=CATALOG_CACHE_S), s.affinity,
                                  lambda: hub.get("recipes"))
        signer = TokenSigner([(await control.secret("tracking")).encode()])
        verp_key = (await control.secret("verp")).encode()
        tracking = Tracking(store, control, library, signer, events_log,
                            bot_rules=BotRules(min_click_delay=timedelta(seconds=s.dm_bot_click_delay_s)),
                            soft_limit=s.dm_soft_bounce_limit, soft_days=s.dm_soft_bounce_days)
        mailer = Mailer(s, store, control, library, tracking,
                        Personaliser(recommender, lambda: hub.get("recipes"), s.base_url),
                        TrackingUrls(s.base_url, signer), verp_key, sends_log, Relay.from_url(s.relay_url),
                        catalog=catalog.get_many)

        async def on_bounce(b: Any) -> None:
            await mailer.settled(b.send_id)  # a DSN may overtake its send's "sent"
            await tracking.bounce(b.send_id, b.kind, b.status, b.diagnostic)

        bounces = await SmtpServer(BounceHandler([verp_key], on_bounce), "127.0.0.1", s.bounce_port,
                                   hostname="kairos-bounces").start()
        stack.push_async_callback(bounces.stop)
        stack.push_async_callback(mailer.close)
        tasks = [asyncio.create_task(fn(), name=fn.__name__) for fn in
                 (mailer.consume_sends, mailer.sweep, mailer.dispatch, mailer.consume_events)]
        log.info("mailer %s: relay %r, bounces on %s", mailer.worker_id, mailer.relay, bounces.url)
        print(f"mailer: relay {mailer.relay!r}, bounce listener {bounces.url}", flush=True)
        try:
            done_wait = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([done_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not done_wait and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
