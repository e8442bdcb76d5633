"""The send pipeline's rules, pure: ids, headers, the MIME message, tracking tokens, bot
filtering, what an SMTP answer means, bounces, rate limits and the engagement events.

Nothing here talks to a network or reads a clock: times come in as aware datetimes, keys as
bytes, randomness as numbers. The mailer (``engine.mail.sender`` and the flow that claims a
send) calls these in this order::

    suppressed?  -> SendScheduler.ready()  -> compose_mail()  -> SMTP  -> classify_reply()
                                                               -> retry_at() / suppress

Guarantees these rules give (the storage floor gives the rest):

- the Message-ID is a function of the send id, so a retry (or a mailer restarted after a
  crash) sends the same Message-ID and receivers can drop the duplicate;
- the VERP Return-Path names the send and carries an HMAC, so a forged bounce cannot
  suppress somebody else;
- tracking tokens name (send, link index) under an HMAC: a tampered token is invalid, and the
  click target is looked up from the pinned content, never taken from the URL;
- a partner over its rate limit is deferred while the others go on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import policy as email_policy
from email.header import Header
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, formataddr
from typing import Any
from urllib.parse import urlsplit

from markupsafe import escape

from engine.logic.dm.templates import RenderedLink, RenderedMessage, TemplateVersion

# --- ids ----------------------------------------------------------------------------------

SEND_ID_RE = re.compile(r"^[a-z0-9]{8,40}$")
EMAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")


def new_send_id(random_bytes: bytes) -> str:
    """A send id from 16 random bytes: 26 characters of lower-case base32 (mail systems may
    lower-case a bounce address, so ids never depend on case)."""
    if len(random_bytes) < 10:
        raise ValueError("a send id needs at least 10 random bytes")
    return base64.b32encode(random_bytes[:16]).decode("ascii").rstrip("=").lower()


def _check_send_id(send_id: str) -> str:
    if not isinstance(send_id, str) or not SEND_ID_RE.match(send_id):
        raise ValueError("a send id is 8-40 characters of a-z and 0-9")
    return send_id


def normalise_email(address: Any) -> str | None:
    """The address, trimmed, with the domain lower-cased; None when it is not a plain
    ``local@domain.tld`` address (no display names, no comments, no quotes)."""
    if not isinstance(address, str):
        return None
    address = address.strip()
    if len(address) > 254 or not EMAIL_RE.match(address) or ".." in address:
        return None
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}"


def suppression_key(address: str) -> str:
    """The brand-wide suppression list's key of an address (case-insensitive)."""
    return address.strip().casefold()


def message_id(send_id: str, domain: str) -> str:
    """``<dm.<send id>@<domain>>``: the same on every attempt of one send."""
    return f"<dm.{_check_send_id(send_id)}@{domain}>"


def _mac(key: bytes, data: str, size: int) -> bytes:
    return hmac.new(key, data.encode("ascii"), hashlib.sha256).digest()[:size]


def verp_address(send_id: str, domain: str, key: bytes) -> str:
    """The envelope sender (Return-Path) of one send: ``bounce+<send id>.<mac>@<domain>``."""
    _check_send_id(send_id)
    mac = base64.b32encode(_mac(key, "verp." + send_id, 5)).decode("ascii").lower()
    return f"bounce+{send_id}.{mac}@{domain}"


_VERP_RE = re.compile(r"^bounce\+([a-z0-9]{8,40})\.([a-z2-7]{8})@(.+)$", re.IGNORECASE)


def parse_verp(address: str, keys: Sequence[bytes]) -> str | None:
    """The send id a bounce address names, or None when it is not one of ours (or forged)."""
    m = _VERP_RE.match(address.strip().strip("<>"))
    if m is None:
        return None
    send_id, mac = m.group(1).lower(), m.group(2).lower()
    for key in keys:
        good = base64.b32encode(_mac(key, "verp." + send_id, 5)).decode("ascii").lower()
        if hmac.compare_digest(good, mac):
            return send_id
    return None


