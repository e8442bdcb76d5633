"""The HTTP service: the app factory that mounts the route modules of `engine.routes`.

Clients (Redis pool, Kafka producer), stores and flows are made in the ASGI lifespan
(engine/services.py `running`), never at import.
`create_app(settings, redis_url, bootstrap)` is the factory; `app_from_env()` is what
`kairos api` hands to uvicorn (it reads the settings the CLI serialised for its children).
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from engine import metrics
from engine.gate import HostCheck, Shield, add_nosniff, admit, guard, host_refusal
from engine.logic import segment as seg
from engine.logic.access import METRICS, OPEN, OPEN_SIGNED_IN, SIGNED_IN, Policy, needs
from engine.logic.access import Scope as Can
from engine.routes import (
    MAX_REQUEST_BYTES,
    Bare,
    access,
    admin,
    catalog,
    dashboard,
    decide,
    demo,
    dm_api,
    evaluation,
    ingest,
    mailtrack,
    ops,
    portal,
    privacy,
    profiles,
    rank,
    recommendations,
    sdk,
    segment,
    stats,
    trending,
)
from engine.services import running
from engine.settings import Settings

#: The route modules, in the order their routes are matched (the hot ones first: Starlette
#: tries each route's pattern in turn, and no two modules' patterns overlap).
ROUTE_MODULES = (ingest, decide, profiles, ops, stats, sdk, demo, dashboard, catalog, trending,
                 recommendations, access, admin, privacy, portal, dm_api, mailtrack,
                 segment, rank, evaluation)

_WRITE = needs(Can.EVENTS_WRITE, public=True, session=False)  # a page, an app or a server
# Segment's tracking API: the same callers, and the key may come as `writeKey` in the body
# (analytics-swift / -kotlin send no Authorization header); see engine/gate.py PendingKey
_SEGMENT = needs(Can.EVENTS_WRITE, public=True, session=False, body_key=True)
_DECIDE = needs(Can.DECIDE, public=True, session=False)
_BEACON = needs(Can.EVENTS_WRITE, Can.DECIDE, public=True, session=False)
_ANALYST = needs(Can.STATS_READ)
_PROFILES = needs(Can.PROFILES_READ)
_DASHBOARD = needs(Can.STATS_READ, page=True)
_ADMIN_PAGE = needs(Can.ADMIN, page=True)
_PARTNER = needs(Can.DM)  # a partner user, or a secret key tied to one partner
_PARTNER_PAGE = needs(Can.DM, page=True)
_BRAND = needs(Can.DM_BRAND)  # marketers and admins
_BRAND_PAGE = needs(Can.DM_BRAND, page=True)

#: Who may call each route: (method, path template) -> policy; "*" for a mounted app.
#: Default deny: `create_app` refuses to start with a route missing here, and
#: tests/integration/test_access_routes.py walks every route against every kind of caller.
POLICY: dict[tuple[str, str], Policy] = {
    ("POST", "/v1/events"): _WRITE,
    ("POST", "/v1/decide"): _DECIDE,
    ("GET", "/v1/recommendations"): _DECIDE,
    ("GET", "/sdk/kairos.js"): _BEACON,
    ("GET", "/v1/profiles/{visitor_id:path}"): _PROFILES,
    ("GET", "/v1/stats/traffic"): _ANALYST,
    ("GET", "/v1/stats/segments"): _ANALYST,
    ("GET", "/v1/stats/stream"): _ANALYST,
    ("GET", "/v1/stats/trending"): _ANALYST,
    ("GET", "/v1/campaigns"): _ANALYST,
    ("GET", "/v1/campaigns/{campaign_id}/stats"): _ANALYST,
    ("GET", "/v1/campaigns/{campaign_id}/evaluation"): _ANALYST,
    # the Rank/Reward API: servers only (a secret key with scope decide)
    ("POST", "/v1/rank"): needs(Can.DECIDE, session=False),
    ("POST", "/v1/rank/{event_id}/reward"): needs(Can.DECIDE, session=False),
    ("POST", "/v1/rank/{event_id}/activate"): needs(Can.DECIDE, session=False),
    ("POST", "/v1/catalog/items"): needs(Can.CATALOG_WRITE),
    ("GET", "/v1/catalog/items/{item_id:path}"): needs(Can.CATALOG_WRITE, Can.STATS_READ),
    ("DELETE", "/v1/catalog/items/{item_id:path}"): needs(Can.CATALOG_WRITE),
    ("GET", "/v1/privacy/subjects/{subject_id:path}"): needs(Can.PRIVACY),
    ("DELETE", "/v1/privacy/subjects/{subject_id:path}"): needs(Can.PRIVACY),
    ("GET", "/dashboard"): _DASHBOARD,
    ("GET", "/dashboard/"): _DASHBOARD,
    ("GET", "/dashboard/{name}"): _DASHBOARD,
    ("GET", "/healthz"): OPEN,
    ("GET", "/readyz"): OPEN,
    ("GET", "/metrics"): METRICS,
    ("GET", "/openapi.json"): OPEN,
    ("GET", "/docs"): OPEN,
    # the demo shop: open, its pages carry the demo's own public key
    ("GET", "/demo"): OPEN,
    ("GET", "/demo/"): OPEN,
    ("GET", "/demo/c/{path:path}"): OPEN,
    ("GET", "/demo/p/{pid}"): OPEN,
    ("GET", "/demo/cart"): OPEN,
    ("GET", "/demo/checkout"): OPEN,
    ("GET", "/demo/checkout/done"): OPEN,
    ("GET", "/demo/search"): OPEN,
    ("*", "/demo/static"): OPEN,
    # signing in and the pages' stylesheets
    ("GET", "/login"): OPEN_SIGNED_IN,
    ("POST", "/login"): OPEN,
    ("GET", "/login/once/{token}"): OPEN,
    ("POST", "/logout"): SIGNED_IN,
    ("GET", "/assets/{name}"): OPEN,
    # admin (role admin, or a secret key with scope admin)
    ("GET", "/admin"): _ADMIN_PAGE,
    ("POST", "/admin/keys"): _ADMIN_PAGE,
    ("POST", "/admin/keys/{prefix}/revoke"): _ADMIN_PAGE,
    ("POST", "/admin/users"): _ADMIN_PAGE,
    ("POST", "/admin/password"): Policy(signed_in=True, page=True),
    ("GET", "/admin/audit"): _ADMIN_PAGE,
    # distributed marketing: the portal (partners), its brand pages, the API, the mail's links
    ("GET", "/portal"): _PARTNER_PAGE,
    ("GET", "/portal/contacts"): _PARTNER_PAGE,
    ("POST", "/portal/contacts"): _PARTNER_PAGE,
    ("POST", "/portal/contacts/import"): _PARTNER_PAGE,
    ("POST", "/portal/campaigns"): _PARTNER_PAGE,
    ("GET", "/portal/campaigns/{campaign_id}"): _PARTNER_PAGE,
    ("POST", "/portal/campaigns/{campaign_id}/values"): _PARTNER_PAGE,
    ("POST", "/portal/campaigns/{campaign_id}/members"): _PARTNER_PAGE,
    ("POST", "/portal/campaigns/{campaign_id}/submit"): _PARTNER_PAGE,
    ("POST", "/portal/campaigns/{campaign_id}/send"): _PARTNER_PAGE,
    ("GET", "/portal/quick"): _PARTNER_PAGE,
    ("POST", "/portal/quick"): _PARTNER_PAGE,
    ("GET", "/portal/outbox"): needs(Can.DM, Can.DM_BRAND, page=True),
    ("GET", "/portal/outbox/{key}"): needs(Can.DM, Can.DM_BRAND, page=True),
    ("GET", "/portal/brand"): _BRAND_PAGE,
    ("GET", "/portal/brand/approvals/{approval_id}"): _BRAND_PAGE,
    ("POST", "/portal/brand/approvals/{approval_id}"): _BRAND_PAGE,
    ("GET", "/portal/brand/results"): _BRAND_PAGE,
    ("GET", "/portal/brand/releases"): _BRAND_PAGE,
    ("POST", "/portal/brand/releases"): _BRAND_PAGE,
    ("POST", "/portal/brand/releases/{release_id}/retire"): _BRAND_PAGE,
    ("GET", "/portal/brand/partners"): _BRAND_PAGE,
    ("POST", "/portal/brand/partners"): _BRAND_PAGE,
    ("GET", "/portal/brand/suppressions"): _BRAND_PAGE,
    ("GET", "/portal/brand/audit"): _BRAND_PAGE,
    ("GET", "/v1/dm/releases"): _PARTNER,
    ("GET", "/v1/dm/contacts"): _PARTNER,
    ("POST", "/v1/dm/contacts"): _PARTNER,
    ("POST", "/v1/dm/contacts/import"): _PARTNER,
    ("GET", "/v1/dm/contacts/{contact_id}"): _PARTNER,
    ("GET", "/v1/dm/campaigns"): _PARTNER,
    ("POST", "/v1/dm/campaigns"): _PARTNER,
    ("GET", "/v1/dm/campaigns/{campaign_id}"): _PARTNER,
    ("PUT", "/v1/dm/campaigns/{campaign_id}/values"): _PARTNER,
    ("POST", "/v1/dm/campaigns/{campaign_id}/members"): _PARTNER,
    ("GET", "/v1/dm/campaigns/{campaign_id}/preview"): _PARTNER,
    ("POST", "/v1/dm/campaigns/{campaign_id}/submit"): _PARTNER,
    ("POST", "/v1/dm/campaigns/{campaign_id}/send"): _PARTNER,
    ("GET", "/v1/dm/campaigns/{campaign_id}/engagement"): _PARTNER,
    ("GET", "/v1/dm/engagement"): _PARTNER,
    ("POST", "/v1/dm/quick-sends"): _PARTNER,
    ("GET", "/v1/dm/brand/library"): _BRAND,
    ("GET", "/v1/dm/brand/approvals"): _BRAND,
    ("GET", "/v1/dm/brand/approvals/{approval_id}"): _BRAND,
    ("POST", "/v1/dm/brand/approvals/{approval_id}/approve"): _BRAND,
    ("POST", "/v1/dm/brand/approvals/{approval_id}/reject"): _BRAND,
    ("GET", "/v1/dm/brand/releases"): _BRAND,
    ("POST", "/v1/dm/brand/releases"): _BRAND,
    ("POST", "/v1/dm/brand/releases/{release_id}/retire"): _BRAND,
    ("GET", "/v1/dm/brand/results"): _BRAND,
    ("GET", "/v1/dm/brand/partners"): _BRAND,
    ("POST", "/v1/dm/brand/groups"): _BRAND,
    ("GET", "/v1/dm/brand/suppressions"): _BRAND,
    ("GET", "/v1/dm/brand/contacts"): needs(Can.DM_CONTACTS),  # addresses: an explicit permission
    # the mail's links: open, the signed token is the credential (a bad one answers 404)
    ("GET", "/m/o/{token}"): OPEN,
    ("GET", "/m/c/{token}"): OPEN,
    ("GET", "/m/u/{token}"): OPEN,
    ("POST", "/m/u/{token}"): OPEN,
    # Segment's tracking API under /v1 and /segment/v1 (engine/routes/segment.py)
    **{("POST", path): _SEGMENT for path, _ in seg.api_paths()},
    # analytics-next's counters about itself: taken and dropped, nothing stored
    **{("POST", f"{prefix}/{seg.METRICS_ENDPOINT}"): OPEN for prefix in seg.PREFIXES},
}


class MissingPolicy(RuntimeError):
    """A route has no entry in POLICY (default deny: the app does not start)."""


def route_keys(route: BaseRoute) -> list[tuple[str, str]]:
    if isinstance(route, Mount):
        return [("*", route.path)]
    if isinstance(route, Route):
        return [(m, route.path) for m in sorted(route.methods or ()) if m != "HEAD"]
    raise MissingPolicy(f"{route!r}: only Route and Mount are gated")


def gated(routes: list[BaseRoute], policy: dict[tuple[str, str], Policy]) -> list[BaseRoute]:
    """Each route behind its policy; MissingPolicy names every route without one."""
    missing = [k for r in routes for k in route_keys(r) if k not in policy]
    if missing:
        raise MissingPolicy("routes without a policy in engine/api.py POLICY: "
                            + ", ".join(f"{m} {p}" for m, p in missing))
    for r in routes:
        pols = {policy[k] for k in route_keys(r)}
        if len(pols) != 1:
            raise MissingPolicy(f"{r!r}: one route object, one policy")
        target = r.app  # type: ignore[attr-defined]
        r.app = guard(target, pols.pop())  # type: ignore[attr-defined]
    return routes


class _Observe:
    """A request's latency into the Prometheus histogram of its route template and status,
    and the live stats of the /v1/ routes."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, int], Any] = {}  # (route, status) -> its histogram

    def observe(self, scope: Scope, status: int, elapsed: float) -> None:
        path = getattr(scope.get("route"), "path", "other")
        hist = self._children.get((path, status))
        if hist is None:  # prometheus_client's `labels` costs a lock and a tuple per call
            hist = self._children[(path, status)] = metrics.REQUESTS.labels(path, str(status))
        hist.observe(elapsed)
        app = scope.get("app")
        live = app.state.svc.live if app is not None and hasattr(app.state, "svc") else None
        if live is not None and path.startswith("/v1/"):
            live.observe(f"route:{path}", elapsed)


