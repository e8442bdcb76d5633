"""Signing in and out: GET/POST /login, GET /login/once/{token} (the one-time link `kairos up`
and the admin page print), POST /logout; and /assets/{name}, the stylesheets the pages share.

Session cookies are HttpOnly, SameSite=Lax, and Secure when the engine is served over https;
sign-in attempts are rate-limited per address and per e-mail address."""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from engine.logic import passwords
from engine.logic.access import origin_allowed
from engine.routes import client_ip, error, page, principal, svc

ROOT = Path(__file__).resolve().parent.parent
ASSETS = {
    "console.css": (ROOT / "static" / "console" / "console.css", "text/css"),
    "dashboard.css": (ROOT.parent / "sdk_js" / "dist" / "dashboard.css", "text/css"),
}
HOME = {"admin": "/admin", "marketer": "/dashboard", "analyst": "/dashboard",
        "partner": "/portal"}


def _safe_next(target: str | None, role: str | None = None) -> str:
    """Only a local path (no scheme, no host, no `//`): no open redirect after sign-in."""
    default = HOME.get(role or "", "/dashboard")
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else default


def _start_session(request: Request, token: str, target: str) -> Response:
    s = svc(request)
    resp = RedirectResponse(target, 303)
    resp.set_cookie(s.session_cookie, token, max_age=int(s.settings.session_days * 86400),
                    httponly=True, samesite="lax", path="/",
                    secure=s.settings.base_url.startswith("https://"))
    return resp


async def get_login(request: Request) -> Response:
    who = principal(request)
    if who.kind == "user":
        return RedirectResponse(_safe_next(request.query_params.get("next"), who.role), 303)
    return page(request, "login.html", next=_safe_next(request.query_params.get("next")),
                email="", error=None)


async def post_login(request: Request) -> Response:
    s = svc(request)
    origin = request.headers.get("origin")
    if origin is not None and not origin_allowed(origin, s.access.own_origins):
        return error(403, "origin", "sign in from the engine's own page")
    form = await request.form(max_files=0, max_fields=8, max_part_size=4096)
    email = str(form.get("email", ""))[:254]
    password = str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "")) or None)
    ip = client_ip(request)
    now = s.access.clock()
    for bucket in (f"ip:{ip}", f"email:{email.lower()}"):
        ok, wait = s.access.logins.take(bucket, now)
        if not ok:
            resp = page(request, "login.html", 429, next=target, email=email,
                        error="Too many sign-in attempts; wait a minute and try again.")
            resp.headers["Retry-After"] = str(max(1, math.ceil(wait)))
            return resp
    user = None
    try:
        user = await s.access.control.user_by_email(email)
    except ValueError:
        user = None
    ok = passwords.verify_password(user.password_hash if user else None, password)
    if not ok or user is None or user.disabled_at is not None:
        await s.access.control.audit(f"anonymous@{ip}", "session.refused", email, ip=ip)
        return page(request, "login.html", 401, next=target, email=email,
                    error="That e-mail address and password do not match.")
    token = await s.access.sign_in(user, ip=ip, user_agent=request.headers.get("user-agent", ""))
    return _start_session(request, token, _safe_next(str(form.get("next", "")) or None, user.role))


async def get_login_once(request: Request) -> Response:
    s = svc(request)
    user = await s.access.control.use_login_link(request.path_params["token"])
    if user is None:
        return page(request, "login.html", 410, next="/dashboard", email="",
                    error="That sign-in link was used already or has expired.")
    token = await s.access.sign_in(user, ip=client_ip(request),
                                   user_agent=request.headers.get("user-agent", ""))
    return _start_session(request, token, HOME.get(user.role, "/dashboard"))


async def post_logout(request: Request) -> Response:
    s = svc(request)
    token = request.cookies.get(s.session_cookie)
    if token:
        await s.access.control.end_session(token)
        s.access.forget_session(token)
    resp = RedirectResponse("/login", 303)
    resp.delete_cookie(s.session_cookie, path="/")
    return resp


async def get_asset(request: Request) -> Response:
    found = ASSETS.get(request.path_params["name"])
    if found is None:
        return PlainTextResponse("not found", 404)
    path, mtype = found
    if not path.exists():
        return PlainTextResponse(f"{path.name} is missing: run `kairos setup`", 503)
    return FileResponse(path, media_type=mtype, headers={"Cache-Control": "no-cache"})


def routes() -> list[BaseRoute]:
    return [
        Route("/login", get_login, methods=["GET"]),
        Route("/login", post_login, methods=["POST"]),
        Route("/login/once/{token}", get_login_once, methods=["GET"]),
        Route("/logout", post_logout, methods=["POST"]),
        Route("/assets/{name}", get_asset, methods=["GET"]),
    ]