# --- tracking tokens --------------------------------------------------------------------------

OPEN, CLICK, UNSUBSCRIBE = "o", "c", "u"
HONEYPOT_LINK = 65535  # the hidden link's index: real links are 0..MAX_LINKS-1
MAX_TOKEN_LEN = 128
OPEN_PATH, CLICK_PATH, UNSUBSCRIBE_PATH = "/m/o/", "/m/c/", "/m/u/"
_TOKEN_RE = re.compile(r"^([ocu])(\d{0,5})\.([a-z0-9]{8,40})\.([A-Za-z0-9_-]{22})$")


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # OPEN, CLICK or UNSUBSCRIBE
    send_id: str
    link: int | None  # CLICK only

    @property
    def honeypot(self) -> bool:
        return self.kind == CLICK and self.link == HONEYPOT_LINK


class TokenSigner:
    """HMAC-SHA256 tokens for the open pixel, the click redirect and the unsubscribe link.
    Signs with the first key and accepts any (rotate by putting the new key first)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys or any(not isinstance(k, bytes) or len(k) < 16 for k in keys):
            raise ValueError("tracking keys are at least 16 bytes each")
        self._keys = tuple(keys)

    @staticmethod
    def _body(kind: str, send_id: str, link: int | None) -> str:
        return f"{kind}{'' if link is None else link}.{send_id}"

    def _sig(self, key: bytes, body: str) -> str:
        return base64.urlsafe_b64encode(_mac(key, "tok." + body, 16)).decode("ascii").rstrip("=")

    def sign(self, kind: str, send_id: str, link: int | None = None) -> str:
        if kind not in (OPEN, CLICK, UNSUBSCRIBE):
            raise ValueError("kind must be OPEN, CLICK or UNSUBSCRIBE")
        if (kind == CLICK) != (link is not None):
            raise ValueError("a click token names a link; others do not")
        if link is not None and not 0 <= link <= HONEYPOT_LINK:
            raise ValueError("link index out of range")
        body = self._body(kind, _check_send_id(send_id), link)
        return f"{body}.{self._sig(self._keys[0], body)}"

    def verify(self, token: Any) -> Token | None:
        """The token's contents, or None for anything not signed by one of our keys."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LEN:
            return None
        m = _TOKEN_RE.match(token)
        if m is None:
            return None
        kind, link_text, send_id, sig = m.groups()
        if (kind == CLICK) != bool(link_text) or (link_text and link_text != str(int(link_text))):
            return None
        link = int(link_text) if link_text else None
        if link is not None and link > HONEYPOT_LINK:
            return None
        body = self._body(kind, send_id, link)
        if not any(hmac.compare_digest(self._sig(k, body), sig) for k in self._keys):
            return None
        return Token(kind, send_id, link)


@dataclass(frozen=True, slots=True)
class TrackingUrls:
    """The public URLs a mail links to (the engine's public base URL, https in production)."""

    base_url: str
    signer: TokenSigner

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("the public base URL must be http(s)://host[:port][/path]")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    def open(self, send_id: str) -> str:
        return f"{self.base_url}{OPEN_PATH}{self.signer.sign(OPEN, send_id)}"

    def click(self, send_id: str, link: int) -> str:
        return f"{self.base_url}{CLICK_PATH}{self.signer.sign(CLICK, send_id, link)}"

    def honeypot(self, send_id: str) -> str:
        return self.click(send_id, HONEYPOT_LINK)

    def unsubscribe(self, send_id: str) -> str:
        return f"{self.base_url}{UNSUBSCRIBE_PATH}{self.signer.sign(UNSUBSCRIBE, send_id)}"


# --- the message ------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SMTP_COMPAT = email_policy.compat32.clone(linesep="\r\n")
_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)