class _Timing:
    """Request latency per route template, into the Prometheus histogram."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._observe = _Observe()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_)
        finally:
            self._observe.observe(scope, status[0], time.perf_counter() - start)


class _TooLarge(Exception):
    pass


class _BodyLimit:
    """Every request body is measured while it streams in, whatever the route: past `limit`
    bytes (or a Content-Length above it) the answer is 413 and nothing more is buffered.
    Routes keep their own, smaller limits (`engine.routes.read_body`)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_REQUEST_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def _refuse(self, send: Send) -> None:
        await self.refuse(self.limit, send)

    @staticmethod
    async def refuse(limit: int, send: Send) -> None:
        reason = f"must be at most {limit} bytes"
        body = orjson.dumps({"error": f"body {reason}", "field": "body", "reason": reason})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(send)
                return
        seen = 0
        started = False

        async def receive_() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def send_(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_, send_)
        except _TooLarge:
            if not started:
                await self._refuse(send)


#: the hottest routes, served from the top of the app by `_Lane` (past Starlette's
#: middleware chain, its exception middleware and its router, which tries each route's
#: pattern in turn): the same route object, so the same endpoint and policy
DIRECT = (("POST", "/v1/decide"),)


def _direct_routes(routes: list[BaseRoute]) -> dict[tuple[str, str], Route]:
    found = {(m, r.path): r for r in routes if isinstance(r, Route) and not r.param_convertors
             for m in (r.methods or ()) if (m, r.path) in DIRECT}
    if len(found) != len(DIRECT):
        raise MissingPolicy(f"direct routes not found: {set(DIRECT) - set(found)}")
    return found


