"""The event spec: one shape for every channel, validated event by event.

Pure: bytes or plain objects in, typed events or per-field errors out. The receipt time
(`now_ms`) is passed in. Errors name the field and say what is wrong in words a client
developer can act on ("visitor_id must be a string"), never a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import msgspec

MAX_EVENTS_PER_REQUEST = 500
MAX_BODY_BYTES = 1 << 20
MAX_PROPS_BYTES = 4096
MAX_CONTEXT_BYTES = 4096
# Amplifiers: what one event may carry, so that the work it causes downstream (profile
# credits, reco tables, live counters) is bounded per event (docs/security-bounds.md).
MAX_LINES = 100  # cart or order lines in `items`
MAX_CATEGORIES = 8  # category paths per item or line
MAX_PATH_DEPTH = 8  # levels of one category path ("a/b/c" has 3)
MAX_TAGS = 32
MAX_DEPTH = 8  # nesting of `props` and `context` (an object holding only scalars is 1)
FUTURE_TOLERANCE_MS = 24 * 3600 * 1000
MIN_TS_MS = 946_684_800_000  # 2000-01-01: anything older is a unit mistake, not a real event

STANDARD_TYPES = (
    "page_view",
    "item_view",
    "add_to_cart",
    "remove_from_cart",
    "purchase",
    "search",
    "identify",
    "impression",
    "click",
    "dismiss",
    "conversion",
)
REACTION_TYPES = frozenset({"impression", "click", "dismiss", "conversion"})

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.:-]*$"
_Type = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_NAME_PATTERN)]
_Channel = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=_NAME_PATTERN)]
_Categories = Annotated[list[_Name], msgspec.Meta(max_length=MAX_CATEGORIES)]
_Paths = Annotated[list[_Name], msgspec.Meta(max_length=MAX_TAGS)]
_UserHash = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{64}$")]
_Price = Annotated[float, msgspec.Meta(ge=0, le=1e12)]


class Item(msgspec.Struct, omit_defaults=True):
    """An item the event is about: a product, an article, an offer."""

    id: _Id
    categories: _Categories | None = None
    brand: _Name | None = None
    tags: _Paths | None = None
    price: _Price | None = None
    name: Annotated[str, msgspec.Meta(max_length=512)] | None = None


class Line(msgspec.Struct, omit_defaults=True):
    """One line of a cart or an order."""

    id: _Id
    quantity: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1
    price: _Price | None = None
    categories: _Categories | None = None
    brand: _Name | None = None


class Event(msgspec.Struct, omit_defaults=True):
    """One behavioural event, as a client sends it and as it travels on the `events` topic."""

    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    type: _Type
    visitor_id: _Id
    user_id: _Id | None = None
    # HMAC-SHA256(identity secret, user_id) as hex, computed by the site's own server: what a
    # public key needs to name a user_id (engine/logic/trust.py verifies it); never stored
    user_hash: _UserHash | None = None
    channel: _Channel | None = None
    ts: int | str | None = None
    item: Item | None = None
    items: Annotated[list[Line], msgspec.Meta(max_length=MAX_LINES)] | None = None
    context: dict[str, Any] | None = None
    props: dict[str, Any] | None = None
    decision_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    received_at: int | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one event of a batch was refused."""

    index: int
    field: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "reason": self.reason}


class BodyError(Exception):
    """The request body as a whole is unusable (status says which 4xx)."""

    def __init__(self, status: int, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}".strip())
        self.status = status
        self.field = field
        self.reason = reason


