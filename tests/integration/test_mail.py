"""The SMTP edge against real servers on loopback: the outbox (a child process, as `kairos up`
runs it), the bounce listener, and the aiosmtplib sender. No mocks."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiosmtplib
import pytest

from engine.embedded import free_port
from engine.logic.dm.config import load_dm
from engine.logic.dm.sending import (
    CLICK,
    HARD_BOUNCE,
    RETRY,
    SENT,
    Partner,
    Recipient,
    TokenSigner,
    TrackingUrls,
    compose_mail,
    new_send_id,
    retry_at,
    verp_address,
)
from engine.mail.outbox import Bounce, BounceHandler, Outbox, SmtpServer
from engine.mail.sender import Relay, SmtpSender, send_one

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONFIG = load_dm(ROOT / "config")
VERP_KEY = b"v" * 32
SIGNER = TokenSigner([b"t" * 32])
URLS = TrackingUrls("https://kairos.example.com", SIGNER)
PARTNER = Partner("Northgate Leeds", "leeds@stores.northgate.example", {"phone": "+44 113 496 0000"})


@pytest.fixture(scope="module")
def mail_outbox(tmp_path_factory: pytest.TempPathFactory):
    """This module's own outbox (test mode): the session's one has the DM stack's mailer
    listening on its bounce port, where these tests run their own bounce listener."""
    from tests.conftest import MailOutbox

    folder = tmp_path_factory.mktemp("mail-own")
    outbox = MailOutbox(folder / "mail", folder / "outbox.log")
    yield outbox
    outbox.stop()


def envelope(to: str, first_name: str = "Ann", template: str = "thank-you", values=None, send_id=None):
    sid = send_id or new_send_id(uuid.uuid4().bytes)
    env, rendered = compose_mail(
        CONFIG.templates[template], values or {}, send_id=sid,
        to=Recipient(to, f"{first_name} Example", {"first_name": first_name}), partner=PARTNER,
        urls=URLS, verp_key=VERP_KEY, now=datetime.now(UTC),
    )  # fmt: skip
    return env, rendered


async def null_sender_send(port: int, rcpt: str, data: bytes) -> None:
    """What a receiving MTA does to bounce: MAIL FROM:<> (aiosmtplib.send refuses it)."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        await client.mail("")
        await client.rcpt(rcpt)
        await client.data(data)


def unique(local: str) -> str:
    return f"{local}+{uuid.uuid4().hex[:10]}@example.test"


