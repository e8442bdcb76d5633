"""GET /sdk/kairos.js: the browser beacon with the site's compiled sitemap in front of it.

The bundle and its reloading are engine/flows/beacon.py; this adapter adds the caching
headers, answers If-None-Match, and sends the pre-compressed body to browsers that accept gzip.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from engine.routes import svc

CACHE_CONTROL = "public, max-age=300, stale-while-revalidate=86400"


def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


async def get_beacon(request: Request) -> Response:
    source = svc(request).beacon
    bundle = source.current()
    if bundle is None:
        return PlainTextResponse(
            f"The browser beacon is not built ({source.dist_path} is missing). "
            "Run `kairos setup` (it runs `npm ci && npm run build` in sdk_js/).\n",
            status_code=503,
            headers={"Retry-After": "60", "Cache-Control": "no-store"},
        )
    gz = "gzip" in request.headers.get("accept-encoding", "").lower() and bool(bundle.gzipped)
    etag = bundle.gzip_etag if gz else bundle.etag
    headers = {
        "ETag": etag,
        "Cache-Control": CACHE_CONTROL,
        "X-Content-Type-Options": "nosniff",
        "Access-Control-Allow-Origin": "*",
        "Vary": "Accept-Encoding",
    }
    inm = request.headers.get("if-none-match")
    if inm and _etag_matches(inm, etag):
        return Response(status_code=304, headers=headers)
    if gz:
        headers["Content-Encoding"] = "gzip"
    return Response(bundle.gzipped if gz else bundle.body,
                    media_type="text/javascript; charset=utf-8", headers=headers)


def routes() -> list[BaseRoute]:
    return [Route("/sdk/kairos.js", get_beacon, methods=["GET"])]
