"""Sending one message to an SMTP relay with aiosmtplib, and what the answer means.

The relay is a URL (``KAIROS_SMTP_URL``; the embedded default is the local outbox)::

    smtp://host:port                       STARTTLS when the server offers it
    smtp://user:pass@host:587?starttls=require
    smtp://host:25?starttls=off
    smtps://user:pass@host:465             TLS from the first byte
    ...&timeout=30                         seconds per command (default 30)

:class:`SmtpSender` keeps one connection open across messages (reconnecting when the
server closes it) and performs MAIL, RCPT and DATA itself, so every answer is known with the
phase it came in, and :func:`engine.logic.dm.sending.classify_reply` turns it into sent,
retry, hard bounce or relay error. It never raises for an SMTP or network failure: the
outcome says what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from engine.logic.dm.sending import Envelope, Reply, classify_reply

STARTTLS_MODES = ("auto", "require", "off")


@dataclass(frozen=True, slots=True)
class Relay:
    host: str
    port: int
    implicit_tls: bool = False
    starttls: str = "auto"  # auto | require | off (ignored with implicit TLS)
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0
    local_hostname: str | None = None

    def __repr__(self) -> str:  # never print the password
        auth = f"{self.username}:***@" if self.username else ""
        scheme = "smtps" if self.implicit_tls else "smtp"
        return f"Relay({scheme}://{auth}{self.host}:{self.port}, starttls={self.starttls})"

    @classmethod
    def from_url(cls, url: str) -> Relay:
        """Parse a relay URL; ``ValueError`` names what is wrong."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError("the SMTP URL must start with smtp:// or smtps://")
        if not parts.hostname:
            raise ValueError("the SMTP URL must name a host")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("the SMTP URL has an invalid port") from None
        implicit = parts.scheme == "smtps"
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"starttls", "timeout"}
        if unknown:
            raise ValueError(f"unknown SMTP URL option(s): {', '.join(sorted(unknown))}")
        starttls = query.get("starttls", "auto")
        if starttls not in STARTTLS_MODES:
            raise ValueError(f"starttls must be one of {list(STARTTLS_MODES)}")
        try:
            timeout = float(query.get("timeout", 30))
        except ValueError:
            raise ValueError("timeout must be a number of seconds") from None
        if not 0 < timeout <= 600:
            raise ValueError("timeout must be between 0 and 600 seconds")
        return cls(
            host=parts.hostname,
            port=port or (465 if implicit else 25),
            implicit_tls=implicit,
            starttls=starttls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            timeout=timeout,
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of one message: ``outcome`` is SENT, RETRY, HARD_BOUNCE or RELAY_ERROR."""

    outcome: str
    reply: Reply


def _reply(exc: BaseException, phase: str) -> Reply:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        first = exc.recipients[0]
        return Reply(first.code, first.message, "rcpt")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return Reply(exc.code if exc.code >= 0 else None, exc.message, phase)
    return Reply(None, f"{type(exc).__name__}: {exc}", phase)


class SmtpSender:
    """One SMTP connection to a relay, reused message after message (not concurrently: use
    one sender per concurrent stream of messages)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self._client: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()

    def _new_client(self) -> aiosmtplib.SMTP:
        r = self.relay
        start_tls: bool | None
        if r.implicit_tls:
            start_tls = False
        else:
            start_tls = {"auto": None, "require": True, "off": False}[r.starttls]
        return aiosmtplib.SMTP(
            hostname=r.host, port=r.port, use_tls=r.implicit_tls, start_tls=start_tls,
            username=r.username, password=r.password, timeout=r.timeout,
            local_hostname=r.local_hostname,
        )  # fmt: skip

    async def _connect(self) -> aiosmtplib.SMTP:
        await self._drop()
        client = self._new_client()
        await client.connect()
        self._client = client
        return client

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    async def send(self, envelope: Envelope) -> Delivery:
        """MAIL, RCPT and DATA for one envelope; the outcome, never an exception for SMTP or
        network trouble. A connection the server closed while idle is reopened once."""
        async with self._lock:
            for attempt in (0, 1):
                reused = self._client is not None and self._client.is_connected
                phase = "connect"
                try:
                    client = self._client if reused else await self._connect()
                    assert client is not None
                    phase = "mail"
                    await client.mail(envelope.mail_from)
                    phase = "rcpt"
                    await client.rcpt(envelope.rcpt_to)
                    phase = "data"
                    response = await client.data(envelope.data)
                    reply = Reply(response.code, response.message, "data")
                    return Delivery(classify_reply(reply), reply)
                except aiosmtplib.SMTPServerDisconnected as exc:
                    await self._drop()
                    if reused and attempt == 0 and phase == "mail":
                        continue  # an idle connection the server closed: nothing was sent yet
                    reply = _reply(exc, phase)
                    return Delivery(classify_reply(reply), reply)
                except aiosmtplib.SMTPResponseException as exc:
                    reply = _reply(exc, _phase_of(exc, phase))
                    await self._reset()
                    return Delivery(classify_reply(reply), reply)
                except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                    await self._drop()
                    reply = _reply(exc, phase)
                    return Delivery(classify_reply(reply), reply)
            raise AssertionError("unreachable")

    async def _reset(self) -> None:
        """After a refused transaction: RSET, or a new connection next time."""
        client = self._client
        if client is None or not client.is_connected:
            await self._drop()
            return
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            await self._drop()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.quit(), 5)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    async def __aenter__(self) -> SmtpSender:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _phase_of(exc: aiosmtplib.SMTPResponseException, phase: str) -> str:
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return "mail"
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPRecipientsRefused):
        return "rcpt"
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return "data"
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return "auth"
    if isinstance(exc, aiosmtplib.SMTPHeloError):
        return "helo"
    return phase


async def send_one(relay: Relay, envelope: Envelope) -> Delivery:
    """One message over a fresh connection (a test send, a one-off)."""
    async with SmtpSender(relay) as sender:
        return await sender.send(envelope)
