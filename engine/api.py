"""The HTTP service: short adapters that parse, call the logic, serialise.

Clients (Redis pool, Kafka producer) are made in the ASGI lifespan, never at import.
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
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from engine import events as spec
from engine import keys, metrics
from engine.eventlog import EventLog, LogUnavailable, ensure_topics, group_by_visitor
from engine.openapi import DOCS_HTML, openapi
from engine.settings import Settings
from engine.store import ProfileStore, new_client
from models.affinity import view

JSON = "application/json"


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON, headers=headers)


def _error(status: int, field: str, reason: str, **extra: Any) -> Response:
    body = {"error": f"{field} {reason}".strip(), "field": field, "reason": reason, **extra}
    return _json(body, status)


class _Timing:
    """Request latency per route, into the Prometheus histogram."""

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
            route = scope.get("route")
            path = getattr(route, "path", "other")
            metrics.REQUESTS.labels(path, str(status[0])).observe(time.perf_counter() - start)


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > limit:
                raise spec.BodyError(413, "body", f"must be at most {limit} bytes")
        except ValueError:
            raise spec.BodyError(400, "content-length", "must be an integer") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise spec.BodyError(413, "body", f"must be at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: Settings, redis_url: str, bootstrap: str,
               metrics_dir: Path | None = None) -> Starlette:
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = new_client(redis_url, timeout=2.0)
        state["redis"] = client
        state["profiles"] = ProfileStore(client, settings.profile_ttl_ms)
        log = EventLog(bootstrap, settings.events_topic, linger_ms=settings.producer_linger_ms,
                       timeout_s=settings.produce_timeout_s)
        state["log"] = log
        with contextlib.suppress(Exception):
            await ensure_topics(bootstrap, {settings.events_topic: settings.partitions,
                                            settings.decisions_topic: settings.partitions}, 10.0)
        with contextlib.suppress(LogUnavailable):
            await log.producer()
        try:
            yield
        finally:
            await log.close()
            await client.aclose()

    async def post_events(request: Request) -> Response:
        now_ms = int(time.time() * 1000)
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        try:
            body = await _read_body(request, spec.MAX_BODY_BYTES)
            raw = spec.decode_body(body, media)
        except spec.BodyError as exc:
            metrics.EVENTS_REJECTED.labels(metrics.field_label(exc.field)).inc()
            return _error(exc.status, exc.field, exc.reason)
        good, bad = spec.validate(raw, now_ms)
        rejected = [r.as_dict() for r in bad]
        for r in bad:
            metrics.EVENTS_REJECTED.labels(metrics.field_label(r.field)).inc()
        if not good:
            first = bad[0]
            return _error(400, first.field, first.reason, accepted=0, rejected=rejected)
        start = time.perf_counter()
        try:
            await state["log"].append(group_by_visitor(good))
        except LogUnavailable as exc:
            metrics.PRODUCE_FAILURES.inc()
            return _json(
                {"error": f"event log unavailable, retry later ({exc})", "accepted": 0},
                503, headers={"Retry-After": str(settings.retry_after_s)},
            )
        metrics.PRODUCE.observe(time.perf_counter() - start)
        metrics.EVENTS_ACCEPTED.inc(len(good))
        return _json({"accepted": len(good), "rejected": rejected})

    async def get_profile(request: Request) -> Response:
        some_id = request.path_params["visitor_id"]
        if len(some_id) > 128:
            return _error(400, "visitor_id", "must be at most 128 characters")
        q = request.query_params
        explain = q.get("explain", "false").lower() in ("1", "true", "yes")
        try:
            top = int(q.get("top", "10"))
            if not 1 <= top <= 100:
                raise ValueError
        except ValueError:
            return _error(400, "top", "must be an integer from 1 to 100")
        found = await state["profiles"].find(some_id)
        if found is None or found[1].profile is None:
            return _error(404, "visitor_id", f"{some_id!r} is not a known visitor or user")
        pid, stored = found
        assert stored.profile is not None
        body = view(stored.profile, int(time.time() * 1000), settings.affinity, top=top, explain=explain)
        kind, _, ident = pid.partition(":")
        body = {"profile_id": pid, "visitor_id": some_id if kind == "v" else None, **body}
        if kind == "u":
            body["user_id"] = ident
        return _json(body)

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        checks: dict[str, str] = {}
        try:
            await state["redis"].ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"unreachable: {exc}"
        checks["kafka"] = "ok" if await state["log"].ready() else "unreachable"
        ok = all(v == "ok" for v in checks.values())
        return _json({"status": "ready" if ok else "not ready", "checks": checks}, 200 if ok else 503)

    async def get_metrics(request: Request) -> Response:
        workers: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            raw = await state["redis"].hgetall(keys.WORKERS)
            workers = {k.decode(): orjson.loads(v) for k, v in raw.items()}
        return Response(metrics.render(metrics_dir, workers), media_type="text/plain; version=0.0.4")

    async def get_openapi(request: Request) -> Response:
        return _json(openapi())

    async def docs(request: Request) -> Response:
        return HTMLResponse(DOCS_HTML)

    routes = [
        Route("/v1/events", post_events, methods=["POST"]),
        Route("/v1/profiles/{visitor_id:path}", get_profile, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", get_metrics, methods=["GET"]),
        Route("/openapi.json", get_openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
    ]
    middleware = [
        Middleware(_Timing),
        Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST", "DELETE"],
                   allow_headers=["content-type"], max_age=86400),
    ]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


def app_from_env() -> Starlette:
    """uvicorn factory for `kairos api`: the CLI passes resolved settings in KAIROS_SETTINGS_JSON."""
    import os

    s = Settings.from_json(os.environ["KAIROS_SETTINGS_JSON"])
    mdir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    assert s.redis_url and s.kafka_bootstrap, "kairos api needs resolved Redis and Kafka addresses"
    return create_app(s, s.redis_url, s.kafka_bootstrap, Path(mdir) if mdir else None)