async def test_quick_send_to_three_contacts_arrives_whole(mail_outbox):
    values = {
        "greeting": "Thanks for coming in",
        "message": "<p>Your <b>new TV</b> is ready for collection on Friday.</p><script>alert(1)</script>",
        "cta_url": "https://www.northgate.example/stores/leeds",
    }
    contacts = [(unique("ann"), "Ann"), (unique("bob"), "Bob"), (unique("chloe"), "Chloë")]
    sent = []
    async with SmtpSender(Relay.from_url(mail_outbox.url)) as sender:  # one connection, three mails
        for address, name in contacts:
            env, rendered = envelope(address, name, values=values)
            delivery = await sender.send(env)
            assert delivery.outcome == SENT, delivery
            sent.append((address, name, env, rendered))
    outbox = Outbox(mail_outbox.folder)
    for address, name, env, rendered in sent:
        found = outbox.find(to=address)
        assert len(found) == 1, address
        msg = found[0]
        head = dict(msg.headers)
        assert msg.content_type == "multipart/alternative"
        assert head["Subject"] == f"Thanks for coming in, {name}"
        assert head["From"] == "Northgate Leeds via Northgate Electronics <stores@mail.northgate.example>"
        assert head["Reply-To"] == "Northgate Leeds <leeds@stores.northgate.example>"
        assert head["To"] == f"{name} Example <{address}>"
        assert head["Message-ID"] == env.message_id == f"<dm.{env.send_id}@mail.northgate.example>"
        assert head["Return-Path"] == f"<{verp_address(env.send_id, 'bounces.northgate.example', VERP_KEY)}>"
        assert head["Delivered-To"] == address
        assert head["List-Unsubscribe"].strip() == f"<{URLS.unsubscribe(env.send_id)}>"
        assert head["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "Your <b>new TV</b> is ready" in msg.html and "<script" not in msg.html
        assert f"Thanks for coming in, {name}" in msg.html
        assert "Your new TV is ready for collection on Friday." in msg.text
        assert "https://www.northgate.example/stores/leeds" in msg.text
        assert URLS.click(env.send_id, rendered.links[0].index).replace("&", "&amp;") in msg.html
        assert URLS.open(env.send_id) in msg.html
        tokens = {SIGNER.verify(u.rsplit("/", 1)[1]) for u in [URLS.click(env.send_id, lk.index) for lk in rendered.links]}
        assert {t.kind for t in tokens} == {CLICK} and {t.send_id for t in tokens} == {env.send_id}
    # the Outbox page's reader: newest first, by key, nothing outside the Maildir
    entries = outbox.entries(limit=3)
    assert [e.to for e in entries] == [c[0] for c in reversed(contacts)]
    assert outbox.read(entries[0].key).entry == entries[0]
    assert outbox.read("../../etc/passwd") is None and outbox.read("nope") is None


async def test_550_is_a_hard_bounce_and_451_is_retried(mail_outbox):
    outbox = Outbox(mail_outbox.folder)
    relay = Relay.from_url(mail_outbox.url)
    async with SmtpSender(relay) as sender:
        gone = unique("smtp-550")
        env, _ = envelope(gone)
        d = await sender.send(env)
        assert (d.outcome, d.reply.code, d.reply.phase) == (HARD_BOUNCE, 550, "rcpt")
        assert "5.1.1" in d.reply.message
        assert outbox.find(to=gone) == []

        refused = unique("smtp-554-data")
        d = await sender.send(envelope(refused)[0])
        assert (d.outcome, d.reply.code, d.reply.phase) == (HARD_BOUNCE, 554, "data")

        busy = unique("smtp-451-once")
        env, _ = envelope(busy)
        first = await sender.send(env)
        assert (first.outcome, first.reply.code) == (RETRY, 451)
        assert retry_at(1, datetime.now(UTC)) is not None
        assert outbox.find(to=busy) == []
        # the retry: the same envelope, the same Message-ID, now accepted, stored once
        again = await sender.send(env)
        assert again.outcome == SENT
        stored = outbox.find(to=busy)
        assert len(stored) == 1 and dict(stored[0].headers)["Message-ID"] == env.message_id

        # a refusal does not spoil the connection for the next mail
        ok = unique("dan")
        assert (await sender.send(envelope(ok)[0])).outcome == SENT
        assert len(outbox.find(to=ok)) == 1

        always = unique("smtp-451")
        assert (await sender.send(envelope(always)[0])).outcome == RETRY
        assert (await sender.send(envelope(always)[0])).outcome == RETRY


async def test_dsn_to_the_verp_address_reports_the_send(mail_outbox):
    got: list[Bounce] = []
    arrived = asyncio.Event()

    def on_bounce(b: Bounce) -> None:
        got.append(b)
        if len(got) >= 2:
            arrived.set()

    listener = await SmtpServer(BounceHandler([VERP_KEY], on_bounce), port=mail_outbox.bounce_port).start()
    try:
        hard, soft = unique("dsn-hard"), unique("dsn-soft")
        env_hard, _ = envelope(hard)
        env_soft, _ = envelope(soft)
        async with SmtpSender(Relay.from_url(mail_outbox.url)) as sender:
            assert (await sender.send(env_hard)).outcome == SENT  # accepted now, bounced later
            assert (await sender.send(env_soft)).outcome == SENT
        await asyncio.wait_for(arrived.wait(), 20)
        by_send = {b.send_id: b for b in got}
        assert by_send[env_hard.send_id].kind == "hard" and by_send[env_hard.send_id].status == "5.1.1"
        assert by_send[env_soft.send_id].kind == "soft" and by_send[env_soft.send_id].status == "4.4.7"
        assert by_send[env_hard.send_id].recipient == hard

        # the listener takes mail only for signed bounce addresses
        forged = verp_address(env_hard.send_id, "bounces.northgate.example", b"x" * 32)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await null_sender_send(listener.port, forged, b"Subject: x\r\n\r\nx\r\n")
        assert refused.value.code == 550
        # an auto-reply to a real bounce address is accepted and ignored
        before = len(got)
        await null_sender_send(listener.port, env_hard.mail_from,
                               b"Subject: Out of office\r\n\r\nBack on Monday.\r\n")
        assert len(got) == before
    finally:
        await listener.stop()


async def test_an_in_process_outbox_and_an_unreachable_relay(tmp_path):
    from engine.mail.outbox import OutboxHandler

    seen: list[str] = []
    outbox = Outbox(tmp_path / "mail")
    async with SmtpServer(OutboxHandler(outbox, on_message=lambda key, entry: seen.append(entry.to))) as server:
        env, _ = envelope("eve@example.test", "Eve", template="meeting-follow-up")
        d = await send_one(Relay.from_url(server.url), env)
        assert d.outcome == SENT and seen == ["eve@example.test"]
        # without test mode, a local part that asks for a code is an ordinary address
        d = await send_one(Relay.from_url(server.url), envelope("smtp-550@example.test")[0])
        assert d.outcome == SENT
    assert len(outbox) == 2
    dead = await send_one(Relay.from_url(f"smtp://127.0.0.1:{free_port()}?timeout=5"), env)
    assert (dead.outcome, dead.reply.code, dead.reply.phase) == (RETRY, None, "connect")
