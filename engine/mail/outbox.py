"""The embedded local outbox and the bounce listener: real SMTP servers (aiosmtpd) on loopback.

- :class:`Outbox` stores messages in a Maildir and reads them back (stdlib ``mailbox``), a page
  at a time, for the portal's Outbox page. It writes a batch at a time (`store_many`: every
  file written, then each one fsync'd, then moved into ``new/``), and the handler gathers the
  messages of all open connections into those batches (`engine.mail.batch.GroupCommit`), so the fsyncs
  of concurrent senders share one journal commit and no thread hop is paid per message.
- :class:`OutboxHandler` is the aiosmtpd handler that accepts every message into an Outbox.
  In test mode it answers chosen SMTP codes for chosen recipients, decided by the local part:
  ``smtp-550@x.test`` is refused at RCPT with 550, ``smtp-451-once@x.test`` gets 451 the first
  time and is accepted after, ``smtp-554-data@x.test`` is refused after the data
  (``-data`` and ``-once`` combine; ``+tag`` is ignored); ``dsn-hard@`` / ``dsn-soft@`` are
  accepted and then bounced with a delivery status notification sent to the envelope sender
  through ``dsn_relay`` (the bounce listener), as a real relay does hours later;
  ``slow-<ms>@`` is stored at once and answered ``<ms>`` later (a sender that dies meanwhile
  does not know the message was taken: the in-doubt case).
  A message whose Message-ID was stored for a recipient already is accepted and not stored
  again, as mailbox providers collapse duplicate Message-IDs.
- :class:`BounceHandler` is the listener for bounces sent to VERP addresses: it accepts mail
  only for signed ``bounce+<send>.<mac>@`` addresses, parses DSNs (RFC 3464) and reports
  ``(send id, hard | soft)`` to a callback.
- :class:`BulkDataSMTP` is aiosmtpd's server with the DATA phase read in bulk (the whole
  message found by its ``CRLF.CRLF`` end and dot-unstuffed with two byte replacements) instead
  of line by line in Python; the same answers for too-long lines and too-big messages.
- :class:`SmtpServer` runs a handler in the current event loop; ``python -m
  engine.mail.outbox --dir var/mail --port 2525`` runs an outbox on its own (``kairos up``
  supervises it like the other servers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import inspect
import logging
import mailbox
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from email.utils import format_datetime, make_msgid, parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session

from engine.logic.dm.sending import parse_dsn, parse_verp
from engine.mail.batch import GroupCommit

log = logging.getLogger("kairos.mail")

MAX_MESSAGE_BYTES = 10 * 1024 * 1024
MAX_PAGE = 200
_KEY_RE = re.compile(r"^[A-Za-z0-9._\\-]{1,255}$")
_KEY_TIME = re.compile(r"^(\d+)\.M(\d+)")
_TEST_LOCAL = re.compile(r"^smtp-([45]\d\d)((?:-(?:once|data))*)(?:\+.*)?$", re.IGNORECASE)
DSN_TRIES = 5  # a test-mode DSN is tried this many times (1, 2, 4, 8 s apart)
_DSN_LOCAL = re.compile(r"^dsn-(hard|soft)(?:\+.*)?$", re.IGNORECASE)
_SLOW_LOCAL = re.compile(r"^slow-(\d{1,5})(?:\+.*)?$", re.IGNORECASE)
_ENHANCED = {550: "5.1.1", 551: "5.1.6", 552: "5.2.2", 553: "5.1.3", 554: "5.7.1",
             450: "4.2.1", 451: "4.3.0", 452: "4.2.2", 421: "4.3.2"}  # fmt: skip
_TEXT = {550: "mailbox unavailable", 551: "user not local", 552: "mailbox full",
         553: "mailbox name not allowed", 554: "message refused", 450: "mailbox busy",
         451: "try again later", 452: "insufficient storage", 421: "service not available"}  # fmt: skip


# --- the store ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One stored message, as the Outbox page lists it."""

    key: str
    received_at: datetime
    mail_from: str  # the envelope sender (Return-Path)
    to: str  # the envelope recipient (Delivered-To)
    sender: str  # the From header
    subject: str
    message_id: str
    size: int
    send_id: str = ""  # X-Kairos-Send: the distributed-marketing send it is


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    entry: OutboxEntry
    headers: list[tuple[str, str]]
    text: str | None
    html: str | None
    raw: bytes
    content_type: str