def display_name(value: Any, max_len: int = 120) -> str:
    """A header-safe display name: control characters (CR, LF) become spaces."""
    text = " ".join(_CONTROL.sub(" ", value if isinstance(value, str) else "").split())
    return text[:max_len]


def from_name(pattern: str, partner_name: str, brand_name: str) -> str:
    """The From display name: the template's ``sending.from_name`` filled in."""
    text = pattern.replace("{partner_name}", display_name(partner_name))
    return display_name(text.replace("{brand_name}", display_name(brand_name)))


def add_tracking(html: str, open_url: str | None, honeypot_url: str | None) -> str:
    """The open pixel before ``</body>`` and the hidden honeypot link right after ``<body>``."""
    if honeypot_url:
        trap = (f'<a href="{escape(honeypot_url)}" style="display:none;font-size:0;line-height:0;'
                'max-height:0;overflow:hidden;mso-hide:all" aria-hidden="true" tabindex="-1"></a>')  # fmt: skip
        m = _BODY_OPEN.search(html)
        html = html[: m.end()] + trap + html[m.end() :] if m else trap + html
    if open_url:
        pixel = (f'<img src="{escape(open_url)}" width="1" height="1" alt="" '
                 'style="display:block;width:1px;height:1px;border:0">')  # fmt: skip
        closes = list(_BODY_CLOSE.finditer(html))
        html = html[: closes[-1].start()] + pixel + html[closes[-1].start() :] if closes else html + pixel
    return html


@dataclass(frozen=True, slots=True)
class Recipient:
    email: str
    name: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)  # what templates see as `contact`


@dataclass(frozen=True, slots=True)
class Partner:
    """The partner a mail is sent for."""

    name: str
    email: str = ""  # Reply-To
    data: Mapping[str, Any] = field(default_factory=dict)  # what templates see as `partner`


@dataclass(frozen=True, slots=True)
class Envelope:
    """One mail ready for SMTP."""

    send_id: str
    mail_from: str  # the VERP address
    rcpt_to: str
    message_id: str
    data: bytes  # the RFC 5322 message, CRLF line ends


def _mailbox(name: str, address: str) -> str | Header:
    """``Name <address>``: an ASCII name quoted as needed, any other RFC 2047-encoded (a
    ``Header``, which the generator folds into encoded words of at most 75 characters)."""
    if not name:
        return address
    if name.isascii():
        return formataddr((name, address))
    header = Header()
    header.append(name, "utf-8")
    header.append(f"<{address}>", "us-ascii")
    return header


def _text_header(value: str) -> str | Header:
    return value if value.isascii() else Header(value, "utf-8")


