"""The HTTP gate: every request passes here before its route.

- `Shield` (middleware, outermost): refuses a Host that is not the engine's own on the
  loopback default (DNS rebinding), answers CORS preflights for the origins that some active
  public key allows (never `*`), and adds `X-Content-Type-Options: nosniff` to every answer
  and a strict Content-Security-Policy to the pages.
- `guard(route, policy)`: wraps one route's ASGI app with its policy from the route table
  (engine/routes/__init__.py): who is calling (a key in `Authorization`, a public key in
  `?key=`, the metrics token, or a session cookie), `authorize` (401/403 naming the scope or
  origin), the per-key rate limit (429 + Retry-After), CSRF for signed-in users' state
  changes (same-origin `Origin` and a token in `X-CSRF-Token` or a `csrf` form field), and
  the CORS answer headers for the key's origin. The principal is left in
  `request.state.principal` for the route.
- A route whose policy has `body_key` (Segment's tracking API: iOS and Android send the
  write key as `writeKey` in the body, never in a header) and a request with no credential
  in its headers or URL: the gate cannot read a body, so it lets the request on as
  *pending* (`request.state.pending_key`, a `PendingKey`). The route reads the key from the
  body and calls `settle(key)`, which makes exactly the checks above (401 without a key or
  with an unknown one, 403 for the origin or scope, 429 over the rate) and sets the
  principal. Default deny still holds: until a key is settled the gate turns any answer
  below 400 into a 401, so a route that forgot to settle cannot accept anything.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.logic import access
from engine.logic import segment as segment_api

JSON = "application/json"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_FORM_BYTES = 8 * 1024 * 1024  # a signed-in user's form or CSV upload, buffered for CSRF
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-src 'self'; frame-ancestors 'none'")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def _json(status: int, field: str, reason: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": f"{field} {reason}".strip(), "field": field, "reason": reason}
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


@functools.lru_cache(maxsize=1024)
def _is_loopback(host: str | None) -> bool:
    """Whether an address is a loopback one (cached: every request asks for its client's)."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def request_origin(headers: Headers) -> str | None:
    """The browser origin of a request: its Origin, else its Referer's origin."""
    origin = headers.get("origin")
    if origin:
        return origin
    return access.origin_of(headers.get("referer"))


class HostCheck:
    """`_host_ok` with its answers kept: Host -> allowed, for the settings object `_for`
    (held, so the answer is never one computed for other settings): the answer depends on
    nothing else, and a request should not pay an address parse."""

    def __init__(self) -> None:
        self._hosts: dict[str, bool] = {}
        self._for: Any = None

    def __call__(self, host: str, settings: Any) -> bool:
        if settings is not self._for:
            self._hosts, self._for = {}, settings
        ok = self._hosts.get(host)
        if ok is None:
            ok = _host_ok(host, settings)
            if len(self._hosts) >= 4096:  # any Host may be sent: keep the memory bounded
                self._hosts.clear()
            self._hosts[host] = ok
        return ok


def host_refusal(host: str) -> Response:
    return _json(403, "host", f"{host!r} is not this engine's address "
                 "(set allowed_hosts or KAIROS_PUBLIC_URL)")


def add_nosniff(raw: list[tuple[bytes, bytes]]) -> None:
    """`X-Content-Type-Options: nosniff` in an answer's raw header list, unless it has one."""
    for k, _ in raw:
        if k.lower() == b"x-content-type-options":
            return
    raw.append((b"x-content-type-options", b"nosniff"))


class Shield:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._host_ok = HostCheck()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        svc = scope["app"].state.svc
        settings = svc.settings
        headers = Headers(scope=scope)
        if not self._host_ok(headers.get("host", ""), settings):
            await host_refusal(headers.get("host", ""))(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and headers.get("access-control-request-method"):
            await _preflight(svc, headers, scope["path"])(scope, receive, send)
            return

        async def send_(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = message.setdefault("headers", [])
                if not isinstance(raw, list):
                    raw = message["headers"] = list(raw)
                add_nosniff(raw)
                h = MutableHeaders(raw=raw) if scope.get("kairos_page") else None
                if h is not None and h.get("content-type", "").startswith("text/html"):
                    h.setdefault("Content-Security-Policy", PAGE_CSP)
                    h.setdefault("X-Frame-Options", "DENY")
                    h.setdefault("Referrer-Policy", "same-origin")
            await send(message)

        await self.app(scope, receive, send_)


def _host_ok(host: str, settings: Any) -> bool:
    """On the loopback default only the engine's own names are served; elsewhere any Host
    unless `allowed_hosts` lists them."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    allowed = {h.lower() for h in settings.allowed_hosts}
    if settings.public_url:
        from urllib.parse import urlsplit

        pub = urlsplit(settings.public_url)
        if pub.hostname:
            allowed.add(pub.hostname.lower())
    if allowed and name.lower() in allowed:
        return True
    if _is_loopback(settings.host) or settings.host == "localhost":
        return name.lower() in LOOPBACK_NAMES
    return not allowed


PREFLIGHT_HEADERS = "authorization, content-type, content-encoding"
# the Segment clients add X-Retry-Count to every retry: without it in the preflight's answer
# every retry of analytics-next fails in the browser before it reaches the engine
SEGMENT_PREFLIGHT_HEADERS = PREFLIGHT_HEADERS + ", x-retry-count"


def _preflight(svc: Any, headers: Headers, path: str) -> Response:
    origin = headers.get("origin", "")
    if not origin or not svc.access.origin_known(origin):
        return _json(403, "origin", f"{origin or 'no origin'} is not allowed by any key")
    allowed = SEGMENT_PREFLIGHT_HEADERS if segment_api.is_api_path(path) else PREFLIGHT_HEADERS
    return Response(status_code=204, headers={
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "GET, POST",
        "Access-Control-Allow-Headers": allowed,
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    })


async def identify(request: Request, svc: Any) -> tuple[access.Principal, str | None, str | None]:
    """(principal, session token or None, why a given credential was refused or None)."""
    acc = svc.access
    token = access.bearer(request.headers.get("authorization"))
    if token is not None:
        if access.key_kind(token) is not None:
            who = await acc.resolve_key(token)
            return (who, None, None) if who else (access.NOBODY, None, "unknown or revoked key")
        who = acc.metrics(token)
        return (who, None, None) if who else (access.NOBODY, None, "is not a valid key")
    qkey = request.query_params.get("key")
    if qkey:
        if access.key_kind(qkey) == "secret":
            return access.NOBODY, None, ("a secret key never goes in a URL: send it as "
                                         "Authorization: Bearer")
        who = await acc.resolve_key(qkey)
        return (who, None, None) if who else (access.NOBODY, None, "unknown or revoked key")
    cookie = request.cookies.get(svc.session_cookie)
    if cookie:
        who = await acc.session(cookie)
        if who is not None:
            return who, cookie, None
    return access.NOBODY, None, None


Endpoint = Callable[[Scope, Receive, Send], Awaitable[None]]
NEEDS_KEY = ("needs a key: Authorization: Basic base64(<key>:) or Bearer <key>, "
             "or writeKey in the body")


def _with_cors(send: Send, origin: str) -> Send:
    """`send` adding the CORS answer headers for a public key's own origin."""

    async def send_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            h = MutableHeaders(scope=message)
            h["Access-Control-Allow-Origin"] = origin
            h.add_vary_header("Origin")
            h["Access-Control-Expose-Headers"] = "Retry-After"
        await send(message)

    return send_cors


class PendingKey:
    """A `body_key` route's request that came with no credential in its headers or URL (see
    the module docstring): `settle(key)` checks the key the route found in the body."""

    def __init__(self, scope: Scope, svc: Any, policy: access.Policy) -> None:
        self.scope = scope
        self.svc = svc
        self.policy = policy
        self.settled: access.Principal | None = None

    async def settle(self, key: str | None) -> access.Principal | Response:
        """The principal of `key` when it may call the route, else the refusal to answer."""
        if not key:
            return _json(401, "authorization", NEEDS_KEY)
        if access.key_kind(key) is None:
            return _json(401, "authorization", "writeKey is not a Kairos key (kp_… or ks_…)")
        acc = self.svc.access
        who = await acc.resolve_key(key)
        if who is None:
            return _json(401, "authorization", "unknown or revoked key")
        headers = Headers(scope=self.scope)
        client = self.scope.get("client")
        verdict = access.authorize(
            self.policy, who, origin=request_origin(headers) if who.kind == "public_key" else None,
            loopback=_is_loopback(client[0] if client else None),
            metrics_token_set=acc.metrics_token is not None)
        if not verdict.ok:
            return _json(verdict.status, verdict.field, verdict.reason)
        wait = acc.rate(who, None)
        if wait is not None:
            return _json(429, "rate", "too many requests for this key; retry later",
                         {"Retry-After": str(max(1, math.ceil(wait)))})
        self.settled = who
        self.scope.setdefault("state", {})["principal"] = who
        return who

    def guarded(self, send: Send) -> Send:
        """`send` that refuses success until a key is settled, and adds the CORS headers
        for a public key settled from the body."""
        blocked = False
        origin = Headers(scope=self.scope).get("origin")

        async def send_(message: Message) -> None:
            nonlocal blocked
            if blocked:
                return
            if message["type"] == "http.response.start":
                who = self.settled
                if who is None and message["status"] < 400:
                    blocked = True
                    await _json(401, "authorization", NEEDS_KEY)(self.scope, _no_body, send)
                    return
                if who is not None and who.kind == "public_key" and origin:
                    await _with_cors(send, origin)(message)
                    return
            await send(message)

        return send_


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def guard(app: ASGIApp, policy: access.Policy) -> ASGIApp:
    """`app` behind `policy` (see the module docstring)."""

    async def gated(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        if policy.page:
            scope["kairos_page"] = True
        svc = scope["app"].state.svc
        if policy.open:
            who = access.NOBODY
            if policy.identify:
                who, _, _ = await identify(Request(scope, receive), svc)
            scope.setdefault("state", {})["principal"] = who
            await app(scope, receive, send)
            return
        if policy.body_key:
            request = Request(scope, receive)
            who, session, refused = await identify(request, svc)
            if refused is None and not who.authenticated:
                pending = PendingKey(scope, svc, policy)
                state = scope.setdefault("state", {})
                state["principal"] = access.NOBODY
                state["pending_key"] = pending
                await app(scope, receive, pending.guarded(send))
                return
            got = await admit(scope, receive, svc, policy, (who, session, refused))
        else:
            got = await admit(scope, receive, svc, policy)
        if isinstance(got, Response):
            await got(scope, receive, send)
            return
        who, receive, origin = got
        await app(scope, receive, send if origin is None else _with_cors(send, origin))

    return gated


Identified = tuple[access.Principal, str | None, str | None]


async def admit(scope: Scope, receive: Receive, svc: Any, policy: access.Policy,
                identified: Identified | None = None
                ) -> tuple[access.Principal, Receive, str | None] | Response:
    """The gate's checks for a route that is not open (`guard`; engine/api.py's direct lane
    for `POST /v1/decide` calls it too, so both make exactly these): who is calling,
    `authorize`, the rate limit, CSRF for a signed-in change. Returns the refusal to answer,
    or (the principal, the `receive` the route reads the body from, the origin whose CORS
    headers the answer carries or None); the principal is left in the scope's state."""
    request = Request(scope, receive)
    who, session, refused = identified or await identify(request, svc)
    origin = request_origin(request.headers)
    client = scope.get("client")
    verdict = (access.Verdict(False, 401, "authorization", refused) if refused else
               access.authorize(policy, who, origin=origin if who.kind == "public_key" else None,
                                loopback=_is_loopback(client[0] if client else None),
                                metrics_token_set=svc.access.metrics_token is not None))
    if not verdict.ok:
        if policy.page and verdict.status == 401 and request.method == "GET":
            target = scope["path"] + (f"?{scope['query_string'].decode()}"
                                      if scope.get("query_string") else "")
            return RedirectResponse(f"/login?next={_quote(target)}", 303)
        return _json(verdict.status, verdict.field, verdict.reason)
    wait = svc.access.rate(who, request.query_params.get("visitor_id")
                           if scope.get("query_string") else None)
    if wait is not None:
        return _json(429, "rate", "too many requests for this key; retry later",
                     {"Retry-After": str(max(1, math.ceil(wait)))})
    if session is not None and scope["method"] in UNSAFE:
        checked = await _csrf(scope, receive, svc, session, request.headers)
        if isinstance(checked, Response):
            return checked
        receive = checked
    scope.setdefault("state", {})["principal"] = who
    cors = request.headers.get("origin") if who.kind == "public_key" else None
    return who, receive, cors or None


async def _csrf(scope: Scope, receive: Receive, svc: Any, session: str,
                headers: Headers) -> Response | Receive:
    """Same-origin Origin, then the token from the header or the buffered form; returns a
    `receive` that replays the body for the route, or the refusal."""
    origin = request_origin(headers)
    own = svc.access.own_origins
    if origin is None or not access.origin_allowed(origin, own):
        return _json(403, "origin", "a signed-in change must come from the engine's own pages")
    token = headers.get("x-csrf-token")
    body = b""
    more = True
    if token is None:
        ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        chunks: list[bytes] = []
        size = 0
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_FORM_BYTES:
                return _json(413, "body", f"must be at most {MAX_FORM_BYTES} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if ctype == "application/x-www-form-urlencoded":
            token = next((v for k, v in parse_qsl(body.decode("latin-1")) if k == "csrf"), None)
        elif ctype == "multipart/form-data":
            token = _multipart_field(body, headers.get("content-type", ""), "csrf")
    if not svc.access.csrf_ok(session, token):
        return _json(403, "csrf", "token is missing or wrong; reload the page")
    if token is not None and headers.get("x-csrf-token") is not None:
        return receive
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _multipart_field(body: bytes, content_type: str, name: str) -> str | None:
    """One small text field of a multipart body (the CSRF token), without parsing files."""
    boundary = next((p.split("=", 1)[1].strip('"') for p in content_type.split(";")
                     if p.strip().startswith("boundary=")), None)
    if not boundary:
        return None
    marker = f'name="{name}"'.encode()
    for part in body.split(b"--" + boundary.encode()):
        head, sep, value = part.partition(b"\r\n\r\n")
        if sep and marker in head and b"filename=" not in head:
            return value.rstrip(b"\r\n").decode("utf-8", "replace")[:200]
    return None


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")