class Outbox:
    """A Maildir of received messages (``<folder>/{new,cur,tmp}``)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        for sub in ("tmp", "new", "cur"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self._box = mailbox.Maildir(str(self.folder), factory=None, create=False)
        self._delivered: set[tuple[str, str]] | None = None  # (Message-ID, recipient) stored

    def delivered(self, message_id: str, rcpt_to: str) -> bool:
        """Whether a message with this Message-ID was stored for this recipient already (read
        from the Maildir once, then kept up to date by `store`)."""
        if not message_id:
            return False
        if self._delivered is None:
            seen: set[tuple[str, str]] = set()
            for key in list(self._box.iterkeys()):
                entry = self._entry(key)
                if entry is not None and entry.message_id:
                    seen.add((entry.message_id, entry.to.lower()))
            self._delivered = seen
        return (message_id, rcpt_to.lower()) in self._delivered

    @property
    def loaded(self) -> bool:
        """Whether `delivered` answers from memory (the Maildir was read once)."""
        return self._delivered is not None

    def reserve(self, message_id: str, rcpt_to: str) -> bool:
        """Mark (Message-ID, recipient) as stored before it is written (False: it was already),
        so two concurrent deliveries of one message store it once; `release` undoes it."""
        if self.delivered(message_id, rcpt_to):
            return False
        if message_id and self._delivered is not None:
            self._delivered.add((message_id, _clean(rcpt_to).lower()))
        return True

    def release(self, message_id: str, rcpt_to: str) -> None:
        if self._delivered is not None:
            self._delivered.discard((message_id, _clean(rcpt_to).lower()))

    def store(self, data: bytes, *, mail_from: str, rcpt_to: str, received_at: datetime) -> str:
        """Store one message as delivered to ``rcpt_to``: the final MTA's trace headers
        (``Return-Path``, ``Delivered-To``, ``Received``) are put on top. Returns its key."""
        return self.store_many([(data, mail_from, rcpt_to, received_at)])[0]

    def store_many(self, messages: Sequence[tuple[bytes, str, str, datetime]]) -> list[str]:
        """Store ``[(data, mail_from, rcpt_to, received_at), ...]``; their keys. Maildir
        delivery done for a batch: each file written into ``tmp/``, then each fsync'd (after
        the first, the journal commit is shared), then each renamed into ``new/``; raises
        OSError when one cannot be written (none of the batch is then in ``new/``)."""
        tmp: list[tuple[str, str]] = []
        try:
            for data, mail_from, rcpt_to, received_at in messages:
                trace = (
                    f"Return-Path: <{_clean(mail_from)}>\r\n"
                    f"Delivered-To: {_clean(rcpt_to)}\r\n"
                    f"Received: by kairos-outbox; {format_datetime(received_at)}\r\n"
                ).encode("ascii", "replace")
                key = self._new_key()
                path = os.path.join(self.folder, "tmp", key)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                tmp.append((key, path))
                try:
                    os.write(fd, trace + data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            keys = []
            for key, path in tmp:
                os.rename(path, os.path.join(self.folder, "new", key))
                keys.append(key)
            tmp = []
        finally:
            for _, path in tmp:  # a failed batch leaves nothing behind
                with contextlib.suppress(OSError):
                    os.unlink(path)
        if self._delivered is not None:
            for data, _, rcpt_to, _ in messages:
                mid = _message_id_of(data)
                if mid:
                    self._delivered.add((mid, _clean(rcpt_to).lower()))
        return keys

    _count = 0

    def _new_key(self) -> str:
        """A unique Maildir name, as the stdlib's: ``<sec>.M<usec>P<pid>Q<n>.<host>``."""
        now = time.time()
        Outbox._count += 1
        host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
        return f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{Outbox._count}.{host}"

    def __len__(self) -> int:
        return len(self._box)

    def keys(self) -> list[str]:
        """Every key, newest first."""
        return sorted(self._box.keys(), key=_key_order, reverse=True)

    def entries(self, limit: int = 50, offset: int = 0) -> list[OutboxEntry]:
        """A page of messages, newest first (only that page's headers are read)."""
        limit = max(0, min(limit, MAX_PAGE))
        out = []
        for key in self.keys()[max(0, offset) : max(0, offset) + limit]:
            entry = self._entry(key)
            if entry is not None:
                out.append(entry)
        return out

    def _raw(self, key: str) -> bytes | None:
        if not isinstance(key, str) or not _KEY_RE.match(key):
            return None
        try:
            return self._box.get_bytes(key)
        except (KeyError, OSError):
            return None

    def _entry(self, key: str, raw: bytes | None = None) -> OutboxEntry | None:
        raw = raw if raw is not None else self._raw(key)
        if raw is None:
            return None
        head = BytesHeaderParser(policy=email_policy.default).parsebytes(raw)
        return OutboxEntry(
            key=key,
            received_at=_received_at(head, key),
            mail_from=str(head.get("Return-Path", "")).strip("<>"),
            to=str(head.get("Delivered-To", "")),
            sender=str(head.get("From", "")),
            subject=str(head.get("Subject", "")),
            message_id=str(head.get("Message-ID", "")),
            size=len(raw),
            send_id=str(head.get("X-Kairos-Send", "")),
        )

    def read(self, key: str) -> OutboxMessage | None:
        """One message with its text and HTML parts decoded; None for an unknown key."""
        raw = self._raw(key)
        if raw is None:
            return None
        entry = self._entry(key, raw)
        assert entry is not None
        msg = BytesParser(policy=email_policy.default).parsebytes(raw)
        assert isinstance(msg, EmailMessage)
        text = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        return OutboxMessage(
            entry,
            [(k, str(v)) for k, v in msg.items()],
            text.get_content() if text is not None else None,
            html.get_content() if html is not None else None,
            raw,
            msg.get_content_type(),
        )

    def find(self, *, to: str | None = None, message_id: str | None = None) -> list[OutboxMessage]:
        """Every message to ``to`` and/or with ``message_id``, newest first (tests, support)."""
        out = []
        for key in self.keys():
            entry = self._entry(key)
            if entry is None:
                continue
            if to is not None and entry.to.lower() != to.lower():
                continue
            if message_id is not None and entry.message_id != message_id:
                continue
            msg = self.read(key)
            if msg is not None:
                out.append(msg)
        return out


