"""Segment's HTTP Tracking API, mapped onto the Kairos event spec. Pure.

What the Segment libraries (analytics-next / analytics.js, analytics-swift, analytics-kotlin,
analytics-python, analytics-node, …) and the RudderStack / Jitsu SDKs send — `track`,
`page`, `screen`, `identify`, `alias`, `group` messages, one per request or many in a
`batch` — becomes Kairos events (`engine.logic.events.Event`), validated message by message: a bad
message is rejected with the field that is wrong and the others go on. The table of what
becomes what is in docs/segment.md.

Plain data in, plain data out: the receipt time (`now_ms`) is passed in, nothing here does
I/O or reads a clock. What stays with the callers (engine/routes/segment.py and the tracking
flow engine/flows/segment.py):

- which key sent the request (the gate reads HTTP Basic; `write_key` is the body's) and what
  it may do;
- the identity rule for public keys: a message naming a `userId` must carry
  `user_hash = HMAC-SHA256(identity secret, userId)`, which travels as
  `context.kairos.user_hash` or `integrations.Kairos.user_hash` (`Message.user_hash`);
  `with_user_hash` hands it to the trust rules (engine/logic/trust.py), `trust_refusal` names
  their refusals in Segment's words, and `refuse` takes those messages out (the others go on);
- decisions: a `page` / `screen` carrying `context.kairos.zones` asks for them
  (`Message.zones`); the flow calls decide;
- appending the events to the log and the answer (`answer`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from engine.logic import events as spec

MAX_MESSAGE_BYTES = 32 * 1024  # Segment's limit per message (as JSON)
MAX_BATCH_BYTES = 500 * 1024  # Segment's limit per batch request (decompressed)
MAX_BATCH_MESSAGES = 2500  # 500 KB of the smallest useful messages; bounds the cost per call
MAX_ZONES = 20  # as POST /v1/decide
MAX_USER_HASH = 256

# The path names the clients post to, and the message type each implies (None: a batch).
# analytics-next posts one message to <apiHost>/<first letter of its type>, or batches to
# /b; analytics-swift and analytics-kotlin post batches to /b; the server libraries to
# /batch; /import is Segment's older name for /batch.
ENDPOINTS: Mapping[str, str | None] = {
    "batch": None, "b": None, "import": None,
    "track": "track", "t": "track",
    "page": "page", "p": "page",
    "screen": "screen", "s": "screen",
    "identify": "identify", "i": "identify",
    "alias": "alias", "a": "alias",
    "group": "group", "g": "group",
}
MESSAGE_TYPES = frozenset({"track", "page", "screen", "identify", "alias", "group"})
# Where the endpoints are mounted: /v1/<endpoint> as Segment's own host has them, and the same
# under /segment/v1 for SDKs that take a host and a path (analytics-swift, analytics-kotlin)
PREFIXES = ("/v1", "/segment/v1")
METRICS_ENDPOINT = "m"  # analytics-next's own counters (<apiHost>/m): taken and dropped


def api_paths() -> list[tuple[str, str]]:
    """(path, endpoint) of every tracking endpoint under every prefix."""
    return [(f"{prefix}/{name}", name) for prefix in PREFIXES for name in ENDPOINTS]


def is_api_path(path: str) -> bool:
    """Whether `path` is one of the Segment endpoints (their metrics one included)."""
    prefix, _, name = path.rpartition("/")
    return prefix in PREFIXES and (name in ENDPOINTS or name == METRICS_ENDPOINT)

# A message with a userId and no anonymousId (what server libraries send) still needs a
# visitor id in Kairos: it gets "u:<userId>". No client-made anonymousId may take that form
# (it would let anyone write to, and read decisions from, a known user's profile), so an
# anonymousId starting with this prefix is refused.
USER_VISITOR_PREFIX = "u:"

# Segment's e-commerce spec (v2) events that are Kairos standard types. Names are matched
# after normalising ("Product Viewed", "product_viewed" and "product viewed" are one).
ECOMMERCE_TYPES: Mapping[str, str] = {
    "product_viewed": "item_view",
    "product_added": "add_to_cart",
    "wishlist_product_added_to_cart": "add_to_cart",
    "product_removed": "remove_from_cart",
    "order_completed": "purchase",
    "products_searched": "search",
}
# A track call named after a Kairos type is that type (an app can report impressions and
# clicks on Kairos decisions through its Segment client), except these two, which a client
# may not send as a track call: they become the custom type "track.<name>".
_NOT_FROM_TRACK = frozenset({"identify", "decision"})
_ITEM_TYPES = frozenset({"item_view", "add_to_cart", "remove_from_cart"})  # one product, required

# Properties that become the event's item (single-product events) and leave `props`.
_PRODUCT_KEYS = ("product_id", "sku", "category", "brand", "price", "name")


class MessageError(ValueError):
    """One message is unusable: `field` is its path inside the message (Segment's names)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Message:
    """One Segment message, mapped: the Kairos event and what the route still decides."""

    index: int  # position in the batch (0 for a single-message call)
    kind: str  # the Segment type: track, page, screen, identify, alias, group
    event: spec.Event  # validated, `ts` corrected for clock skew, `received_at` stamped
    user_hash: str | None = None  # context.kairos.user_hash or integrations.Kairos.user_hash
    zones: tuple[str, ...] = ()  # context.kairos.zones on a page / screen: decisions asked


@dataclass(frozen=True, slots=True)
class Parsed:
    """A request body, message by message."""

    messages: list[Message] = field(default_factory=list)
    rejected: list[spec.Rejection] = field(default_factory=list)
    write_key: str | None = None  # `writeKey` in the body (what iOS / Android send instead of a header)


# -- the body ---------------------------------------------------------------------------------
_json = msgspec.json.Decoder()
_enc = msgspec.json.Encoder()
_enc_sorted = msgspec.json.Encoder(order="sorted")


def body_limit(endpoint: str) -> int:
    """How many bytes a body may have on this endpoint (compressed or not)."""
    return MAX_MESSAGE_BYTES if ENDPOINTS.get(endpoint) else MAX_BATCH_BYTES


def _inflate(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=31)  # gzip framing
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise spec.BodyError(400, "body", f"is not valid gzip ({exc})") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise spec.BodyError(413, "body", f"must be at most {limit} bytes once decompressed")
    if not inflater.eof:
        raise spec.BodyError(400, "body", "is not valid gzip (truncated)")
    return out


def decode_body(body: bytes, *, endpoint: str, media_type: str = "",
                content_encoding: str = "") -> Any:
    """Bytes of a request to `/v1/<endpoint>` -> the JSON document (raises `BodyError`).

    Content types: `application/json` (server libraries, iOS), `text/plain` (analytics-next,
    Android: it spares the browser a preflight), or none. `Content-Encoding: gzip` (Python
    with `gzip=True`, Android) is inflated with the same size limit as a plain body.
    """
    if endpoint not in ENDPOINTS:
        raise spec.BodyError(404, "path", f"/{endpoint} is not a Segment endpoint")
    limit = body_limit(endpoint)
    if len(body) > limit:
        raise spec.BodyError(413, "body", f"must be at most {limit} bytes")
    encoding = content_encoding.strip().lower()
    if encoding == "gzip":
        body = _inflate(body, limit)
    elif encoding not in ("", "identity"):
        raise spec.BodyError(415, "content-encoding", "must be gzip or none")
    if media_type not in ("application/json", "text/plain", ""):
        raise spec.BodyError(415, "content-type", "must be application/json or text/plain")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise spec.BodyError(400, "body", f"is not valid UTF-8 (byte {exc.start})") from None
    try:
        return _json.decode(body)
    except msgspec.DecodeError as exc:
        raise spec.BodyError(400, "body", f"is not valid JSON ({exc})") from None


def basic_auth_key(authorization: str | None) -> str | None:
    """The write key of `Authorization: Basic base64(<writeKey>:)`, as every Segment client
    sends it (the key is the user name, the password is empty); None if there is none."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    key = decoded.partition(":")[0]
    return key or None


def parse(doc: Any, *, endpoint: str, now_ms: int) -> Parsed:
    """A decoded body -> each message mapped or rejected (raises `BodyError` for the body).

    `/batch` (and `/b`, `/import`) take `{"batch": [...], "sentAt", "writeKey", "context",
    "integrations"}`; the batch's `context` and `integrations` are defaults of each message's,
    its `sentAt` the default of theirs. The other endpoints take one message, whose `type`
    may be left out (the path says it).
    """
    kind = ENDPOINTS.get(endpoint, "missing")
    if kind == "missing":
        raise spec.BodyError(404, "path", f"/{endpoint} is not a Segment endpoint")
    if not isinstance(doc, dict):
        raise spec.BodyError(400, "body", "must be a JSON object")
    key = write_key(doc)
    if kind is not None:
        try:
            msg = parse_message(doc, now_ms=now_ms, kind=kind)
        except MessageError as exc:
            return Parsed([], [spec.Rejection(0, exc.field, exc.reason)], key)
        return Parsed([msg], [], key)
    batch = doc.get("batch")
    if not isinstance(batch, list):
        raise spec.BodyError(400, "batch", "is required and must be an array of messages")
    if not batch:
        raise spec.BodyError(400, "batch", "must contain at least one message")
    if len(batch) > MAX_BATCH_MESSAGES:
        raise spec.BodyError(413, "batch", f"must contain at most {MAX_BATCH_MESSAGES} messages")
    shared_context = doc.get("context")
    if shared_context is not None and not isinstance(shared_context, dict):
        raise spec.BodyError(400, "context", "must be an object")
    shared_integrations = doc.get("integrations")
    if shared_integrations is not None and not isinstance(shared_integrations, dict):
        raise spec.BodyError(400, "integrations", "must be an object")
    sent_at = doc.get("sentAt")
    out = Parsed(write_key=key)
    for i, raw in enumerate(batch):
        try:
            out.messages.append(parse_message(
                raw, now_ms=now_ms, index=i, sent_at=sent_at,
                shared_context=shared_context, shared_integrations=shared_integrations))
        except MessageError as exc:
            out.rejected.append(spec.Rejection(i, exc.field, exc.reason))
    return out


def refuse(parsed: Parsed, refusals: Mapping[int, tuple[str, str]]) -> Parsed:
    """`parsed` with the messages at these batch indexes moved to its rejections, each with
    its (field, reason): how the route applies a rule of its own to single messages (a
    `userId` without a valid `user_hash` under a public key) without dropping the others."""
    if not refusals:
        return parsed
    kept = [m for m in parsed.messages if m.index not in refusals]
    moved = [spec.Rejection(m.index, *refusals[m.index]) for m in parsed.messages if m.index in refusals]
    rejected = sorted([*parsed.rejected, *moved], key=lambda r: r.index)
    return Parsed(kept, rejected, parsed.write_key)


def with_user_hash(msg: Message) -> spec.Event:
    """The message's event carrying its `user_hash` (if any), as the trust rules of
    engine/logic/trust.py read it; they drop it again from every event they let through."""
    if msg.user_hash is None:
        return msg.event
    return msgspec.structs.replace(msg.event, user_hash=msg.user_hash)


def trust_refusal(msg: Message, field: str, reason: str) -> tuple[str, str]:
    """A refusal of the trust rules (named in the event spec's fields) in Segment's words."""
    if field == "user_hash":
        return ("context.kairos.user_hash",
                "must be HMAC-SHA256(identity secret, userId) in hex, computed by your server, "
                "to send a userId with a public key (or integrations.Kairos.user_hash)")
    if field == "visitor_id":
        if msg.event.visitor_id.startswith(USER_VISITOR_PREFIX):
            return ("anonymousId", "is required with a public key (a message with only a userId "
                                   "writes to the user's own profile: a secret key's right)")
        return "anonymousId", reason
    return _SPEC_TO_SEGMENT.get(field, field), reason


def answer(parsed: Parsed) -> tuple[int, dict[str, Any]]:
    """(status, body) once the accepted messages are in the log.

    `{"success": true}` is what every Segment client expects (none of them reads more);
    Kairos adds `accepted` and `rejected` (index in the batch, field, reason). When no
    message was usable the answer is a 400 naming the first bad field: the clients do not
    retry a 400, which is right, since resending would not help.
    """
    rejected = [r.as_dict() for r in parsed.rejected]
    if not parsed.messages:
        first = parsed.rejected[0] if parsed.rejected else spec.Rejection(0, "batch", "is empty")
        return 400, {"success": False, "error": f"{first.field} {first.reason}",
                     "field": first.field, "reason": first.reason, "accepted": 0,
                     "rejected": rejected}
    return 200, {"success": True, "accepted": len(parsed.messages), "rejected": rejected}


# -- one message --------------------------------------------------------------------------------
def parse_message(raw: Any, *, now_ms: int, kind: str | None = None, index: int = 0,
                  sent_at: Any = None, shared_context: Mapping[str, Any] | None = None,
                  shared_integrations: Mapping[str, Any] | None = None) -> Message:
    """One Segment message -> `Message` (raises `MessageError` naming the field).

    `kind` is the type the endpoint implies (None inside a batch, where `type` is required);
    `sent_at` the batch's `sentAt`, used when the message has none of its own.
    """
    if not isinstance(raw, dict):
        raise MessageError("message", "must be an object")
    size = len(_enc.encode(raw))
    if size > MAX_MESSAGE_BYTES:
        raise MessageError("message", f"must be at most {MAX_MESSAGE_BYTES} bytes as JSON (it has {size})")
    mtype = raw.get("type")
    if mtype is None:
        if kind is None:
            raise MessageError("type", "is required (track, page, screen, identify, alias or group)")
        mtype = kind
    if not isinstance(mtype, str) or mtype.lower() not in MESSAGE_TYPES:
        raise MessageError("type", "must be track, page, screen, identify, alias or group")
    mtype = mtype.lower()
    if kind is not None and mtype != kind:
        raise MessageError("type", f"must be {kind} on this endpoint (or left out)")

    context = _obj(raw, "context")
    if shared_context:
        context = {**shared_context, **context}
    integrations = _obj(raw, "integrations")
    if shared_integrations:
        integrations = {**shared_integrations, **integrations}
    kairos = _kairos_options(context, integrations)

    anonymous_id = _ident(raw, "anonymousId")
    user_id = _ident(raw, "userId")
    if anonymous_id is not None and anonymous_id.startswith(USER_VISITOR_PREFIX):
        raise MessageError("anonymousId", f"must not start with {USER_VISITOR_PREFIX!r} (reserved for user ids)")
    if mtype == "alias":
        previous = _ident(raw, "previousId")
        if previous is None:
            raise MessageError("previousId", "is required on alias")
        if user_id is None:
            raise MessageError("userId", "is required on alias")
        if previous.startswith(USER_VISITOR_PREFIX):
            raise MessageError("previousId", f"must not start with {USER_VISITOR_PREFIX!r} (reserved for user ids)")
        # analytics-next's alias(userId) after identify(userId) has previousId == userId:
        # then the device's anonymousId is what joins the user
        visitor = previous if previous != user_id else anonymous_id or visitor_for_user(user_id)
    elif anonymous_id is not None:
        visitor = anonymous_id
    elif user_id is not None:
        visitor = visitor_for_user(user_id)
    else:
        raise MessageError("anonymousId", "or userId is required (a message needs at least one)")

    body: dict[str, Any] = {
        "event_id": event_id(raw),
        "visitor_id": visitor,
        "ts": corrected_ts(raw, now_ms, sent_at),
    }
    if user_id is not None:
        body["user_id"] = user_id
    if (channel := kairos.get("channel")) is not None:
        body["channel"] = _channel_option(channel)
    elif (channel := channel_of(context)) is not None:
        body["channel"] = channel
    ctx = kairos_context(context)

    zones: tuple[str, ...] = ()
    if mtype == "track":
        _map_track(raw, body)
    elif mtype in ("page", "screen"):
        _map_page(raw, mtype, body, ctx)
        zones = _zones(kairos)
    elif mtype == "identify":
        body["type"] = "identify"
        traits = _obj(raw, "traits")
        if traits:
            body["props"] = {"traits": _fit(traits, spec.MAX_PROPS_BYTES - 16)}
    elif mtype == "group":
        group_id = _ident(raw, "groupId")
        if group_id is None:
            raise MessageError("groupId", "is required on group")
        body["type"] = "group"
        props: dict[str, Any] = {"group_id": group_id}
        if traits := _obj(raw, "traits"):
            props["traits"] = _fit(traits, spec.MAX_PROPS_BYTES - 200)
        body["props"] = props
    else:  # alias: any event carrying both ids links the visitor to the user (a merge)
        body["type"] = "alias"
        body["props"] = {"previous_id": _ident(raw, "previousId")}
    if ctx:
        body["context"] = _fit(ctx, spec.MAX_CONTEXT_BYTES)
    return Message(index, mtype, _event(body, now_ms), _user_hash(kairos), zones)


def event_id(raw: Mapping[str, Any]) -> str:
    """The dedupe key: `messageId` as is when it fits the spec (1–64 characters), else a
    digest of it; a message without one gets a digest of its content (without `sentAt`,
    which changes on every resend), so an identical resend still counts once."""
    mid = raw.get("messageId")
    if mid is None or mid == "":
        rest = {k: v for k, v in raw.items()
                if k not in ("sentAt", "receivedAt", "writeKey", "_metadata")}
        return "h-" + hashlib.sha256(_enc_sorted.encode(rest)).hexdigest()[:40]
    if isinstance(mid, bool) or not isinstance(mid, str | int):
        raise MessageError("messageId", "must be a string")
    mid = str(mid)
    if len(mid) <= 64:
        return mid
    return "m-" + hashlib.sha256(mid.encode("utf-8")).hexdigest()[:40]


def visitor_for_user(user_id: str) -> str:
    """The visitor id of a message that names only a user ("u:<userId>", or a digest for
    a user id too long to fit in 128 characters with the prefix)."""
    vid = USER_VISITOR_PREFIX + user_id
    if len(vid) <= 128:
        return vid
    return USER_VISITOR_PREFIX + "#" + hashlib.sha256(user_id.encode("utf-8")).hexdigest()


# -- time -------------------------------------------------------------------------------------
def _iso_ms(value: Any, name: str) -> int:
    if not isinstance(value, str):
        raise MessageError(name, "must be an ISO-8601 time string with a time zone")
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise MessageError(name, "must be an ISO-8601 time string with a time zone") from None
    if dt.tzinfo is None:
        raise MessageError(name, "must include a time zone offset (e.g. Z or +02:00)")
    return int(dt.timestamp() * 1000)


def corrected_ts(raw: Mapping[str, Any], now_ms: int, batch_sent_at: Any = None) -> int:
    """When the event happened, in epoch ms, corrected for the device's clock as Segment
    does: `timestamp = receivedAt - (sentAt - originalTimestamp)`.

    The device's time of the call is `originalTimestamp` (RudderStack) or `timestamp`
    (Segment's libraries); `sentAt` (the message's, else the batch's) is the device's clock
    when the request left and `receivedAt` is `now_ms`, Kairos's clock on receipt: their
    difference is the device's skew. No `sentAt`: the time is taken as given (the 24-hour
    future limit of the spec applies). No time at all: `now_ms`. A `receivedAt` sent by the
    client is ignored (it is the server's to set).
    """
    name = "originalTimestamp" if raw.get("originalTimestamp") is not None else "timestamp"
    value = raw.get(name)
    if value is None:
        return now_ms
    happened = _iso_ms(value, name)
    sent = raw.get("sentAt")
    if sent is None:
        sent = batch_sent_at
    if sent is None:
        ts = happened
        if ts > now_ms + spec.FUTURE_TOLERANCE_MS:
            raise MessageError(name, "is more than 24 hours in the future (and no sentAt to correct it)")
    else:
        delay = _iso_ms(sent, "sentAt") - happened  # how long the device held the event
        ts = now_ms - max(delay, 0)
    if ts < spec.MIN_TS_MS:
        raise MessageError(name, "is before the year 2000")
    return ts


# -- context and channel ------------------------------------------------------------------------
_WEB = frozenset({"js", "javascript", "next", "jitsu", "browser", "web"})
_APP = frozenset({"ios", "swift", "android", "kotlin", "react", "native", "flutter", "xamarin",
                  "unity", "mobile", "tvos", "watchos", "ipados", "cordova", "capacitor"})
_SERVER = frozenset({"python", "node", "ruby", "go", "golang", "java", "php", "net", "dotnet",
                     "csharp", "rust", "elixir", "clojure", "scala", "perl", "server", "s2s"})
_DEVICE_CHANNELS = {
    "ios": "app", "android": "app", "ipados": "app", "tvos": "app", "watchos": "app",
    "mobile": "app", "phone": "app", "tablet": "app", "tv": "app",
    "atm": "atm", "kiosk": "kiosk", "pos": "store", "store": "store",
    "web": "web", "browser": "web", "desktop": "web", "server": "server",
}
_CHANNEL = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_STR_CAP = 1024  # each string kept in the Kairos context


def _sub(context: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = context.get(name)
    return value if isinstance(value, dict) else {}


def _text(value: Any, cap: int = _STR_CAP) -> str | None:
    if isinstance(value, str) and value:
        return value[:cap]
    return None


def channel_of(context: Mapping[str, Any]) -> str | None:
    """Kairos channel from the Segment context: the device type first (`ios`, `android`,
    `atm`, `kiosk`, …), then the OS, then the library (`analytics.js` -> web,
    `analytics-swift` -> app, `analytics-python` -> server, …); None when none says."""
    device_type = _text(_sub(context, "device").get("type"), 64)
    if device_type and (ch := _DEVICE_CHANNELS.get(device_type.lower())):
        return ch
    os_name = (_text(_sub(context, "os").get("name"), 64) or "").lower()
    if os_name in ("ios", "ipados", "iphone os", "android", "tvos", "watchos"):
        return "app"
    lib = (_text(_sub(context, "library").get("name"), 128) or "").lower()
    tokens = set(re.split(r"[^a-z0-9]+", lib)) - {""}
    if tokens & _APP:
        return "app"
    if tokens & _SERVER:
        return "server"
    if tokens & _WEB:
        return "web"
    return None


def _device_kind(context: Mapping[str, Any]) -> str | None:
    """desktop | mobile | tablet, as the Kairos beacon says it (rules match on it)."""
    device = _sub(context, "device")
    dtype = (_text(device.get("type"), 64) or "").lower()
    model = (_text(device.get("model"), 128) or "").lower()
    if dtype in ("desktop", "mobile", "tablet"):
        return dtype
    if dtype in ("ios", "ipados", "android", "phone"):
        return "tablet" if "ipad" in model or "tablet" in model or dtype == "ipados" else "mobile"
    ua = _text(context.get("userAgent"), 2048)
    if ua:
        if re.search(r"iPad|Tablet|Android(?!.*Mobi)", ua, re.I):
            return "tablet"
        if re.search(r"Mobi|iPhone|Android", ua, re.I):
            return "mobile"
        return "desktop"
    uad = _sub(context, "userAgentData")
    if isinstance(uad.get("mobile"), bool):
        return "mobile" if uad["mobile"] else "desktop"
    return None


def _small(value: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in keys:
        v = value.get(k)
        if isinstance(v, str) and v:
            out[k] = v[:256]
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = v
    return out


def kairos_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """The Segment `context` -> the Kairos event context (what rules and reports read):
    `url`, `referrer`, `title` (context.page), `locale`, `timezone`, `device` (desktop /
    mobile / tablet), `utm` (context.campaign), `os`, `app`, `library`, `location`.
    Not kept: ip, userAgent, device ids and advertising ids, network, screen, traits."""
    out: dict[str, Any] = {}
    page = _sub(context, "page")
    for key in ("url", "referrer", "title"):
        if v := _text(page.get(key)):
            out[key] = v
    for key in ("locale", "timezone"):
        if v := _text(context.get(key), 64):
            out[key] = v
    if device := _device_kind(context):
        out["device"] = device
    campaign = _sub(context, "campaign")
    utm = {("campaign" if k == "name" else k): v
           for k, v in _small(campaign, ("source", "medium", "name", "term", "content")).items()}
    if utm:
        out["utm"] = utm
    for key, fields in (("os", ("name", "version")), ("app", ("name", "version", "build")),
                        ("library", ("name", "version")),
                        ("location", ("city", "country", "region", "latitude", "longitude"))):
        if sub := _small(_sub(context, key), fields):
            out[key] = sub
    return out


def _kairos_options(context: Mapping[str, Any], integrations: Mapping[str, Any]) -> dict[str, Any]:
    """Kairos's own options on a message: `context.kairos` first, then
    `integrations.Kairos` (every Segment client passes both through untouched)."""
    out: dict[str, Any] = {}
    for source in (integrations.get("Kairos"), integrations.get("kairos"), context.get("kairos")):
        if isinstance(source, dict):
            out.update(source)
    return out


def _channel_option(value: Any) -> str:
    if not isinstance(value, str) or not _CHANNEL.match(value):
        raise MessageError("context.kairos.channel", "must be a lowercase name of 1 to 32 characters (web, app, atm, kiosk, …)")
    return value


def _user_hash(kairos: Mapping[str, Any]) -> str | None:
    value = kairos.get("user_hash")
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_USER_HASH:
        raise MessageError("context.kairos.user_hash", f"must be a string of 1 to {MAX_USER_HASH} characters")
    return value


def _zones(kairos: Mapping[str, Any]) -> tuple[str, ...]:
    raw = kairos.get("zones")
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [z for z in raw.split(",") if z]
    if not isinstance(raw, list) or len(raw) > MAX_ZONES:
        raise MessageError("context.kairos.zones", f"must be a list of at most {MAX_ZONES} zone names")
    out: list[str] = []
    for z in raw:
        if not isinstance(z, str) or not 1 <= len(z) <= 64:
            raise MessageError("context.kairos.zones", "must contain zone names of 1 to 64 characters")
        if z not in out:
            out.append(z)
    return tuple(out)


# -- track, page, screen ----------------------------------------------------------------------
_NAME_JUNK = re.compile(r"[^a-z0-9_.:-]+")


def type_name(event: str) -> str:
    """A Segment event name as a Kairos type name: lowercase, runs of other characters as
    `_` ("Video Played" -> "video_played"); starts with a letter; at most 64 characters."""
    name = _NAME_JUNK.sub("_", event.strip().lower()).strip("_")
    if not name:
        return "custom"
    if not name[0].isalpha():
        name = "e_" + name
    return name[:64].rstrip("_.:-") or "custom"


def kairos_type(event: str) -> str:
    """The Kairos type of a track call named `event` (see docs/segment.md)."""
    name = type_name(event)
    if name in ECOMMERCE_TYPES:
        return ECOMMERCE_TYPES[name]
    if name in _NOT_FROM_TRACK:
        return f"track.{name}"
    return name


def _map_track(raw: Mapping[str, Any], body: dict[str, Any]) -> None:
    event = raw.get("event")
    if not isinstance(event, str) or not event.strip():
        raise MessageError("event", "is required on track (the event's name)")
    if len(event) > 256:
        raise MessageError("event", "must be at most 256 characters")
    etype = kairos_type(event)
    body["type"] = etype
    props = dict(_obj(raw, "properties"))
    if props.get("products") is not None:
        products = props.pop("products")
        if not isinstance(products, list):
            raise MessageError("properties.products", "must be an array")
        if products:
            body["items"] = _lines(products, "properties.products")
    elif props.get("product_id") is not None or props.get("sku") is not None or (
            etype in _ITEM_TYPES and props.get("id") is not None):
        body["item"] = _item(props, "properties", legacy_id=etype in _ITEM_TYPES)
        for key in (*_PRODUCT_KEYS, "id"):
            props.pop(key, None)
    elif etype in _ITEM_TYPES:
        raise MessageError("properties.product_id", f"(or sku) is required on {event!r}")
    if etype in spec.REACTION_TYPES:
        decision = props.pop("decision_id", None)
        if decision is not None:
            if not isinstance(decision, str) or not 1 <= len(decision) <= 64:
                raise MessageError("properties.decision_id", "must be a string of 1 to 64 characters")
            body["decision_id"] = decision
        elif etype != "conversion":
            raise MessageError("properties.decision_id", f"is required on {etype} events")
    if etype != event:
        props["event"] = event
    if props:
        body["props"] = _fit(props, spec.MAX_PROPS_BYTES)


def _map_page(raw: Mapping[str, Any], mtype: str, body: dict[str, Any], ctx: dict[str, Any]) -> None:
    body["type"] = "page_view"
    props = dict(_obj(raw, "properties"))
    for key in ("name", "category"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise MessageError(key, "must be a string")
        if value:
            props.setdefault(key, value)
    for key in ("url", "referrer", "title"):  # the call's properties describe the page best
        if isinstance(props.get(key), str) and (v := _text(props.pop(key))):
            ctx[key] = v
    kind = _text(props.get("category"), 64) or _text(props.get("name"), 64)
    if kind:
        ctx["page_type"] = kind
    if mtype == "screen":
        ctx["screen"] = _text(props.get("name"), 256) or "(unnamed)"
    if props:
        body["props"] = _fit(props, spec.MAX_PROPS_BYTES)


# -- products -----------------------------------------------------------------------------------
def _product_id(p: Mapping[str, Any], path: str, legacy_id: bool) -> str:
    keys = ("product_id", "sku", "id") if legacy_id else ("product_id", "sku")
    for key in keys:
        value = p.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise MessageError(f"{path}.{key}", "must be a string")
        value = str(value)
        if len(value) > 128:
            raise MessageError(f"{path}.{key}", "must be at most 128 characters")
        return value
    raise MessageError(f"{path}.product_id", "(or sku) is required")


def _category_path(value: Any, path: str) -> list[str] | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MessageError(f"{path}.category", "must be a string")
    parts = [s.strip() for s in re.split(r"[/>]", value) if s.strip()]
    joined = "/".join(parts)
    if not joined:
        return None
    if len(joined) > 256:
        raise MessageError(f"{path}.category", "must be at most 256 characters")
    return [joined]


def _price(p: Mapping[str, Any], path: str) -> float | int | None:
    value = p.get("price")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MessageError(f"{path}.price", "must be a number")
    if not 0 <= value <= 1e12:
        raise MessageError(f"{path}.price", "must be >= 0")
    return value


def _brand(p: Mapping[str, Any], path: str) -> str | None:
    value = p.get("brand")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MessageError(f"{path}.brand", "must be a string")
    if len(value) > 256:
        raise MessageError(f"{path}.brand", "must be at most 256 characters")
    return value


def _item(p: Mapping[str, Any], path: str, *, legacy_id: bool = False) -> dict[str, Any]:
    item: dict[str, Any] = {"id": _product_id(p, path, legacy_id)}
    if (cats := _category_path(p.get("category"), path)) is not None:
        item["categories"] = cats
    if (brand := _brand(p, path)) is not None:
        item["brand"] = brand
    if (price := _price(p, path)) is not None:
        item["price"] = price
    name = p.get("name")
    if name is not None and not isinstance(name, str):
        raise MessageError(f"{path}.name", "must be a string")
    if name:
        item["name"] = name[:512]
    return item


def _lines(products: list[Any], path: str) -> list[dict[str, Any]]:
    if len(products) > 200:
        raise MessageError(path, "must have at most 200 entries")
    lines = []
    for i, p in enumerate(products):
        at = f"{path}[{i}]"
        if not isinstance(p, dict):
            raise MessageError(at, "must be an object")
        line: dict[str, Any] = {"id": _product_id(p, at, legacy_id=False)}
        qty = p.get("quantity")
        if qty is not None:
            if isinstance(qty, bool) or not isinstance(qty, int | float) or qty != int(qty) \
                    or not 1 <= qty <= 100_000:
                raise MessageError(f"{at}.quantity", "must be a whole number from 1 to 100000")
            line["quantity"] = int(qty)
        if (price := _price(p, at)) is not None:
            line["price"] = price
        if (cats := _category_path(p.get("category"), at)) is not None:
            line["categories"] = cats
        if (brand := _brand(p, at)) is not None:
            line["brand"] = brand
        lines.append(line)
    return lines


# -- small pieces -------------------------------------------------------------------------------
def _obj(raw: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MessageError(name, "must be an object")
    return value


def _ident(raw: Mapping[str, Any], name: str) -> str | None:
    """An id field: a string or an integer (analytics-python stringifies numbers), "" is
    absent, at most 128 characters (the spec's limit)."""
    value = raw.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MessageError(name, "must be a string")
    value = str(value)
    if len(value) > 128:
        raise MessageError(name, "must be at most 128 characters")
    return value


def write_key(doc: Any) -> str | None:
    """The body's `writeKey` (what analytics-swift and analytics-kotlin send instead of an
    Authorization header), or None."""
    if not isinstance(doc, dict):
        return None
    value = doc.get("writeKey")
    return value if isinstance(value, str) and value else None


def _fit(obj: Mapping[str, Any], limit: int) -> dict[str, Any]:
    """`obj` itself if its JSON fits in `limit` bytes, else its first keys that fit, plus
    `_omitted`: how many were left out (Segment allows 32 KB a message, the spec 4 KiB of
    props or context: Kairos keeps what fits rather than refusing the event)."""
    if len(_enc.encode(obj)) <= limit:
        return dict(obj)
    out: dict[str, Any] = {}
    size, omitted, budget = 2, 0, limit - len('"_omitted":99999,')
    for key, value in obj.items():
        piece = len(_enc.encode(key)) + len(_enc.encode(value)) + 2
        if size + piece <= budget:
            out[key] = value
            size += piece
        else:
            omitted += 1
    out["_omitted"] = omitted
    return out


def _event(body: dict[str, Any], now_ms: int) -> spec.Event:
    """The mapped fields -> a validated Kairos event (`ts` checked, `received_at` stamped).
    What this module builds already follows the spec; the spec's own checks run again here
    so that nothing unchecked reaches the log."""
    good, bad = spec.validate([body], now_ms)
    if bad:
        where = bad[0].field
        head = where.split(".")[0].split("[")[0]
        raise MessageError(_SPEC_TO_SEGMENT.get(where, _SPEC_TO_SEGMENT.get(head, where)), bad[0].reason)
    return good[0]


_SPEC_TO_SEGMENT = {
    "event_id": "messageId", "visitor_id": "anonymousId", "user_id": "userId",
    "ts": "timestamp", "item": "properties", "items": "properties.products",
    "props": "properties", "context": "context", "decision_id": "properties.decision_id",
    "type": "event",
}