def build_message(
    rendered: RenderedMessage,
    *,
    send_id: str,
    from_display: str,
    from_address: str,
    to: Recipient,
    reply_to: Partner | None,
    unsubscribe_url: str,
    message_id_domain: str,
    now: datetime,
) -> bytes:
    """The multipart/alternative message (text, then HTML) with the headers of RFC 5322,
    RFC 2369 and RFC 8058 (one-click unsubscribe), as SMTP bytes (CRLF)."""
    if now.tzinfo is None:
        raise ValueError("now must be time-zone aware")
    to_email = normalise_email(to.email)
    if to_email is None:
        raise ValueError("the recipient's address is not a valid e-mail address")
    if unsubscribe_url and (_CONTROL.search(unsubscribe_url) or ">" in unsubscribe_url):
        raise ValueError("the unsubscribe URL must be one clean line")
    boundary = f"=_kairos_{send_id}_alt"  # "=_" never occurs in QP
    headers: list[tuple[str, str | Header]] = [
        ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
        ("From", _mailbox(display_name(from_display), from_address)),
        ("To", _mailbox(display_name(to.name), to_email)),
    ]
    if reply_to is not None and (rt := normalise_email(reply_to.email)):
        headers.append(("Reply-To", _mailbox(display_name(reply_to.name), rt)))
    headers += [
        ("Subject", _text_header(display_name(rendered.subject, 998))),
        ("Date", format_datetime(now)),
        ("Message-ID", message_id(send_id, message_id_domain)),
    ]
    if unsubscribe_url:
        headers += [("List-Unsubscribe", f"<{unsubscribe_url}>"),
                    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")]  # fmt: skip
    headers += [("X-Kairos-Send", send_id), ("MIME-Version", "1.0")]
    out = [_header_bytes(name, value) for name, value in headers]
    out += [b"\r\n--", boundary.encode("ascii"), b"\r\n", _QP_PLAIN, _qp(rendered.text),
            b"\r\n--", boundary.encode("ascii"), b"\r\n", _QP_HTML, _qp(rendered.html),
            b"\r\n--", boundary.encode("ascii"), b"--\r\n"]
    return b"".join(out)


_QP_PLAIN = b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
_QP_HTML = b'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'


def _header_bytes(name: str, value: str | Header) -> bytes:
    """One header line as SMTP bytes. Built by hand when it is ASCII and fits in 78
    characters (all but one or two of a mail's); else folded and RFC 2047-encoded by the email
    package's compat32 policy, as its generator would (the same bytes, at a tenth of the cost
    for the headers that need nothing)."""
    text = value if isinstance(value, str) else str(value)
    if _CONTROL.search(text):  # every value is one line; never let one through
        raise ValueError(f"header {name} would contain a control character")
    if isinstance(value, str) and value.isascii() and len(name) + 2 + len(value) <= 78:
        return f"{name}: {value}\r\n".encode("ascii")
    return _SMTP_COMPAT.fold_binary(name, value)  # type: ignore[arg-type]  # compat32 takes a Header


def _qp(body: str) -> bytes:
    """A text part's body, quoted-printable with CRLF line ends (``binascii``: the email
    package's own encoder is pure Python and several times slower on a mail-sized body)."""
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    return binascii.b2a_qp(body.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")


def compose_mail(
    version: TemplateVersion,
    values: Mapping[str, Any],
    *,
    send_id: str,
    to: Recipient,
    partner: Partner,
    urls: TrackingUrls,
    verp_key: bytes,
    now: datetime,
    items: Sequence[Mapping[str, Any]] = (),
    track: bool = True,
) -> tuple[Envelope, RenderedMessage]:
    """Render ``version`` for one recipient and build the mail: tracked links, the open pixel,
    the honeypot, headers, VERP. Deterministic: the same send at another time differs only in
    ``Date`` (same Message-ID, same tokens). ``track=False`` (a test send) keeps the links as
    they are and adds no pixel."""
    _check_send_id(send_id)
    brand = version.brand
    unsubscribe = urls.unsubscribe(send_id)
    rendered = version.render(
        values,
        contact={**dict(to.data), "email": to.email},
        partner={**dict(partner.data), "name": partner.name, "email": partner.email},
        items=items,
        unsubscribe_url=unsubscribe,
        link_url=(lambda i: urls.click(send_id, i)) if track else None,
    )
    html = add_tracking(rendered.html, urls.open(send_id), urls.honeypot(send_id)) if track else rendered.html
    body = RenderedMessage(rendered.subject, html, rendered.text, rendered.links)
    data = build_message(
        body,
        send_id=send_id,
        from_display=from_name(version.from_name, partner.name, brand.name),
        from_address=brand.from_address,
        to=to,
        reply_to=partner,
        unsubscribe_url=unsubscribe,
        message_id_domain=brand.sending_domain,
        now=now,
    )
    to_email = normalise_email(to.email)
    assert to_email is not None
    envelope = Envelope(
        send_id,
        verp_address(send_id, brand.return_domain, verp_key),
        to_email,
        message_id(send_id, brand.sending_domain),
        data,
    )
    return envelope, rendered


# --- bots ----------------------------------------------------------------------------------

CRAWLER_UA = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|curl/|wget/|python-requests|python-urllib|aiohttp|httpx|"
    r"go-http-client|java/|okhttp|libwww|headless|phantomjs|scanner|proofpoint|mimecast|"
    r"barracuda|safelinks|ms-office|microsoft office existence|linkcheck|facebookexternalhit|"
    r"whatsapp|slackbot|discordbot|telegrambot|skypeuripreview|bingpreview|zgrab|nmap|masscan",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class BotRules:
    """When a hit on a pixel or a link is a machine's, not the contact's."""

    min_click_delay: timedelta = timedelta(seconds=2)  # clicks sooner after delivery: scanners
    min_open_delay: timedelta = timedelta(0)  # opens sooner after delivery (off by default)
    honeypot_window: timedelta = timedelta(minutes=5)  # clicks this soon after a honeypot hit
    crawler_ua: re.Pattern[str] = CRAWLER_UA


@dataclass(frozen=True, slots=True)
class Hit:
    kind: str  # OPEN or CLICK
    method: str  # the HTTP method
    user_agent: str
    at: datetime
    link: int | None = None


def bot_reason(
    hit: Hit,
    delivered_at: datetime | None,
    rules: BotRules = BotRules(),
    honeypot_at: datetime | None = None,
) -> str | None:
    """Why ``hit`` is not the contact (``head``, ``no_user_agent``, ``user_agent``,
    ``honeypot``, ``too_soon``, ``after_honeypot``), or None for a human hit. Bot hits are
    counted apart and never become engagement events."""
    if hit.method.upper() == "HEAD":
        return "head"
    if not hit.user_agent.strip():
        return "no_user_agent"
    if rules.crawler_ua.search(hit.user_agent):
        return "user_agent"
    if hit.kind == CLICK and hit.link == HONEYPOT_LINK:
        return "honeypot"
    if delivered_at is not None:
        delay = rules.min_click_delay if hit.kind == CLICK else rules.min_open_delay
        if hit.at - delivered_at < delay:
            return "too_soon"
    if hit.kind == CLICK and honeypot_at is not None and timedelta(0) <= hit.at - honeypot_at <= rules.honeypot_window:
        return "after_honeypot"
    return None


# --- SMTP answers, retries, bounces --------------------------------------------------------------

SENT, RETRY, HARD_BOUNCE, RELAY_ERROR = "sent", "retry", "hard_bounce", "relay_error"
FAILED, SUPPRESSED = "failed", "suppressed"  # final states set by the mailer, not by a reply
PHASES = ("connect", "helo", "starttls", "auth", "mail", "rcpt", "data")
RETRY_SCHEDULE: tuple[timedelta, ...] = tuple(
    timedelta(minutes=m) for m in (1, 5, 15, 60, 180, 360, 720, 1440)
)  # about 2 days in all; then the send fails and counts as a soft bounce


@dataclass(frozen=True, slots=True)
class Reply:
    """What the SMTP server answered (code None: no answer: refused, reset, timed out)."""

    code: int | None
    message: str = ""
    phase: str = "data"


def classify_reply(reply: Reply) -> str:
    """``SENT`` for 2xx after the data; ``RETRY`` for 4xx or no answer; ``HARD_BOUNCE`` for
    5xx to the recipient or its data (suppress the address); ``RELAY_ERROR`` for 5xx before
    the recipient (our relay refused us: configuration, never the contact's fault)."""
    code = reply.code
    if code is None or 400 <= code < 500:
        return RETRY
    if 200 <= code < 400:
        return SENT if reply.phase == "data" else RETRY
    if 500 <= code < 600:
        return HARD_BOUNCE if reply.phase in ("rcpt", "data") else RELAY_ERROR
    return RETRY


def retry_at(attempts: int, now: datetime, jitter: float = 0.0,
             schedule: Sequence[timedelta] = RETRY_SCHEDULE) -> datetime | None:
    """When to try again after ``attempts`` failed attempts (None: give up). ``jitter`` in
    [0, 1) spreads retries by up to +10 % (pass a random number)."""
    if attempts < 1:
        raise ValueError("attempts counts the failed attempts so far (>= 1)")
    if attempts > len(schedule):
        return None
    delay = schedule[attempts - 1]
    return now + delay * (1 + 0.1 * min(max(jitter, 0.0), 0.999))


SOFT_BOUNCE_LIMIT = 3
SOFT_BOUNCE_WINDOW = timedelta(days=14)


def soft_bounces_suppress(times: Iterable[datetime], now: datetime,
                          limit: int = SOFT_BOUNCE_LIMIT, window: timedelta = SOFT_BOUNCE_WINDOW) -> bool:
    """Whether an address's soft bounces reach ``limit`` within ``window`` up to ``now``."""
    return sum(1 for t in times if now - window < t <= now) >= limit


@dataclass(frozen=True, slots=True)
class DsnResult:
    """One recipient of a delivery status notification (RFC 3464)."""

    recipient: str
    action: str  # failed, delayed, delivered, relayed, expanded
    status: str  # like 5.1.1
    diagnostic: str
    kind: str | None  # "hard", "soft", or None (no bounce: delayed, delivered...)


def bounce_kind(action: str, status: str) -> str | None:
    """``hard`` for a failed delivery with a 5.x.x status, ``soft`` for a failed one with
    4.x.x, None otherwise (a delay warning is not a bounce)."""
    if action.lower() != "failed":
        return None
    if status.startswith("5."):
        return "hard"
    if status.startswith("4."):
        return "soft"
    return None


def parse_dsn(raw: bytes) -> list[DsnResult]:
    """The per-recipient results of a DSN (``multipart/report; report-type=delivery-status``);
    [] for any other message (auto-replies, spam)."""
    msg = BytesParser(policy=email_policy.default).parsebytes(raw)
    if msg.get_content_type() != "multipart/report":
        return []
    report_type = msg.get_param("report-type")
    if not isinstance(report_type, str) or report_type.lower() != "delivery-status":
        return []
    out: list[DsnResult] = []
    for part in msg.iter_parts():
        if part.get_content_type() != "message/delivery-status":
            continue
        groups = _status_groups(part)
        for fields in groups[1:]:  # the first group is per message
            rcpt = fields.get("final-recipient") or fields.get("original-recipient") or ""
            rcpt = rcpt.split(";", 1)[1].strip() if ";" in rcpt else rcpt.strip()
            action = fields.get("action", "").strip().lower()
            status = fields.get("status", "").strip().split(" ", 1)[0]
            diag = fields.get("diagnostic-code", "")
            diag = diag.split(";", 1)[1].strip() if ";" in diag else diag.strip()
            out.append(DsnResult(rcpt, action, status, diag[:500], bounce_kind(action, status)))
    return out


def _status_groups(part: EmailMessage | Any) -> list[dict[str, str]]:
    """The field groups of a message/delivery-status part, as lower-case-keyed dicts."""
    payload = part.get_payload()
    if isinstance(payload, list):  # the email package parses each group as a message
        return [{k.lower(): str(v) for k, v in g.items()} for g in payload if not isinstance(g, str)]
    text = payload if isinstance(payload, str) else ""
    groups: list[dict[str, str]] = []
    for block in re.split(r"\r?\n\s*\r?\n", text.strip()):
        fields: dict[str, str] = {}
        for line in re.sub(r"\r?\n[ \t]+", " ", block).splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip().lower()] = value.strip()
        if fields:
            groups.append(fields)
    return groups


# --- rate limits ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_minute`` sends, at most ``burst`` at once. ``burst=1`` paces evenly (5/min: one
    every 12 s), so no minute ever holds more than ``per_minute``."""

    per_minute: float
    burst: float = 1.0

    def __post_init__(self) -> None:
        if self.per_minute <= 0 or self.burst < 1:
            raise ValueError("a rate needs per_minute > 0 and burst >= 1")

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    at: datetime


def refill(bucket: Bucket | None, rate: Rate, now: datetime) -> Bucket:
    if bucket is None:
        return Bucket(rate.burst, now)
    elapsed = max((now - bucket.at).total_seconds(), 0.0)
    return Bucket(min(rate.burst, bucket.tokens + elapsed * rate.per_second), max(now, bucket.at))


def take(bucket: Bucket | None, rate: Rate, now: datetime) -> tuple[bool, Bucket, datetime]:
    """Take one token: (taken, the bucket after, when the next token is there)."""
    b = refill(bucket, rate, now)
    if b.tokens >= 1 - 1e-9:
        b = Bucket(b.tokens - 1, b.at)
        return True, b, b.at + timedelta(seconds=max(0.0, 1 - b.tokens) / rate.per_second)
    return False, b, b.at + timedelta(seconds=(1 - b.tokens) / rate.per_second)


def _token_at(bucket: Bucket | None, rate: Rate, now: datetime) -> datetime:
    """When the bucket next holds a whole token (``now`` if it does)."""
    b = refill(bucket, rate, now)
    if b.tokens >= 1 - 1e-9:
        return max(now, b.at)
    return b.at + timedelta(seconds=(1 - b.tokens) / rate.per_second)


def _take_at(bucket: Bucket | None, rate: Rate, at: datetime) -> Bucket:
    """The bucket after one token taken at ``at`` (a time from :func:`_token_at`, which
    rounds to a microsecond: a token short by that much is taken as whole)."""
    b = refill(bucket, rate, at)
    return Bucket(max(b.tokens - 1, 0.0), b.at)


class SendScheduler:
    """Which queued sends may go now, under a per-partner and a global token bucket.

    Partners take turns (round robin), so one partner's big batch never starves another's;
    a partner without a token is skipped (deferred) while the others go on. State is in
    memory: the ``dm.sends`` topic is keyed by partner, so a partner's sends (and its bucket)
    have one owner; split the global rate across mailer processes."""

    def __init__(self, partner_rate: Rate, global_rate: Rate,
                 partner_rates: Mapping[str, Rate] | None = None) -> None:
        self.partner_rate = partner_rate
        self.global_rate = global_rate
        self.partner_rates = dict(partner_rates or {})
        self._queues: OrderedDict[str, deque[str]] = OrderedDict()
        self._buckets: dict[str, Bucket] = {}
        self._global: Bucket | None = None

    def rate_of(self, partner: str) -> Rate:
        return self.partner_rates.get(partner, self.partner_rate)

    def add(self, send_id: str, partner: str) -> None:
        self._queues.setdefault(partner, deque()).append(send_id)

    def pending(self, partner: str | None = None) -> int:
        if partner is not None:
            return len(self._queues.get(partner, ()))
        return sum(len(q) for q in self._queues.values())

    def ready(self, now: datetime, limit: int | None = None) -> list[tuple[str, str]]:
        """``[(send id, partner), ...]`` that may be sent at ``now`` (tokens taken)."""
        return [(sid, partner) for sid, partner, _ in self.ready_at(now, limit)]

    def ready_at(self, now: datetime, limit: int | None = None,
                 horizon: timedelta = timedelta(0)) -> list[tuple[str, str, datetime]]:
        """``[(send id, partner, at), ...]``: the sends whose tokens come by ``now + horizon``,
        each with the time its tokens are taken at (``at >= now``; send it then, not before).
        A look-ahead lets a fast rate hand out a batch at once while every send still keeps
        its pace (with ``burst=1``, 1/rate apart). Each turn goes to the partner whose token
        comes first (ties: whose turn it is), so a partner that has to wait never delays one
        that need not; ``horizon=0`` gives exactly what may go at ``now``."""
        if now.tzinfo is None:
            raise ValueError("now must be time-zone aware")
        until = now + horizon
        out: list[tuple[str, str, datetime]] = []
        while limit is None or len(out) < limit:
            best: str | None = None
            best_at = until
            for partner in list(self._queues):  # in turn order
                if not self._queues[partner]:
                    del self._queues[partner]
                    continue
                at = _token_at(self._buckets.get(partner), self.rate_of(partner), now)
                if at < best_at or (best is None and at <= best_at):
                    best, best_at = partner, at
                    if at == now:
                        break  # nobody comes sooner
            if best is None:
                break
            at = max(best_at, _token_at(self._global, self.global_rate, now))
            if at > until:  # the global limit holds everyone
                break
            self._buckets[best] = _take_at(self._buckets.get(best), self.rate_of(best), at)
            self._global = _take_at(self._global, self.global_rate, at)
            out.append((self._queues[best].popleft(), best, at))
            self._queues.move_to_end(best)  # the next turn is someone else's
        return out

    def next_at(self, now: datetime) -> datetime | None:
        """The earliest time a queued send could go (None: nothing queued)."""
        if not any(self._queues.values()):
            return None
        g = refill(self._global, self.global_rate, now)
        global_at = now if g.tokens >= 1 - 1e-9 else g.at + timedelta(seconds=(1 - g.tokens) / self.global_rate.per_second)
        best: datetime | None = None
        for partner, queue in self._queues.items():
            if not queue:
                continue
            rate = self.rate_of(partner)
            b = refill(self._buckets.get(partner), rate, now)
            at = now if b.tokens >= 1 - 1e-9 else b.at + timedelta(seconds=(1 - b.tokens) / rate.per_second)
            best = at if best is None or at < best else best
        assert best is not None
        return max(best, global_at)


# --- engagement ---------------------------------------------------------------------------------


def contact_visitor(contact_id: str, visitor_id: str | None = None) -> str:
    """The visitor id an e-mail event is keyed by: the contact's linked visitor, else one of
    its own (``c-<contact id>``), which a linked user id then merges into the user's profile."""
    return visitor_id if visitor_id else f"c-{contact_id}"