_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]{1,500}>)", re.IGNORECASE | re.MULTILINE)


def _message_id_of(data: bytes) -> str:
    """The Message-ID of a raw message (a regular expression on the header block: the email
    package's header parsing costs milliseconds a message)."""
    m = _MESSAGE_ID.search(data.split(b"\r\n\r\n", 1)[0])
    return m.group(1).decode("ascii", "replace") if m else ""


def _clean(value: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f<>]", "", value)[:320]


def _key_order(key: str) -> tuple[int, int, str]:
    m = _KEY_TIME.match(key)
    return (int(m.group(1)), int(m.group(2)), key) if m else (0, 0, key)


def _received_at(head: Any, key: str) -> datetime:
    received = str(head.get("Received", ""))
    if ";" in received:
        with contextlib.suppress(TypeError, ValueError):
            return parsedate_to_datetime(received.rsplit(";", 1)[1].strip())
    sec, usec, _ = _key_order(key)
    return datetime.fromtimestamp(sec + usec / 1e6, UTC)


# --- test-mode answers --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ForcedAnswer:
    """What test mode answers for one recipient."""

    code: int
    at_data: bool = False
    once: bool = False

    @property
    def line(self) -> str:
        enhanced = _ENHANCED.get(self.code, f"{self.code // 100}.0.0")
        return f"{self.code} {enhanced} {_TEXT.get(self.code, 'answered by the outbox test mode')} (test mode)"


def forced_answer(address: str) -> ForcedAnswer | None:
    """The answer test mode gives ``address`` (None: accept it)."""
    local = address.rpartition("@")[0]
    m = _TEST_LOCAL.match(local)
    if m is None:
        return None
    flags = m.group(2).lower()
    return ForcedAnswer(int(m.group(1)), "-data" in flags, "-once" in flags)


