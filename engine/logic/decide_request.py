"""The decide call's request, parsed and validated. Pure.

`POST /v1/decide` takes `{visitor_id, user_id?, context: {zones?, ...}, zones?, events?}` as
JSON or msgpack; `POST /v1/events?decide=zone1,zone2` takes zones alone (`parse_zones`).
Errors name the field (`RequestError`: status, field, reason).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from engine.logic import events as spec

MAX_ZONES = 20


class RequestError(Exception):
    def __init__(self, status: int, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}")
        self.status, self.field, self.reason = status, field, reason


def _id(doc: Mapping[str, Any], name: str, required: bool) -> str | None:
    value = doc.get(name)
    if value is None:
        if required:
            raise RequestError(400, name, "is required")
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 128:
        raise RequestError(400, name, "must be a string of 1 to 128 characters")
    return value


def parse_zones(raw: Any, field: str = "context.zones") -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [z for z in raw.split(",") if z]
    if not isinstance(raw, list) or len(raw) > MAX_ZONES:
        raise RequestError(400, field, f"must be a list of at most {MAX_ZONES} zone names")
    out: list[str] = []
    for z in raw:
        if not isinstance(z, str) or not 1 <= len(z) <= 64:
            raise RequestError(400, field, "must contain zone names of 1 to 64 characters")
        if z not in out:
            out.append(z)
    return out


def parse_request(body: bytes, mtype: str) -> dict[str, Any]:
    try:
        doc = spec.decode_any(body, mtype)
    except spec.BodyError as exc:
        raise RequestError(exc.status, exc.field, exc.reason) from None
    if not isinstance(doc, dict):
        raise RequestError(400, "body", "must be an object with visitor_id and context")
    vid = _id(doc, "visitor_id", True)
    uid = _id(doc, "user_id", False)
    uhash = doc.get("user_hash")
    if uhash is not None and (not isinstance(uhash, str) or len(uhash) != 64):
        raise RequestError(400, "user_hash", "must be 64 hex characters (HMAC-SHA256 of user_id)")
    context = doc.get("context")
    context = {} if context is None else context
    if not isinstance(context, dict):
        raise RequestError(400, "context", "must be an object")
    if spec.nesting_depth(context, spec.MAX_DEPTH) > spec.MAX_DEPTH:
        raise RequestError(400, "context", f"must not nest more than {spec.MAX_DEPTH} levels deep")
    try:
        size = len(msgspec.json.encode(context))
    except TypeError:  # msgpack can carry what JSON cannot: a nil or array key, an ext value
        raise RequestError(400, "context", "must hold only JSON values (string keys; no "
                           "msgpack extension types)") from None
    if size > spec.MAX_CONTEXT_BYTES:
        raise RequestError(400, "context", f"must be at most {spec.MAX_CONTEXT_BYTES} bytes as JSON")
    zones = parse_zones(context.get("zones"), "context.zones") or parse_zones(doc.get("zones"), "zones")
    events = doc.get("events")
    events = [] if events is None else events
    if not isinstance(events, list) or len(events) > spec.MAX_EVENTS_PER_REQUEST:
        raise RequestError(400, "events", f"must be a list of at most {spec.MAX_EVENTS_PER_REQUEST} events")
    for ev in events:  # the call's visitor is the default of its events
        if isinstance(ev, dict):
            ev.setdefault("visitor_id", vid)
            if uid:
                ev.setdefault("user_id", uid)
                if uhash and ev.get("user_id") == uid:
                    ev.setdefault("user_hash", uhash)
    return {"visitor_id": vid, "user_id": uid, "user_hash": uhash, "context": context,
            "zones": zones, "events": events}
