"""The links inside distributed-marketing mail: GET /m/o/{token} (the open pixel), GET
/m/c/{token} (the click redirect), GET and POST /m/u/{token} (unsubscribe: a GET only shows a
confirm button, since mail scanners follow links; a POST, the form's or a mail client's
RFC 8058 one-click, suppresses). Open routes: the signed token is the credential, and one
that is not ours answers 404. A click redirects only to the send's own pinned link."""

from __future__ import annotations

import base64

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from engine.routes import client_ip, page, svc

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}


def _ua(request: Request) -> str:
    return request.headers.get("user-agent", "")[:400]


async def get_open(request: Request) -> Response:
    ok = await svc(request).dm_tracking.open(request.path_params["token"], method=request.method,
                                             user_agent=_ua(request))
    if not ok:
        return PlainTextResponse("not found", 404, headers=NO_STORE)
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


async def get_click(request: Request) -> Response:
    target = await svc(request).dm_tracking.click(request.path_params["token"], method=request.method,
                                                  user_agent=_ua(request))
    if target is None:
        return PlainTextResponse("not found", 404, headers=NO_STORE)
    if not target:  # the hidden honeypot link: nothing to go to
        return HTMLResponse("<!doctype html><title>Kairos</title>", headers=NO_STORE)
    return RedirectResponse(target, 302, headers=NO_STORE)


async def get_unsubscribe(request: Request) -> Response:
    send = await svc(request).dm_tracking.unsubscribe_target(request.path_params["token"])
    if send is None:
        return page(request, "portal/unsubscribe.html", 404, state="unknown", email="")
    return page(request, "portal/unsubscribe.html", state="confirm", email=send["to_email"])


async def post_unsubscribe(request: Request) -> Response:
    send = await svc(request).dm_tracking.unsubscribe(request.path_params["token"], ip=client_ip(request))
    if send is None:
        return page(request, "portal/unsubscribe.html", 404, state="unknown", email="")
    return page(request, "portal/unsubscribe.html", state="done", email=send["to_email"])


def routes() -> list[BaseRoute]:
    return [
        Route("/m/o/{token}", get_open, methods=["GET"]),
        Route("/m/c/{token}", get_click, methods=["GET"]),
        Route("/m/u/{token}", get_unsubscribe, methods=["GET"]),
        Route("/m/u/{token}", post_unsubscribe, methods=["POST"]),
    ]