def build_dsn(
    *,
    mail_from: str,
    recipient: str,
    kind: str,
    reporting_mta: str,
    original_headers: bytes,
    now: datetime,
) -> bytes:
    """A delivery status notification (RFC 3464) for ``recipient``: ``kind`` ``hard``
    (failed, 5.1.1) or ``soft`` (failed after retries, 4.4.7)."""
    status, diag, action = (
        ("5.1.1", "550 5.1.1 mailbox unavailable", "failed")
        if kind == "hard"
        else ("4.4.7", "451 4.4.7 delivery time expired", "failed")
    )
    boundary = "kairos-dsn-" + hashlib.sha256(original_headers + recipient.encode()).hexdigest()[:16]
    date = format_datetime(now)
    head = original_headers.decode("ascii", "replace").replace("\r\n", "\n").strip("\n")
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: {_clean(mail_from)}",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {date}",
        f"Message-ID: {make_msgid(domain=reporting_mta)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        f"Your message to {_clean(recipient)} could not be delivered.",
        "",
        diag,
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {reporting_mta}",
        f"Arrival-Date: {date}",
        "",
        f"Final-Recipient: rfc822; {_clean(recipient)}",
        f"Action: {action}",
        f"Status: {status}",
        f"Diagnostic-Code: smtp; {diag}",
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "",
        head,
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


# --- handlers -----------------------------------------------------------------------------------

OnMessage = Callable[[str, OutboxEntry], Awaitable[None] | None]


async def _call(fn: Callable[..., Any] | None, *args: Any) -> None:
    if fn is None:
        return
    result = fn(*args)
    if inspect.isawaitable(result):
        await result


class OutboxHandler:
    """aiosmtpd handler: every accepted message goes into the Outbox, once per recipient."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        test_mode: bool = False,
        dsn_relay: tuple[str, int] | None = None,
        on_message: OnMessage | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.outbox = outbox
        self.test_mode = test_mode
        self.dsn_relay = dsn_relay
        self.on_message = on_message
        self.clock = clock
        self._answered_once: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.duplicates = 0  # messages dropped because their Message-ID was stored already
        # the messages of every open connection are written together (see GroupCommit)
        self.writer: GroupCommit[tuple[bytes, str, str, datetime], str] = GroupCommit(
            lambda batch: asyncio.to_thread(outbox.store_many, batch))

    def _answer(self, address: str) -> ForcedAnswer | None:
        if not self.test_mode:
            return None
        answer = forced_answer(address)
        if answer is None:
            return None
        if answer.once:
            if address.lower() in self._answered_once:
                return None
            if not answer.at_data:
                self._answered_once.add(address.lower())
        return answer

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        answer = self._answer(address)
        if answer is not None and not answer.at_data:
            return answer.line
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or envelope.content
        assert isinstance(data, bytes)
        for rcpt in envelope.rcpt_tos:
            answer = self._answer(rcpt)
            if answer is not None and answer.at_data:
                if answer.once:
                    self._answered_once.add(rcpt.lower())
                return answer.line
        now = self.clock()
        mail_from = envelope.mail_from or ""
        mid = _message_id_of(data)
        if mid and not self.outbox.loaded:
            await asyncio.to_thread(self.outbox.delivered, mid, "")  # read the Maildir once
        fresh: list[str] = []
        for rcpt in envelope.rcpt_tos:
            # A message whose Message-ID this recipient has already is the same message again
            # (a sender that retried after losing our answer): accepted, and not stored twice,
            # as mailbox providers collapse duplicate Message-IDs.
            if mid and not self.outbox.reserve(mid, rcpt):
                self.duplicates += 1
                continue
            fresh.append(rcpt)
        try:
            keys = await self.writer.submit([(data, mail_from, rcpt, now) for rcpt in fresh]) if fresh else []
        except OSError as exc:  # our disk, not the recipient: the sender retries
            for rcpt in fresh:
                self.outbox.release(mid, rcpt)
            log.error("outbox could not store a message: %s", exc)
            return "451 4.3.0 the outbox could not store the message, try again later"
        stored = list(zip(fresh, keys, strict=True))
        for rcpt, key in stored:
            if self.on_message is not None:
                entry = self.outbox._entry(key)
                if entry is not None:
                    await _call(self.on_message, key, entry)
            dsn = _DSN_LOCAL.match(rcpt.rpartition("@")[0]) if self.test_mode else None
            if dsn is not None and self.dsn_relay is not None and mail_from:
                task = asyncio.get_running_loop().create_task(
                    self._bounce(mail_from, rcpt, dsn.group(1).lower(), data, now)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        if self.test_mode:
            delays = [int(m.group(1)) for r in envelope.rcpt_tos if (m := _SLOW_LOCAL.match(r.rpartition("@")[0]))]
            if delays:
                await asyncio.sleep(max(delays) / 1000)
        return "250 2.0.0 OK: stored in the outbox"

    async def _bounce(self, mail_from: str, rcpt: str, kind: str, data: bytes, now: datetime) -> None:
        assert self.dsn_relay is not None
        headers = data.split(b"\r\n\r\n", 1)[0] + b"\r\n"
        dsn = build_dsn(mail_from=mail_from, recipient=rcpt, kind=kind,
                        reporting_mta="outbox.kairos.invalid", original_headers=headers, now=now)  # fmt: skip
        host, port = self.dsn_relay
        # as a relay does, a DSN that could not be handed over is tried again (a busy machine,
        # the bounce listener restarting): 5 tries over about half a minute, then given up
        for attempt in range(DSN_TRIES):
            client = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, timeout=10)
            try:
                async with client:
                    await client.mail("")  # a bounce has the null sender, so it never bounces back
                    await client.rcpt(mail_from)
                    await client.data(dsn)
                return
            except Exception as exc:  # a test helper: log, never crash the outbox
                last = attempt + 1 == DSN_TRIES
                log.warning("could not deliver the DSN for %s to %s:%s (try %d of %d%s): %s", rcpt,
                            host, port, attempt + 1, DSN_TRIES, ", giving up" if last else "", exc)
                if not last:
                    await asyncio.sleep(2.0 ** attempt)

    async def drain(self) -> None:
        """Wait for the DSNs still being sent."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