_INTERNAL_ERROR = PlainTextResponse("Internal Server Error", status_code=500)


class _Lane:
    """One `DIRECT` route served from the top of the app in one coroutine: what Starlette's
    error middleware, `Shield`, `_Timing`, `_BodyLimit` and the gate do for it, inline, in
    the same order and with the same functions (`HostCheck`, `add_nosniff`, `admit`), and
    one `send` wrapper where the chain had five. Each middleware layer costs a coroutine and
    a wrapper per message on every request; on `POST /v1/decide` they were ~5 % of the
    time (bench/README.md). Its endpoint is a bare ASGI handler (engine/routes `Bare`) that
    answers its own errors; an exception it raises is a plain 500, as the error middleware
    answers, and goes on to uvicorn."""

    def __init__(self, route: Route, policy: Policy,
                 limit: int = MAX_REQUEST_BYTES) -> None:
        if policy.open or policy.body_key or policy.page:
            raise MissingPolicy(f"{route.path}: a direct route needs a key policy")
        self.route = route
        endpoint = route.endpoint
        self.handler = endpoint.handler if isinstance(endpoint, Bare) else endpoint
        self.policy = policy
        self.timing = _Observe()
        self.limit = limit
        self.hosts = HostCheck()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def outer(message: Any) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._serve(scope, receive, outer)
        except Exception as exc:
            if not started:
                if isinstance(exc, RedisError):  # as the app's handler answers other routes
                    await _store_unavailable(exc)(scope, receive, send)
                    return
                await _INTERNAL_ERROR(scope, receive, send)
            raise

    async def _serve(self, scope: Scope, receive: Receive, outer: Send) -> None:
        svc = scope["app"].state.svc
        limit = self.limit
        host_raw: bytes | None = None
        too_big = False
        for name, value in scope["headers"]:
            if name == b"host" and host_raw is None:  # the first, as Headers.get finds it
                host_raw = value
            elif name == b"content-length" and value.isdigit() and int(value) > limit:
                too_big = True  # any of them, as _BodyLimit checks
        host = "" if host_raw is None else host_raw.decode("latin-1")
        if not self.hosts(host, svc.settings):  # Shield
            await host_refusal(host)(scope, receive, outer)
            return
        t0 = time.perf_counter()  # _Timing
        status = 500
        begun = False
        cors: str | None = None

        async def send_(message: Any) -> None:
            nonlocal status, begun
            if message["type"] == "http.response.start":
                status, begun = message["status"], True
                raw = message.setdefault("headers", [])
                if not isinstance(raw, list):
                    raw = message["headers"] = list(raw)
                if cors is not None:  # the gate's CORS answer for a public key's origin
                    h = MutableHeaders(raw=raw)
                    h["Access-Control-Allow-Origin"] = cors
                    h.add_vary_header("Origin")
                    h["Access-Control-Expose-Headers"] = "Retry-After"
                add_nosniff(raw)  # Shield
            await outer(message)

        try:
            if too_big:  # _BodyLimit
                await _BodyLimit.refuse(limit, send_)
                return
            seen = 0

            async def receive_() -> Any:
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > limit:
                        raise _TooLarge
                return message

            scope["route"] = self.route
            scope["endpoint"] = self.route.endpoint
            scope["path_params"] = {}
            try:
                got = await admit(scope, receive_, svc, self.policy)  # the gate
                if isinstance(got, Response):
                    await got(scope, receive_, send_)
                    return
                cors = got[2]
                await self.handler(scope, got[1], send_)
            except _TooLarge:
                if not begun:  # _BodyLimit answers outside the gate's CORS wrapper
                    cors = None
                    await _BodyLimit.refuse(limit, send_)
        finally:
            self.timing.observe(scope, status, time.perf_counter() - t0)