def engagement_event(
    kind: str,
    *,
    send_id: str,
    contact_id: str,
    at: datetime,
    visitor_id: str | None = None,
    user_id: str | None = None,
    link: RenderedLink | None = None,
    template: str | None = None,
    partner: str | None = None,
    campaign: str | None = None,
) -> dict[str, Any]:
    """The event a human open or click becomes on the ``events`` topic (``channel: email``,
    ``email_open`` / ``email_click``, the link's item when it names one). The ``event_id``
    is a function of (send, kind, link), so a second open or click of the same link is the
    same event and the stream's dedupe drops it."""
    if kind not in (OPEN, CLICK):
        raise ValueError("kind must be OPEN or CLICK")
    if at.tzinfo is None:
        raise ValueError("at must be time-zone aware")
    index = link.index if link is not None else None
    digest = hashlib.sha256(f"{send_id}.{kind}.{index}".encode()).hexdigest()[:32]
    event: dict[str, Any] = {
        "event_id": f"em-{digest}",
        "type": "email_open" if kind == OPEN else "email_click",
        "visitor_id": contact_visitor(contact_id, visitor_id),
        "channel": "email",
        "ts": int(at.timestamp() * 1000),
        "props": {k: v for k, v in {
            "send_id": send_id, "template": template, "partner": partner, "campaign": campaign,
            "link": index, "url": link.url if link is not None else None,
        }.items() if v is not None},
    }  # fmt: skip
    if user_id:
        event["user_id"] = user_id
    if link is not None and link.item:
        item = {"id": link.item["id"]}
        if link.item.get("categories"):
            item["categories"] = list(link.item["categories"])
        if link.item.get("brand"):
            item["brand"] = link.item["brand"]
        event["item"] = item
    return event
