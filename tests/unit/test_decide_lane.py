"""engine/api.py `_Lane`: `POST /v1/decide` served from the top of the app answers exactly
what the middleware chain (Starlette's error middleware, Shield, _Timing, _BodyLimit, the
router and the gate) answers for the same request: status, headers, body, and the request's
latency observed under the route's template."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette

from engine import api
from engine.logic import access as a
from engine.settings import Settings
from tests.unit.aio import run

PUBLIC = a.Principal("public_key", "kp_pub", frozenset({a.Scope.DECIDE, a.Scope.EVENTS_WRITE}),
                     origins=("https://shop.example",))
SECRET = a.Principal("secret_key", "ks_sec", frozenset({a.Scope.DECIDE}))
READER = a.Principal("secret_key", "ks_rd", frozenset({a.Scope.STATS_READ}))
KEYS = {"kp_" + "p" * 32: PUBLIC, "ks_" + "s" * 32: SECRET, "ks_" + "r" * 32: READER}


class _Access:
    metrics_token = None

    def __init__(self, limited: bool = False) -> None:
        self.limited = limited

    async def resolve_key(self, token: str) -> a.Principal | None:
        return KEYS.get(token)

    def metrics(self, token: str) -> a.Principal | None:
        return None

    async def session(self, token: str) -> a.Principal | None:
        return None

    def rate(self, who: a.Principal, visitor_id: str | None) -> float | None:
        return 1.5 if self.limited else None

    def rate_visitor(self, who: a.Principal, visitor_id: str) -> float | None:
        return None

    def identity_ok(self, user_id: str, given: object) -> bool:
        return False


class _Decider:
    async def decide(self, vid: str, user_id: Any, context: Any, zones: Any, events: Any,
                     now_ms: int, started: float) -> tuple[list[dict[str, Any]], str | None]:
        return [{"zone": z, "campaign": "c", "decision_id": f"c.a.{vid}"} for z in zones], None


class _Live:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def observe(self, hist: str, seconds: float) -> None:
        self.seen.append(hist)


def _app(limited: bool = False) -> tuple[Starlette, _Live]:
    app = api.create_app(Settings(), "redis://127.0.0.1:1/0", "127.0.0.1:1")
    live = _Live()
    app.state.svc = SimpleNamespace(settings=Settings(), access=_Access(limited),
                                    decider=_Decider(), session_cookie="kairos_session",
                                    live=live)
    return app, live


def _call(app: Starlette, body: bytes, headers: list[tuple[bytes, bytes]], *,
          chain: bool) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []

    async def go() -> None:
        chunks = [body]

        async def receive() -> dict[str, Any]:
            if chunks:
                return {"type": "http.request", "body": chunks.pop(), "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/decide",
                 "raw_path": b"/v1/decide", "query_string": b"", "headers": headers,
                 "root_path": "", "scheme": "http", "server": ("127.0.0.1", 8000),
                 "client": ("127.0.0.1", 5000), "asgi": {"version": "3.0"},
                 "http_version": "1.1"}
        # the chain: what Starlette itself serves (the lane is Kairos.__call__'s shortcut)
        await (Starlette.__call__(app, scope, receive, send) if chain
               else app(scope, receive, send))

    run(go())
    start = next(m for m in sent if m["type"] == "http.response.start")
    got = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], got, b"".join(m.get("body", b"") for m in sent[1:])


BODY = orjson.dumps({"visitor_id": "v1", "context": {"zones": ["z1", "z2"]}})


def _h(key: str | None = None, host: str = "127.0.0.1:8000", **more: str
       ) -> list[tuple[bytes, bytes]]:
    out = [(b"host", host.encode()), (b"content-type", b"application/json")]
    if key is not None:
        out.append((b"authorization", f"Bearer {key}".encode()))
    out += [(k.replace("_", "-").encode(), v.encode()) for k, v in more.items()]
    return out


CASES = {
    "secret key": (BODY, _h("ks_" + "s" * 32)),
    "public key from its origin (CORS headers)": (BODY, _h("kp_" + "p" * 32,
                                                           origin="https://shop.example")),
    "public key from another origin": (BODY, _h("kp_" + "p" * 32, origin="https://evil.example")),
    "no key": (BODY, _h()),
    "unknown key": (BODY, _h("ks_" + "x" * 32)),
    "a key without the scope": (BODY, _h("ks_" + "r" * 32)),
    "another Host": (BODY, _h("ks_" + "s" * 32, host="evil.example")),
    "a Content-Length past the app's limit": (BODY, _h("ks_" + "s" * 32,
                                                       content_length=str(9 << 20))),
    "a Content-Length past the route's limit": (BODY, _h("ks_" + "s" * 32,
                                                         content_length=str(2 << 20))),
    "a second Content-Length past the app's limit": (
        BODY, [*_h("ks_" + "s" * 32, content_length=str(len(BODY))),
               (b"content-length", str(9 << 20).encode())]),
    "an empty Host first": (BODY, [(b"host", b""), *_h("ks_" + "s" * 32)]),
    "a body naming no visitor": (b'{"context": {}}', _h("ks_" + "s" * 32)),
    "a body that is no JSON": (b"{nope", _h("ks_" + "s" * 32)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_lane_answers_what_the_chain_answers(case: str) -> None:
    body, headers = CASES[case]
    app, live = _app()
    lane = _call(app, body, headers, chain=False)
    chain = _call(app, body, headers, chain=True)
    assert lane == chain
    status, got, _ = lane
    if "Host" not in case:  # Shield refuses a Host before anything else, as it always did
        assert got["x-content-type-options"] == "nosniff"
        # refused by the body limit before any route: timed as "other", as always
        routed = "past the app's limit" not in case
        assert live.seen == ["route:/v1/decide"] * 2 * routed


def test_the_lane_answers_429_as_the_gate_does() -> None:
    app, _ = _app(limited=True)
    args = (BODY, _h("ks_" + "s" * 32))
    lane, chain = _call(app, *args, chain=False), _call(app, *args, chain=True)
    assert lane == chain and lane[0] == 429 and lane[1]["retry-after"] == "2"


def test_the_lane_is_taken_and_serves_the_decision() -> None:
    app, _ = _app()
    seen: list[str] = []
    lane = app.lanes[("POST", "/v1/decide")]  # type: ignore[attr-defined]
    handler = lane.handler

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["state"]["principal"].id)
        await handler(scope, receive, send)

    lane.handler = spy
    status, got, body = _call(app, BODY, _h("kp_" + "p" * 32, origin="https://shop.example"),
                              chain=False)
    assert seen == ["kp_pub"]
    assert status == 200 and got["access-control-allow-origin"] == "https://shop.example"
    assert [d["zone"] for d in orjson.loads(body)["decisions"]] == ["z1", "z2"]


def test_a_direct_route_needs_a_key_policy() -> None:
    routes = api.gated([r for m in api.ROUTE_MODULES for r in m.routes()], api.POLICY)
    route = api._direct_routes(routes)[("POST", "/v1/decide")]
    with pytest.raises(api.MissingPolicy):
        api._Lane(route, a.OPEN)


def test_the_store_failing_under_the_lane_answers_503_as_other_routes_do() -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    class _Down(_Access):
        async def resolve_key(self, token: str) -> a.Principal | None:
            raise RedisConnectionError("Connection refused")

    app, _ = _app()
    app.state.svc.access = _Down()
    status, got, body = _call(app, BODY, _h("ks_" + "s" * 32), chain=False)
    assert status == 503 and int(got["retry-after"]) > 0
    assert orjson.loads(body)["field"] == "store"
