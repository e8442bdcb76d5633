"""The HTTP service: the app factory that mounts the route modules of `engine.routes`.

Clients (Redis pool, Kafka producer), stores and flows are made in the ASGI lifespan
(engine/services.py `running`), never at import.
`create_app(settings, redis_url, bootstrap)` is the factory; `app_from_env()` is what
`kairos api` hands to uvicorn (it reads the settings the CLI serialised for its children).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from engine import metrics
from engine.routes import (
    MAX_REQUEST_BYTES,
    catalog,
    dashboard,
    decide,
    demo,
    ingest,
    ops,
    profiles,
    recommendations,
    sdk,
    stats,
    trending,
)
from engine.services import running
from engine.settings import Settings

#: The route modules, in the order their routes are matched.
ROUTE_MODULES = (ingest, profiles, ops, stats, sdk, demo, decide, dashboard, catalog, trending,
                 recommendations)


class _Timing:
    """Request latency per route template, into the Prometheus histogram."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
            path = getattr(scope.get("route"), "path", "other")
            elapsed = time.perf_counter() - start
            metrics.REQUESTS.labels(path, str(status[0])).observe(elapsed)
            app = scope.get("app")
            live = app.state.svc.live if app is not None and hasattr(app.state, "svc") else None
            if live is not None and path.startswith("/v1/"):
                live.observe(f"route:{path}", elapsed)


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
        reason = f"must be at most {self.limit} bytes"
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


def create_app(settings: Settings, redis_url: str, bootstrap: str,
               metrics_dir: Path | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with running(settings, redis_url, bootstrap, metrics_dir) as svc:
            app.state.svc = svc
            yield

    routes: list[BaseRoute] = [r for m in ROUTE_MODULES for r in m.routes()]
    middleware = [
        Middleware(_Timing),
        Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST", "DELETE"],
                   allow_headers=["content-type"], expose_headers=["Retry-After"], max_age=86400),
        Middleware(_BodyLimit),
    ]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


def app_from_env() -> Starlette:
    """uvicorn factory for `kairos api`: the CLI passes resolved settings in KAIROS_SETTINGS_JSON."""
    import os

    s = Settings.from_json(os.environ["KAIROS_SETTINGS_JSON"])
    mdir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not (s.redis_url and s.kafka_bootstrap):
        raise RuntimeError("kairos api needs resolved Redis and Kafka addresses")
    return create_app(s, s.redis_url, s.kafka_bootstrap, Path(mdir) if mdir else None)