class Kairos(Starlette):
    """The app: a request for one of `DIRECT` goes to its `_Lane`; anything else through
    Starlette's middleware chain (`Shield`, `_Timing`, `_BodyLimit`) and router."""

    def __init__(self, lanes: dict[tuple[str, str], _Lane], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lanes = lanes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            lane = self.lanes.get((scope["method"], scope["path"]))
            if lane is not None:
                scope["app"] = self
                await lane(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


#: seconds a client is told to wait when the store cannot answer (Valkey restarting, loading
#: its AOF, or out of connections): about the time a supervised restart takes
STORE_RETRY_AFTER_S = 2


async def store_unavailable(request: Request, exc: Exception) -> Response:
    """A route whose Redis call failed answers 503 with a JSON error and Retry-After, not
    Starlette's plain-text 500: the store is down or loading for a moment, the request was
    fine and may be sent again. (`POST /v1/decide` answers its own degraded decision.)"""
    return _store_unavailable(exc)


def _store_unavailable(exc: Exception) -> Response:
    reason = "is unavailable for a moment (restarting or loading); try again"
    body = {"error": f"store {reason}", "field": "store", "reason": reason,
            "detail": type(exc).__name__}
    return Response(orjson.dumps(body), status_code=503, media_type="application/json",
                    headers={"Retry-After": str(STORE_RETRY_AFTER_S)})


def create_app(settings: Settings, redis_url: str, bootstrap: str,
               metrics_dir: Path | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with running(settings, redis_url, bootstrap, metrics_dir) as svc:
            app.state.svc = svc
            # what start-up made (modules, config, models, caches: ~200k objects) lives as
            # long as the process: out of the cyclic collector's way, so that a full
            # collection scans only what requests made (measured: one took ~120 ms, a
            # stall of every request in flight, before)
            gc.collect()
            gc.freeze()
            try:
                yield
            finally:
                gc.unfreeze()

    routes = gated([r for m in ROUTE_MODULES for r in m.routes()], POLICY)
    middleware = [Middleware(Shield), Middleware(_Timing), Middleware(_BodyLimit)]
    lanes = {k: _Lane(r, POLICY[k]) for k, r in _direct_routes(routes).items()}
    return Kairos(lanes, routes=routes, middleware=middleware, lifespan=lifespan,
                     exception_handlers={RedisError: store_unavailable})


def _die_with_the_api_process() -> None:
    """Under `kairos api --workers N` this runs in each of uvicorn's worker processes (spawned
    by multiprocessing): tie it to the `kairos api` process, so that a SIGKILLed API leaves no
    worker holding its port (the supervisor of `kairos up` starts it again on that port)."""
    import multiprocessing
    import signal

    from engine.supervisor import die_with_parent

    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None:
        die_with_parent(signal.SIGTERM, parent.pid)


def app_from_env() -> Starlette:
    """uvicorn factory for `kairos api`: the CLI passes resolved settings in KAIROS_SETTINGS_JSON."""
    import os

    s = Settings.from_json(os.environ["KAIROS_SETTINGS_JSON"])
    _die_with_the_api_process()
    mdir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not (s.redis_url and s.kafka_bootstrap and s.database_url):
        raise RuntimeError("kairos api needs resolved Redis, Kafka and PostgreSQL addresses")
    return create_app(s, s.redis_url, s.kafka_bootstrap, Path(mdir) if mdir else None)
