"""POST /v1/decide, GET /v1/campaigns, GET /v1/campaigns/{id}/stats.

A decision reads everything it needs — the profile (following the visitor's alias), the
visitor's campaign state (caps) and, at most once a second, the campaign counters — in one
Redis round trip (engine/lua/decide_read.lua), folds the events sent with the call into the
profile in memory, and runs the pure selection (engine.logic.decisions.select) on the compiled
campaigns the `ConfigHub` keeps. The read has a deadline (`decide_deadline_ms`): when Redis is
slow or down the answer is an empty decision list, never an error. Every decision, control
included, is logged as an event of type `decision` on the `decisions` topic, which the stream
counts as an assignment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.confighub import ConfigHub, default_hub
from engine.logic import events as spec
from engine.logic.decisions.assign import CONTROL
from engine.logic.decisions.config import Campaign, Config
from engine.logic.decisions.select import select
from engine.logic.decisions.state import cap_states, decision_id, decision_record, rule_view
from engine.logic.decisions.stats import ArmCounts, report
from engine.routes import error, json_response, svc
from engine.routes.ingest import append, media_type, read_body, screen
from engine.services import Services
from engine.store import keys
from engine.store.profiles import decode
from models.affinity import Profile, apply_event

log = logging.getLogger("kairos.decide")

_READ_LUA = (Path(__file__).resolve().parent.parent / "store" / "lua" / "decide_read.lua").read_text()
MAX_ZONES = 20
STATS_TTL_S = 1.0
LOG_FLUSH_S = 0.02  # decision records are produced in batches this often
_enc = msgspec.msgpack.Encoder()
_json_any = msgspec.json.Decoder()
_mp_any = msgspec.msgpack.Decoder()


class RequestError(Exception):
    def __init__(self, status: int, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}")
        self.status, self.field, self.reason = status, field, reason


@dataclass(slots=True)
class Snapshot:
    """What one round trip read."""

    pid: str
    profile: Profile | None
    state: dict[bytes, bytes]
    session: dict[bytes, bytes]


def _pairs(flat: Sequence[Any]) -> dict[Any, Any]:
    return dict(zip(flat[0::2], flat[1::2], strict=True))


class Decider:
    """The decision service of one API process (made at start-up)."""

    def __init__(self, services: Services, hub: ConfigHub) -> None:
        self.svc = services
        self.hub = hub
        self.settings = services.settings
        self.cfg = services.settings.affinity
        self.deadline_s = services.settings.decide_deadline_ms / 1000.0
        self._read = services.redis.register_script(_READ_LUA)
        self._formats = (keys.template(keys.profile), keys.template(keys.campaign_state),
                         keys.template(keys.campaign_session))
        self.counters: dict[str, tuple[float, dict[str, dict[str, int]]]] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self._buffer: list[tuple[bytes, bytes]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.failures = 0

    # -- the one round trip -----------------------------------------------------------------
    async def read(self, visitor_id: str, user_id: str | None, campaign_ids: Sequence[str]
                   ) -> Snapshot:
        now = time.monotonic()
        stale = [c for c in campaign_ids if now - self.counters.get(c, (-1e9, {}))[0] > STATS_TTL_S]
        pid, blob, state, session, stats = await self._read(
            keys=[keys.alias(visitor_id)],
            args=[keys.visitor_pid(visitor_id), keys.user_pid(user_id) if user_id else "",
                  *self._formats, *(keys.campaign_stats(c) for c in stale)],
        )
        for cid, flat in zip(stale, stats, strict=True):
            arms: dict[str, dict[str, int]] = {}
            for field, value in _pairs(flat).items():
                arm, _, counter = field.decode().rpartition(":")
                arms.setdefault(arm, {})[counter] = int(value)
            self.counters[cid] = (now, arms)
        return Snapshot(pid.decode(), decode(blob).profile if blob else None,
                        _pairs(state), _pairs(session))

    # -- deciding ---------------------------------------------------------------------------
    async def decide(self, visitor_id: str, user_id: str | None, context: Mapping[str, Any],
                     zones: Sequence[str], events: Sequence[spec.Event], now_ms: int,
                     started: float) -> tuple[list[dict[str, Any]], str | None]:
        """(decisions as dicts, why they are empty when degraded, else None)."""
        config: Config | None = self.hub.decisions
        if config is None or not zones:
            return [], None if config is not None else "no valid decision configuration"
        candidates = list(dict.fromkeys(c.id for z in zones for c in config.by_zone.get(z, ())))
        if not candidates:
            return [], None
        remaining = self.deadline_s - (time.perf_counter() - started)
        try:
            snap = await asyncio.wait_for(self.read(visitor_id, user_id, candidates),
                                          max(remaining, 0.001))
        except Exception as exc:  # slow or missing Redis: no personalization, never a 5xx
            self.failures += 1
            if self.failures in (1, 10, 100) or self.failures % 1000 == 0:
                log.warning("decide degraded (%d so far): %s", self.failures,
                            type(exc).__name__ if isinstance(exc, TimeoutError) else exc)
            return [], "state unavailable within the deadline"
        profile = snap.profile or Profile()
        for ev in events:
            if ev.visitor_id == visitor_id:
                apply_event(profile, spec.to_dict(ev), self.cfg)
        assign_pid = keys.user_pid(user_id) if user_id else snap.pid
        view = rule_view(profile, assign_pid, now_ms, self.cfg)
        caps = cap_states(snap.state, snap.session, config, now_ms)
        chosen = select(config, view, context, now_ms, caps, zones)
        out: list[dict[str, Any]] = []
        records: list[dict[str, Any]] = []
        channel = context.get("channel") if isinstance(context.get("channel"), str) else None
        for d in chosen:
            did = decision_id(d.campaign_id, d.arm, os.urandom(5).hex())
            body = d.to_dict()
            body["decision_id"] = did
            out.append(body)
            records.append(decision_record(d, did, visitor_id, user_id, now_ms, channel))
        if records:
            self._log(visitor_id, records)
        return out, None

    def _log(self, visitor_id: str, records: list[dict[str, Any]]) -> None:
        """Queue the records; they are produced together every LOG_FLUSH_S (one produce
        request for many decisions: a request per decision would cost more than deciding)."""
        self._buffer.append((visitor_id.encode(), _enc.encode(records)))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(LOG_FLUSH_S))
            self._pending.add(self._flusher)
            self._flusher.add_done_callback(self._pending.discard)

    async def _flush(self, after_s: float) -> None:
        await asyncio.sleep(after_s)
        batch, self._buffer = self._buffer, []
        if not batch:
            return
        try:
            producer = await self.svc.events.producer()
            sent = [await producer.send(self.settings.decisions_topic, value, key=key)
                    for key, value in batch]
            results = await asyncio.gather(*sent, return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                raise failed[0]
        except Exception as exc:  # the decisions stand; only their counts are lost
            log.warning("could not log %d decision records: %s", len(batch), exc)

    async def close(self) -> None:
        if self._buffer:
            await self._flush(0)
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=2.0)


# -- request parsing --------------------------------------------------------------------------
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
        if mtype in ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack"):
            doc = _mp_any.decode(body)
        elif mtype in ("application/json", "text/plain", ""):
            doc = _json_any.decode(body)
        else:
            raise RequestError(415, "content-type",
                               "must be application/json, text/plain or application/msgpack")
    except (msgspec.DecodeError, ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, "body", f"is not valid JSON or msgpack ({exc})") from None
    if not isinstance(doc, dict):
        raise RequestError(400, "body", "must be an object with visitor_id and context")
    vid = _id(doc, "visitor_id", True)
    uid = _id(doc, "user_id", False)
    context = doc.get("context")
    context = {} if context is None else context
    if not isinstance(context, dict):
        raise RequestError(400, "context", "must be an object")
    if len(msgspec.json.encode(context)) > spec.MAX_CONTEXT_BYTES:
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
    return {"visitor_id": vid, "user_id": uid, "context": context, "zones": zones, "events": events}


# -- handlers ---------------------------------------------------------------------------------
def decider(request: Request) -> Decider:
    return svc(request).extra["decider"]  # type: ignore[no-any-return]


async def decide_inline(request: Request, good: Sequence[spec.Event], zones_param: str,
                        now_ms: int, started: float) -> dict[str, Any]:
    """`POST /v1/events?decide=zone1,zone2`: decisions for the batch's (last) visitor."""
    try:
        zones = parse_zones(zones_param, "decide")
    except RequestError as exc:
        return {"decisions": [], "decide_error": f"{exc.field} {exc.reason}"}
    last = good[-1]
    context = dict(last.context or {})
    if last.channel and "channel" not in context:
        context["channel"] = last.channel
    out, degraded = await decider(request).decide(last.visitor_id, last.user_id, context, zones,
                                                  good, now_ms, started)
    body: dict[str, Any] = {"decisions": out}
    if degraded:
        body["degraded"] = degraded
    return body