_EXPECTED = {
    "str": "must be a string",
    "int": "must be an integer",
    "float": "must be a number",
    "object": "must be an object",
    "array": "must be an array",
    "bool": "must be a boolean",
}
_RE_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_RE_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]+)`")
_RE_EXPECTED = re.compile(r"Expected `(?P<what>[^`]+)`(?P<rest>.*)$")


def _path_to_field(path: str) -> str:
    # "$.item.categories[3]" -> "item.categories[3]"
    return path[1:] if path.startswith(".") else path


def _humanise(exc: msgspec.ValidationError | msgspec.DecodeError) -> tuple[str, str]:
    """Turn msgspec's message into (field, reason)."""
    msg = str(exc)
    at = _RE_AT.search(msg)
    path = _path_to_field(at.group("path")) if at else ""
    head = msg[: at.start()] if at else msg
    if m := _RE_MISSING.search(head):
        field = f"{path}.{m.group('name')}" if path else m.group("name")
        return field, "is required"
    if m := _RE_EXPECTED.match(head):
        what, rest = m.group("what"), m.group("rest").strip()
        base = what.split("|")[0].strip()
        if rest.startswith("of length <= "):
            unit = "characters" if base == "str" else "entries"
            return path, f"must have at most {rest.rsplit(' ', 1)[-1]} {unit}" if unit == "entries" else f"must be at most {rest.rsplit(' ', 1)[-1]} {unit}"
        if rest.startswith("of length >= "):
            return path, "must not be empty"
        if rest.startswith("matching regex") and path == "user_hash":
            return path, "must be 64 hexadecimal characters (HMAC-SHA256 of the user_id)"
        if rest.startswith("matching regex"):
            return path, "must start with a letter and use only letters, digits and _ . : -"
        if rest.startswith((">", "<")):
            bound = rest.split(" ", 1)
            num = bound[1].removesuffix(".0")
            return path, f"must be {bound[0]} {num}"
        if path == "ts":
            return path, "must be an RFC 3339 string or epoch milliseconds"
        return path or "event", _EXPECTED.get(base, f"must be {what}")
    return path or "event", head


def parse_ts(value: int | str, now_ms: int) -> int:
    """Validate a client time and return epoch milliseconds; raise ValueError with the reason."""
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError("must be an RFC 3339 time or epoch milliseconds") from None
        if dt.tzinfo is None:
            raise ValueError("must include a time zone offset (e.g. Z or +02:00)")
        ms = int(dt.timestamp() * 1000)
    else:
        ms = value
        if 0 < ms < 100_000_000_000:
            raise ValueError("looks like epoch seconds; send epoch milliseconds")
    if ms < MIN_TS_MS:
        raise ValueError("is before the year 2000")
    if ms > now_ms + FUTURE_TOLERANCE_MS:
        raise ValueError("is more than 24 hours in the future")
    return ms


def _json_size(value: Any) -> int:
    return len(msgspec.json.encode(value))


def nesting_depth(value: Any, limit: int) -> int:
    """How deep arrays and objects nest in `value` (a scalar is 0, `{"a": 1}` is 1), without
    recursion; stops counting once past `limit` (the answer is then `limit + 1`)."""
    depth = 0
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list | tuple) else None
        if children is None:
            continue
        if d > limit:
            return limit + 1
        if d > depth:
            depth = d
        for c in children:  # (a loop, not a generator: most events' values are flat)
            if isinstance(c, _NESTED):
                stack.append((c, d + 1))
    return depth


_NESTED = (dict, list, tuple)


def _deep_path(ev: Event) -> tuple[str, str] | None:
    """The first category path with more than MAX_PATH_DEPTH levels, as an error."""
    things: list[Item | Line] = ([ev.item] if ev.item is not None else []) + list(ev.items or ())
    for n, thing in enumerate(things):
        for j, path in enumerate(thing.categories or ()):
            # fewer slashes than the limit cannot make more levels: not split (most paths)
            if path.count("/") >= MAX_PATH_DEPTH and \
                    sum(1 for part in path.split("/") if part) > MAX_PATH_DEPTH:
                where = "item" if ev.item is not None and n == 0 else \
                    f"items[{n - (1 if ev.item is not None else 0)}]"
                return (f"{where}.categories[{j}]",
                        f"must have at most {MAX_PATH_DEPTH} levels (a/b/c has 3)")
    return None


def check_event(ev: Event, now_ms: int) -> tuple[str, str] | None:
    """Checks msgspec's types cannot express. Normalises `ts` in place; returns an error or None."""
    if ev.ts is None:
        ev.ts = now_ms
    else:
        try:
            ev.ts = parse_ts(ev.ts, now_ms)
        except ValueError as exc:
            return "ts", str(exc)
    ev.received_at = now_ms
    return bounds_error(ev)


def bounds_error(ev: Event) -> tuple[str, str] | None:
    """The bounds msgspec's types cannot express (nesting, sizes, path depth, a reaction's
    decision id), as an error or None. The worker checks them again on every record: a record
    may have been written to the topic by something other than the API."""
    for name, value in (("props", ev.props), ("context", ev.context)):
        if value is not None and nesting_depth(value, MAX_DEPTH) > MAX_DEPTH:
            return name, f"must not nest more than {MAX_DEPTH} levels deep"
    if ev.props is not None and _json_size(ev.props) > MAX_PROPS_BYTES:
        return "props", f"must be at most {MAX_PROPS_BYTES} bytes as JSON"
    if ev.context is not None and _json_size(ev.context) > MAX_CONTEXT_BYTES:
        return "context", f"must be at most {MAX_CONTEXT_BYTES} bytes as JSON"
    if ev.type in REACTION_TYPES and ev.type != "conversion" and ev.decision_id is None:
        return "decision_id", f"is required for {ev.type} events"
    return _deep_path(ev)


_json_event = msgspec.json.Decoder(Event)
_mp_event = msgspec.msgpack.Decoder(Event)
_json_any = msgspec.json.Decoder()
_mp_any = msgspec.msgpack.Decoder()
_json_enc = msgspec.json.Encoder()
_mp_enc = msgspec.msgpack.Encoder()


def _unwrap(doc: Any) -> list[Any]:
    if isinstance(doc, list):
        events = doc
    elif isinstance(doc, dict):
        if "events" in doc:
            events = doc["events"]
            if not isinstance(events, list):
                raise BodyError(400, "events", "must be an array")
        else:
            events = [doc]
    else:
        raise BodyError(400, "body", "must be an event object, an array of events, or {\"events\": [...]}")
    if not events:
        raise BodyError(400, "events", "must contain at least one event")
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise BodyError(413, "events", f"must contain at most {MAX_EVENTS_PER_REQUEST} events per request")
    return events


MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
JSON_TYPES = ("application/json", "text/plain", "")
TOO_DEEP = "nests too deeply"


def decode_any(body: bytes, media_type: str) -> Any:
    """A JSON or msgpack body as plain objects; BodyError (400, 415) names what is wrong.

    msgspec raises RecursionError (not a decode error) on very deep input (~1,000 levels):
    that is a 400 too. Below it, only the free-form fields (`props`, `context`) may nest, and
    `check_event` bounds them; unknown fields are dropped by the typed conversion."""
    decoder: msgspec.msgpack.Decoder[Any] | msgspec.json.Decoder[Any]
    if media_type in MSGPACK_TYPES:
        kind, decoder = "msgpack", _mp_any
    elif media_type in JSON_TYPES:
        kind, decoder = "JSON", _json_any
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BodyError(400, "body", f"is not valid UTF-8 (byte {exc.start})") from None
    else:
        raise BodyError(
            415, "content-type", "must be application/json, text/plain or application/msgpack"
        )
    try:
        doc = decoder.decode(body)
    except RecursionError:
        raise BodyError(400, "body", TOO_DEEP) from None
    except (msgspec.DecodeError, ValueError) as exc:
        raise BodyError(400, "body", f"is not valid {kind} ({exc})") from None
    return doc


def decode_body(body: bytes, media_type: str) -> list[Any]:
    """Parse a request body into a list of raw (unvalidated) events."""
    if len(body) > MAX_BODY_BYTES:
        raise BodyError(413, "body", f"must be at most {MAX_BODY_BYTES} bytes")
    return _unwrap(decode_any(body, media_type))


def validate(raw_events: Iterable[Any], now_ms: int) -> tuple[list[Event], list[Rejection]]:
    """Validate each raw event on its own: the good ones pass even when others fail."""
    good, bad, _ = validate_indexed(raw_events, now_ms)
    return good, bad


def validate_indexed(raw_events: Iterable[Any], now_ms: int
                     ) -> tuple[list[Event], list[Rejection], list[int]]:
    """`validate`, plus the index in the request of each good event."""
    good: list[Event] = []
    where: list[int] = []
    bad: list[Rejection] = []
    convert = msgspec.convert
    for i, raw in enumerate(raw_events):
        if not isinstance(raw, dict):
            bad.append(Rejection(i, "event", "must be an object"))
            continue
        try:
            ev = convert(raw, Event)
        except msgspec.ValidationError as exc:
            field, reason = _humanise(exc)
            bad.append(Rejection(i, field, reason))
            continue
        except RecursionError:
            bad.append(Rejection(i, "event", f"must not nest more than {MAX_DEPTH} levels deep"))
            continue
        err = check_event(ev, now_ms)
        if err is not None:
            bad.append(Rejection(i, *err))
        else:
            good.append(ev)
            where.append(i)
    return good, bad, where


def encode_events(events: list[Event]) -> bytes:
    """The wire form on the `events` topic: a msgpack array of event maps."""
    return _mp_enc.encode(events)


_mp_events = msgspec.msgpack.Decoder(list[dict[str, Any]])


def decode_events(value: bytes) -> list[dict[str, Any]]:
    """Inverse of `encode_events`, as plain dicts for the pure logic."""
    return _mp_events.decode(value)


def to_dict(ev: Event) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(ev)
    return out


def event_json_schema() -> dict[str, Any]:
    """JSON Schema of the event, for the OpenAPI document."""
    (schema,), components = msgspec.json.schema_components([Event], ref_template="#/components/schemas/{name}")
    return {"ref": schema, "components": components}