@dataclass(frozen=True, slots=True)
class Bounce:
    """A bounce reported for one send."""

    send_id: str
    kind: str  # "hard" or "soft"
    status: str  # like 5.1.1
    recipient: str
    diagnostic: str = ""


OnBounce = Callable[[Bounce], Awaitable[None] | None]


class BounceHandler:
    """aiosmtpd handler for bounces: mail only to signed VERP addresses; DSNs reported."""

    def __init__(self, keys: Sequence[bytes], on_bounce: OnBounce) -> None:
        self.keys = tuple(keys)
        self.on_bounce = on_bounce
        self.ignored = 0  # messages to our addresses that were no bounce (auto-replies, spam)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if parse_verp(address, self.keys) is None:
            return "550 5.1.1 no such bounce address"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or envelope.content
        assert isinstance(data, bytes)
        try:
            results = parse_dsn(data)
        except Exception as exc:  # a malformed report is dropped, not retried by the sender
            log.info("unparseable bounce dropped: %s", exc)
            results = []
        bounces = [r for r in results if r.kind is not None]
        if not bounces:
            self.ignored += 1
            return "250 2.0.0 OK"
        for rcpt in envelope.rcpt_tos:
            send_id = parse_verp(rcpt, self.keys)
            if send_id is None:
                continue
            for r in bounces:
                assert r.kind is not None
                await _call(self.on_bounce, Bounce(send_id, r.kind, r.status, r.recipient, r.diagnostic))
        return "250 2.0.0 OK: bounce recorded"


# --- the server ---------------------------------------------------------------------------------


_END = b"\r\n.\r\n"
_LINE_LIMIT = 1001  # RFC 5321 4.5.3.1.6: 1000 octets with the CRLF (aiosmtpd's own limit)


def unstuff(raw: bytes) -> bytes | None:
    """The message in a DATA stream up to (not with) its ``.CRLF`` end line, dot-unstuffed
    (RFC 5321 4.5.2); None when a line is longer than the limit."""
    if len(raw) > _LINE_LIMIT and max(map(len, raw.split(b"\r\n"))) + 2 > _LINE_LIMIT:
        return None
    body = raw.replace(b"\r\n.", b"\r\n")
    return body[1:] if body.startswith(b".") else body


