"""HTTP adapters, one module per capability: parse, call a flow, serialise.

Each module has `routes() -> list[BaseRoute]`; handlers reach the flows as fields of the typed
`Services` (`svc(request).decider`, ...), made once in the lifespan (engine/services.py).
`engine.api.create_app` mounts the modules it lists. A route module holds no service and
imports no other route module: what two of them share is here (body reading, JSON answers,
errors) or on a lower floor (engine/flows, engine/logic).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from engine.flows.ingest import Unavailable
from engine.logic import events as spec
from engine.logic.access import NOBODY, Principal
from engine.services import Services

JSON = "application/json"
#: The largest body any route takes (the catalog's bulk upsert); engine/api.py `_BodyLimit`
#: answers 413 past it on every route, while the body streams in.
MAX_REQUEST_BYTES = 8 * 1024 * 1024


def svc(request: Request) -> Services:
    return request.app.state.svc  # type: ignore[no-any-return]


def principal(request: Request) -> Principal:
    """Who is calling, as the gate (engine/gate.py) found it."""
    who = getattr(request.state, "principal", None)
    return who if isinstance(who, Principal) else NOBODY


def too_many(wait_s: float) -> Response:
    import math

    return error(429, "rate", "too many requests for this visitor; retry later",
                 headers={"Retry-After": str(max(1, math.ceil(wait_s)))})


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON, headers=headers)


def error(status: int, field: str, reason: str, headers: dict[str, str] | None = None,
          **extra: Any) -> Response:
    body = {"error": f"{field} {reason}".strip(), "field": field, "reason": reason, **extra}
    return json_response(body, status, headers)


def unavailable(refused: Unavailable) -> Response:
    """503 with Retry-After: the broker did not take the events (the client resends them)."""
    return json_response({"error": refused.error, "accepted": 0}, 503,
                         headers={"Retry-After": str(refused.retry_after_s)})


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            too_big = int(length) > limit
        except ValueError:
            raise spec.BodyError(400, "content-length", "must be an integer") from None
        if too_big:
            raise spec.BodyError(413, "body", f"must be at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise spec.BodyError(413, "body", f"must be at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


# -- bare ASGI handlers, for the hottest routes ------------------------------------------------
# Starlette wraps a plain function route in a Request, an exception handler and a Response
# object per call; measured on /v1/decide (bench/decide_profile.py) that costs more than the
# read of the visitor's state. A `Bare` endpoint is mounted as it is: it gets the ASGI
# (scope, receive, send) and answers with `send_json`. The gate, the middleware and the
# route table's policy are the same as for any route.

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
_JSON_HEADERS = [(b"content-type", JSON.encode())]


class Bare:
    """An ASGI endpoint Starlette mounts without wrapping (it is not a function)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.__name__ = getattr(handler, "__name__", "bare")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


def scope_svc(scope: Scope) -> Services:
    return scope["app"].state.svc  # type: ignore[no-any-return]


def scope_principal(scope: Scope) -> Principal:
    who = scope.get("state", {}).get("principal")
    return who if isinstance(who, Principal) else NOBODY


def scope_header(scope: Scope, name: bytes) -> str | None:
    """One request header (`name` in lower case), else None."""
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")  # type: ignore[no-any-return]
    return None


def scope_media_type(scope: Scope) -> str:
    return (scope_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()


async def receive_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, at most `limit` bytes (BodyError 413 beyond, 400 on a bad length)."""
    length = scope_header(scope, b"content-length")
    if length is not None:
        try:
            too_big = int(length) > limit
        except ValueError:
            raise spec.BodyError(400, "content-length", "must be an integer") from None
        if too_big:
            raise spec.BodyError(413, "body", f"must be at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":  # the client went away: nobody reads the answer
            raise spec.BodyError(400, "body", "ended before it was whole")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise spec.BodyError(413, "body", f"must be at most {limit} bytes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_json(send: Send, data: Any, status: int = 200,
                    headers: dict[str, str] | None = None) -> None:
    body = orjson.dumps(data)
    head = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    if headers:
        head += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, status: int, field: str, reason: str,
                     headers: dict[str, str] | None = None, **extra: Any) -> None:
    body = {"error": f"{field} {reason}".strip(), "field": field, "reason": reason, **extra}
    await send_json(send, body, status, headers)


# -- server-rendered pages (sign-in, admin, partner portal) ----------------------------------
def _env() -> Any:
    global _ENV
    if _ENV is None:
        from pathlib import Path

        from jinja2 import Environment, FileSystemLoader, select_autoescape

        _ENV = Environment(loader=FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
                           autoescape=select_autoescape(default=True), trim_blocks=True,
                           lstrip_blocks=True)
    return _ENV


_ENV: Any = None


def page(request: Request, template: str, status: int = 200, **ctx: Any) -> Response:
    """Render a page of engine/templates with who is signed in and their CSRF token."""
    from starlette.responses import HTMLResponse

    s = svc(request)
    who = principal(request)
    session = request.cookies.get(s.session_cookie)
    ctx.setdefault("messages", [])
    html = _env().get_template(template).render(
        who=who if who.kind == "user" else None,
        csrf=s.access.csrf_for(session) if session else "", **ctx)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


# -- distributed marketing: who acts for which partner -----------------------------------------
def dm_caller(request: Request) -> Any:
    """The partner the caller acts for (a partner user, or a secret key tied to a partner) as
    an `engine.flows.dm.portal.Caller`, or None."""
    from engine.flows.dm.portal import Caller

    who = principal(request)
    if not who.partner_id:
        return None
    actor = f"user:{who.email}" if who.kind == "user" else f"key:{who.id}"
    return Caller(who.partner_id, actor, who.id, who.email if who.kind == "user" else None,
                  client_ip(request))


def dm_actor(request: Request) -> tuple[str, str]:
    """(audit actor, approver id) of a brand-side caller."""
    who = principal(request)
    return (f"user:{who.email}" if who.kind == "user" else f"key:{who.id}"), who.id


async def body_key(request: Request, key: str | None) -> Principal | Response:
    """Who calls a route whose policy takes the key in the body (`Policy.body_key`): the
    gate's principal when the request carried a key in its headers or URL, else `key` (read
    from the body by the route), checked by the gate (engine/gate.py `PendingKey`): the
    principal, or the refusal to answer."""
    pending = getattr(request.state, "pending_key", None)
    if pending is None:
        return principal(request)
    return await pending.settle(key)  # type: ignore[no-any-return]
