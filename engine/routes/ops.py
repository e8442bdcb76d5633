"""Operator endpoints: /healthz, /readyz, /metrics, and the API description."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from engine import metrics
from engine.openapi import DOCS_HTML, openapi
from engine.routes import json_response, svc


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    health = svc(request).health
    checks = await health.checks()
    ok = all(v == "ok" for v in checks.values())
    retry = None if ok else {"Retry-After": str(svc(request).settings.retry_after_s)}
    return json_response({"status": "ready" if ok else "not ready", "checks": checks,
                          "control_plane": await health.control_plane()},
                         200 if ok else 503, headers=retry)


async def get_metrics(request: Request) -> Response:
    s = svc(request)
    workers = await s.health.workers()
    learning = await s.models.metrics_lines() if s.models is not None else b""
    return Response(metrics.render(s.metrics_dir, workers) + s.health.store_lines() + learning,
                    media_type="text/plain; version=0.0.4")


async def get_openapi(request: Request) -> Response:
    return json_response(openapi())


async def docs(request: Request) -> Response:
    return HTMLResponse(DOCS_HTML)


def routes() -> list[BaseRoute]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", get_metrics, methods=["GET"]),
        Route("/openapi.json", get_openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
    ]