async def post_decide(request: Request) -> Response:
    started = time.perf_counter()
    now_ms = int(time.time() * 1000)
    try:
        body = await read_body(request, spec.MAX_BODY_BYTES)
        req = parse_request(body, media_type(request))
    except spec.BodyError as exc:
        return error(exc.status, exc.field, exc.reason)
    except RequestError as exc:
        return error(exc.status, exc.field, exc.reason)
    s = svc(request)
    # the call's events are validated once, appended while the state is read, and seen by
    # the decision
    good, rejected = screen(s, req["events"], now_ms) if req["events"] else ([], [])
    ingest = asyncio.create_task(append(s, good)) if good else None
    if ingest is not None:
        await asyncio.sleep(0)
    decisions, degraded = await decider(request).decide(
        req["visitor_id"], req["user_id"], req["context"], req["zones"], good, now_ms, started)
    if ingest is not None and (failure := await ingest) is not None:
        # the broker did not take the events: say so (503 + Retry-After) so the client keeps
        # and resends them, rather than a 200 it would read as "delivered"
        return failure
    out: dict[str, Any] = {"visitor_id": req["visitor_id"], "decisions": decisions}
    if degraded:
        out["degraded"] = degraded
    if req["events"]:
        out["events"] = {"accepted": len(good), "rejected": rejected}
    return json_response(out)