class BulkDataSMTP(SMTP):
    """aiosmtpd's SMTP with the DATA phase read in bulk. aiosmtpd reads DATA one line at a
    time (a `readuntil`, a log call and a few checks per line: ~250 of them for a promotional
    mail); this reads what the socket has, finds the end of the data by ``CRLF.CRLF`` and
    unstuffs the dots with byte replacements. The answers are aiosmtpd's: 503/501 before, 500
    for a line over 1000 octets, 552 over the size limit (both after the data has been read),
    then the handler's DATA hook. PIPELINING is not offered, so a client waits for our answer
    after its ``.``; bytes it sent beyond the end anyway are given back to the reader."""

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        limit = self.data_size_limit
        buf = bytearray(b"\r\n")  # the DATA line's own end: "." on the first line ends it too
        too_much, searched = False, 0
        while True:
            try:
                chunk = await self._reader.read(256 * 1024)
            except asyncio.CancelledError:
                log.info("Connection lost during DATA")
                self._writer.close()
                raise
            if not chunk:  # the client went away
                return
            buf += chunk
            end = buf.find(_END, max(0, searched - 4))
            if end >= 0:
                break
            searched = len(buf)
            if limit and len(buf) > limit + 2:
                too_much = True
                del buf[: len(buf) - 4]  # keep what could start the end marker
                searched = 0
        extra = bytes(buf[end + len(_END) :])
        if extra:  # a client that pipelined past DATA anyway: its next command stays readable
            self._reader._buffer[:0] = extra  # type: ignore[attr-defined]
        if too_much or (limit and end > limit):
            await self.push("552 Error: Too much mail data")
            self._set_post_data_state()
            return
        content = unstuff(bytes(buf[2 : end + 2]))
        if content is None:
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            self._set_post_data_state()
            return
        self.envelope.original_content = content
        self.envelope.content = (content.decode("utf-8", errors="surrogateescape")
                                 if self._decode_data else content)  # fmt: skip
        status = await self._call_handler_hook("DATA") if "DATA" in self._handle_hooks else MISSING
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)


class SmtpServer:
    """An aiosmtpd SMTP server for ``handler`` on ``host:port`` (0: a free port), in the
    running event loop."""

    def __init__(self, handler: Any, host: str = "127.0.0.1", port: int = 0,
                 hostname: str = "kairos-outbox", data_size_limit: int = MAX_MESSAGE_BYTES) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.hostname = hostname
        self.data_size_limit = data_size_limit
        self._server: asyncio.base_events.Server | None = None

    def _protocol(self) -> SMTP:
        return BulkDataSMTP(self.handler, hostname=self.hostname, data_size_limit=self.data_size_limit,
                    enable_SMTPUTF8=True, auth_require_tls=False, timeout=60,
                    auth_exclude_mechanism=["LOGIN", "PLAIN"])  # no AUTH offered  # fmt: skip

    async def start(self) -> SmtpServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None
        drain = getattr(self.handler, "drain", None)
        if drain is not None:
            await drain()

    async def __aenter__(self) -> SmtpServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"


async def serve_outbox(folder: Path, host: str, port: int, test_mode: bool,
                       dsn_relay: tuple[str, int] | None = None) -> None:
    """Run an outbox until cancelled (SIGTERM/SIGINT end it cleanly)."""
    server = await SmtpServer(OutboxHandler(Outbox(folder), test_mode=test_mode, dsn_relay=dsn_relay),
                              host, port).start()  # fmt: skip
    log.info("outbox listening on %s, storing into %s", server.url, folder)
    print(f"outbox: {server.url} -> {folder}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m engine.mail.outbox",
                                     description="The local outbox: an SMTP server storing mail in a Maildir.")  # fmt: skip
    parser.add_argument("--dir", type=Path, default=Path("var/mail"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--test-mode", action="store_true",
                        help="answer smtp-<code>@ recipients with that code; bounce dsn-hard@/dsn-soft@")
    parser.add_argument("--dsn-relay", default=None, help="host:port of the bounce listener (test mode)")
    args = parser.parse_args(argv)
    relay = None
    if args.dsn_relay:
        host, _, port = args.dsn_relay.rpartition(":")
        relay = (host or "127.0.0.1", int(port))
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command at INFO
    asyncio.run(serve_outbox(args.dir, args.host, args.port, args.test_mode, relay))


if __name__ == "__main__":
    main()
