"""GET /dashboard: the live analyst dashboard, a page that only reads the public JSON API.

The page (`engine/static/dashboard/index.html`) loads `/dashboard/dashboard.js` and
`/dashboard/dashboard.css`, built from `sdk_js/dashboard/` by the same esbuild build as the
beacon (`npm run build` -> `sdk_js/dist/dashboard.{js,css}`), uPlot bundled in: no CDN, the
page works offline. Its numbers come from `GET /v1/stats/stream` (Server-Sent Events, one
snapshot a second), `GET /v1/profiles/{id}` and the other documented `/v1/...` endpoints.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

ROOT = Path(__file__).resolve().parent.parent.parent
PAGE = Path(__file__).resolve().parent.parent / "static" / "dashboard" / "index.html"
DIST = ROOT / "sdk_js" / "dist"
ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
NO_CACHE = {"Cache-Control": "no-cache"}


async def get_page(request: Request) -> Response:
    return FileResponse(PAGE, media_type="text/html", headers=NO_CACHE)


async def get_asset(request: Request) -> Response:
    name = request.path_params["name"]
    path = DIST / name
    if name not in ASSETS:
        return PlainTextResponse("not found", 404)
    if not path.exists():
        return PlainTextResponse(
            f"sdk_js/dist/{name} is missing: run `kairos setup` "
            "(npm ci && npm run build in sdk_js/)",
            503,
        )
    return FileResponse(path, media_type=ASSETS[name], headers=NO_CACHE)


async def redirect(request: Request) -> Response:
    return RedirectResponse("/dashboard", 308)


def routes() -> list[BaseRoute]:
    return [
        Route("/dashboard", get_page, methods=["GET"]),
        Route("/dashboard/", redirect, methods=["GET"]),
        Route("/dashboard/{name}", get_asset, methods=["GET"]),
    ]