def _config(request: Request) -> Config | None:
    hub: ConfigHub = svc(request).extra["confighub"]
    return hub.decisions


def campaign_summary(c: Campaign) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "description": c.description,
        "status": c.status,
        "priority": c.priority,
        "zones": list(c.zones),
        "channels": sorted(c.channels) if c.channels is not None else None,
        "schedule": {
            "start": c.schedule.start.isoformat() if c.schedule.start else None,
            "end": c.schedule.end.isoformat() if c.schedule.end else None,
            "timezone": str(c.schedule.timezone),
        },
        "caps": {"per_day": c.caps.per_day, "per_session": c.caps.per_session,
                 "stop_after": sorted(c.caps.stop_after)},
        "control_percent": c.control_percent,
        "variants": [{"id": v.id, "weight": v.weight} for v in c.variants],
        "arms": c.arm_probabilities(),
        "goal": {"event": c.goal.event, "window_ms": c.goal.window_ms} if c.goal else None,
        "source": c.source,
    }


async def get_campaigns(request: Request) -> Response:
    hub: ConfigHub = svc(request).extra["confighub"]
    config = hub.decisions
    sizes: dict[str, int] = {}
    with contextlib.suppress(Exception):
        raw = await asyncio.wait_for(svc(request).redis.hgetall(keys.SEGMENT_SIZES), 1.0)
        sizes = {k.decode(): int(v) for k, v in raw.items()}
    return json_response({
        "campaigns": [campaign_summary(c) for c in config.campaigns.values()] if config else [],
        "segments": [{"id": s.id, "name": s.name, "description": s.description, "source": s.source,
                      "size": sizes.get(s.id, 0)}
                     for s in config.segments.values()] if config else [],
        "config": hub.status(),
    })


def _rate(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


async def get_campaign_stats(request: Request) -> Response:
    cid = request.path_params["campaign_id"]
    config = _config(request)
    campaign = config.campaigns.get(cid) if config else None
    if campaign is None:
        return error(404, "campaign_id", f"{cid!r} is not a known campaign")
    try:
        raw = await svc(request).redis.hgetall(keys.campaign_stats(cid))
    except Exception as exc:
        return json_response({"error": f"stats store unavailable ({exc})"}, 503)
    arms: dict[str, dict[str, int]] = {}
    for field, value in raw.items():
        arm, _, counter = field.decode().rpartition(":")
        arms.setdefault(arm, {})[counter] = int(value)
    probs = campaign.arm_probabilities()
    counts = {a: ArmCounts(arms.get(a, {}).get("assigned", 0), arms.get(a, {}).get("impressions", 0),
                           arms.get(a, {}).get("clicks", 0), arms.get(a, {}).get("conversions", 0))
              for a in probs}
    rep = report(counts, probs)
    rows = []
    for arm in rep.arms:
        c = arm.counts
        row: dict[str, Any] = {
            "arm": arm.arm,
            "control": arm.arm == CONTROL,
            "expected_share": round(probs[arm.arm], 6),
            "assigned": c.assigned,
            "impressions": c.impressions,
            "clicks": c.clicks,
            "dismissals": arms.get(arm.arm, {}).get("dismissals", 0),
            "conversions": c.conversions,
            "ctr": _rate(arm.ctr),
            "conversion_rate": _rate(arm.conversion_rate),
            "verdict": arm.verdict,
        }
        if arm.comparison is not None:
            cmp = arm.comparison
            row["vs_baseline"] = {
                "diff": _rate(cmp.diff), "diff_low": _rate(cmp.diff_low), "diff_high": _rate(cmp.diff_high),
                "lift": _rate(cmp.lift), "lift_low": _rate(cmp.lift_low), "lift_high": _rate(cmp.lift_high),
                "p_value": _rate(cmp.p_value), "enough_data": cmp.enough_data,
            }
        rows.append(row)
    return json_response({
        "campaign": cid,
        "name": campaign.name,
        "baseline": rep.baseline,
        "arms": rows,
        "srm": {"p_value": _rate(rep.srm_p_value), "ok": rep.srm_ok},
        "verdict": rep.verdict,
    })


async def startup(s: Services) -> None:
    hub = default_hub(s.settings.config_dir, s.settings.config_reload_debounce_ms)
    await hub.start()
    s.extra["confighub"] = hub
    s.extra["decider"] = Decider(s, hub)


async def shutdown(s: Services) -> None:
    if "decider" in s.extra:
        await s.extra["decider"].close()
    if "confighub" in s.extra:
        await s.extra["confighub"].stop()


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/decide", post_decide, methods=["POST"]),
        Route("/v1/campaigns", get_campaigns, methods=["GET"]),
        Route("/v1/campaigns/{campaign_id}/stats", get_campaign_stats, methods=["GET"]),
    ]
