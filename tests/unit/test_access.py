"""The pure access rules: policies against every kind of caller, key formats and digests,
origins, the identity hash, CSRF tokens, signed decision ids, rate limits, passwords."""

from __future__ import annotations

import base64

import pytest

from engine.logic import access as a
from engine.logic import passwords
from tests.unit import aio

PUBLIC = a.Principal("public_key", "kp_AAAAAAAA", a.PUBLIC_KEY_SCOPES,
                     origins=("https://shop.example", "https://*.example.org"))
SECRET_EVENTS = a.Principal("secret_key", "ks_AAAAAAAA", frozenset({"events:write"}))
SECRET_ADMIN = a.Principal("secret_key", "ks_BBBBBBBB", frozenset({"admin"}))
ANALYST = a.user_principal("us_1", "analyst", "a@x.io", None)
MARKETER = a.user_principal("us_2", "marketer", "m@x.io", None)
ADMIN = a.user_principal("us_3", "admin", "ad@x.io", None)
PARTNER = a.user_principal("us_4", "partner", "p@x.io", "pt_1")


def test_open_routes_need_nobody() -> None:
    assert a.authorize(a.OPEN, a.NOBODY).ok


def test_nobody_gets_401_elsewhere() -> None:
    v = a.authorize(a.needs("events:write", public=True), a.NOBODY)
    assert (v.ok, v.status, v.field) == (False, 401, "authorization")


def test_public_key_may_send_events_from_its_origins_only() -> None:
    events = a.needs("events:write", public=True)
    assert a.authorize(events, PUBLIC, origin="https://shop.example").ok
    assert a.authorize(events, PUBLIC, origin=None).ok  # a server or app: no Origin
    assert a.authorize(events, PUBLIC, origin="https://a.b.example.org").ok
    bad = a.authorize(events, PUBLIC, origin="https://evil.example")
    assert (bad.status, bad.field) == (403, "origin")
    assert not a.authorize(events, PUBLIC, origin="https://example.org.evil.io").ok
    assert not a.authorize(events, PUBLIC, origin="http://shop.example").ok  # scheme counts


def test_public_key_never_reads() -> None:
    for scope in ("profiles:read", "stats:read", "catalog:write", "privacy", "admin"):
        v = a.authorize(a.needs(scope), PUBLIC, origin="https://shop.example")
        assert (v.ok, v.status) == (False, 403), scope


def test_secret_scopes_and_admin() -> None:
    assert a.authorize(a.needs("events:write", public=True), SECRET_EVENTS).ok
    v = a.authorize(a.needs("profiles:read"), SECRET_EVENTS)
    assert (v.status, v.field) == (403, "scope") and "profiles:read" in v.reason
    assert a.authorize(a.needs("profiles:read"), SECRET_ADMIN).ok


def test_roles() -> None:
    profiles = a.needs("profiles:read")
    assert a.authorize(profiles, ANALYST).ok
    assert a.authorize(profiles, MARKETER).ok
    assert a.authorize(profiles, ADMIN).ok
    assert not a.authorize(profiles, PARTNER).ok
    assert not a.authorize(a.needs("admin"), MARKETER).ok
    assert a.authorize(a.needs("dm"), PARTNER).ok
    assert not a.authorize(a.needs("dm"), ANALYST).ok


def test_key_only_routes_refuse_sessions() -> None:
    v = a.authorize(a.needs("events:write", session=False), ADMIN)
    assert not v.ok and v.status == 403


def test_metrics_policy() -> None:
    assert a.authorize(a.METRICS, a.NOBODY, loopback=True).ok
    assert not a.authorize(a.METRICS, a.NOBODY, loopback=False).ok
    assert not a.authorize(a.METRICS, a.NOBODY, loopback=True, metrics_token_set=True).ok
    assert a.authorize(a.METRICS, a.Principal("metrics", "token"), metrics_token_set=True).ok


def test_key_format_and_digest() -> None:
    k = a.make_key("secret", bytes(range(40)))
    assert k.startswith("ks_") and len(k) == 35 and a.key_kind(k) == "secret"
    assert a.key_kind(a.make_key("public", bytes(32))) == "public"
    assert a.key_prefix(k) == k[:11]
    assert a.key_digest(k) != a.key_digest(k[:-1] + "x")
    for bad in ("", "ks_short", "kx_" + "a" * 32, "ks_" + "a" * 31 + "!", "ks_" + "a" * 33):
        assert a.key_kind(bad) is None
    with pytest.raises(ValueError):
        a.make_key("public", b"too short")


def test_bearer_and_basic() -> None:
    assert a.bearer("Bearer ks_x") == "ks_x"
    assert a.bearer("bearer   ks_x ") == "ks_x"
    basic = "Basic " + base64.b64encode(b"kp_key:").decode()
    assert a.bearer(basic) == "kp_key"
    assert a.bearer("Basic !!!") is None
    assert a.bearer("Token x") is None
    assert a.bearer(None) is None


def test_origins() -> None:
    assert a.normalize_origin("HTTPS://Shop.Example:443/") == "https://shop.example"
    assert a.normalize_origin("http://localhost:8000") == "http://localhost:8000"
    assert a.normalize_origin("https://*.example.org") == "https://*.example.org"
    for bad in ("ftp://x.io", "https://", "https://x.io/path", "x.io", "https://u@x.io"):
        with pytest.raises(ValueError):
            a.normalize_origin(bad)
    assert a.origin_of("https://shop.example/p/1?x=2") == "https://shop.example"
    assert a.origin_of("about:blank") is None
    assert not a.origin_allowed("null", ("https://shop.example",))


def test_identity_hash() -> None:
    h = a.user_hash("s3cret", "customer-42")
    assert len(h) == 64
    assert a.verify_user_hash("s3cret", "customer-42", h)
    assert a.verify_user_hash("s3cret", "customer-42", h.upper())
    assert not a.verify_user_hash("s3cret", "customer-43", h)
    assert not a.verify_user_hash("other", "customer-42", h)
    assert not a.verify_user_hash("s3cret", "customer-42", None)
    # the documented example: HMAC-SHA256(key="s3cret", msg="customer-42")
    import hashlib
    import hmac
    assert h == hmac.new(b"s3cret", b"customer-42", hashlib.sha256).hexdigest()


def test_csrf() -> None:
    t = a.csrf_token("k", "session-token")
    assert a.verify_csrf("k", "session-token", t)
    assert not a.verify_csrf("k", "other-session", t)
    assert not a.verify_csrf("k", "session-token", None)


def test_signed_decision_ids() -> None:
    did = a.signed_decision_id("mac", "welcome.a.0123456789")
    assert a.verify_decision_id("mac", did) == "welcome.a.0123456789"
    assert a.verify_decision_id("other", did) is None
    assert a.verify_decision_id("mac", "welcome.a.0123456789") is None  # unsigned
    forged = did[:-1] + ("a" if did[-1] != "a" else "b")
    assert a.verify_decision_id("mac", forged) is None
    assert set(did.rpartition(".")[2]) <= set("abcdefghijklmnopqrstuvwxyz"
                                               "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789xy")


def test_rate_limiter_refills_and_is_bounded() -> None:
    rl = a.RateLimiter(rate=2.0, burst=2.0, max_keys=3)
    assert rl.take("k", 0.0) == (True, 0.0)
    assert rl.take("k", 0.0)[0]
    ok, wait = rl.take("k", 0.0)
    assert not ok and wait == pytest.approx(0.5)
    assert rl.take("k", 0.5)[0]
    for i in range(10):
        rl.take(f"other{i}", 1.0)
    assert len(rl) == 3


def test_ids_are_random_shaped() -> None:
    assert a.make_id("us", bytes(range(16))).startswith("us_")
    assert len(a.make_id("pt", bytes(16))) == 19


def test_passwords() -> None:
    h = passwords.hash_password("correct horse battery")
    assert passwords.verify_password(h, "correct horse battery")
    assert not passwords.verify_password(h, "wrong horse battery")
    assert not passwords.verify_password(None, "correct horse battery")
    assert not passwords.verify_password("not-a-hash", "x" * 12)
    with pytest.raises(passwords.PasswordError):
        passwords.hash_password("short")
    assert h.startswith("$argon2id$")


def test_every_route_has_a_policy_and_every_policy_a_route() -> None:
    from engine.api import POLICY, ROUTE_MODULES, route_keys

    routes = {k for m in ROUTE_MODULES for r in m.routes() for k in route_keys(r)}
    assert routes - POLICY.keys() == set(), "routes without a policy"
    assert POLICY.keys() - routes == set(), "policies for routes that do not exist"


def test_a_route_without_a_policy_stops_the_app_from_starting() -> None:
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from engine.api import POLICY, MissingPolicy, gated

    async def hello(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse("hi")

    with pytest.raises(MissingPolicy, match="GET /v1/new-thing"):
        gated([Route("/v1/new-thing", hello, methods=["GET"])], POLICY)
    guarded = gated([Route("/healthz", hello, methods=["GET"])], POLICY)
    assert guarded[0].app is not hello  # wrapped by its policy


def test_the_direct_routes_are_the_gated_route_objects() -> None:
    """POST /v1/decide skips Starlette's router, never its gate: the direct table holds the
    very route object `gated` wrapped with the route's policy."""
    from engine.api import POLICY, ROUTE_MODULES, MissingPolicy, _direct_routes, gated

    routes = gated([r for m in ROUTE_MODULES for r in m.routes()], POLICY)
    direct = _direct_routes(routes)
    route = direct[("POST", "/v1/decide")]
    assert any(r is route for r in routes)
    assert route.app.__name__ == "gated"  # engine.gate.guard's wrapper
    with pytest.raises(MissingPolicy, match="direct routes not found"):
        _direct_routes([r for r in routes if getattr(r, "path", "") != "/v1/decide"])


def test_a_body_key_policy_is_still_default_deny() -> None:
    segment = a.needs("events:write", public=True, session=False, body_key=True)
    v = a.authorize(segment, a.NOBODY)
    assert (v.ok, v.status, v.field) == (False, 401, "authorization")
    assert a.authorize(segment, PUBLIC, origin="https://shop.example").ok
    assert not a.authorize(segment, ADMIN).ok  # a session is no key here
    assert "body" in segment.describe()


def test_a_pending_body_key_request_cannot_succeed_until_the_route_settles_a_key() -> None:
    """engine/gate.py: a `body_key` route reached with no credential gets the request as
    pending; an answer below 400 before `settle` becomes a 401, a refusal passes as is."""
    from types import SimpleNamespace

    from starlette.responses import JSONResponse

    from engine.gate import guard

    policy = a.needs("events:write", public=True, session=False, body_key=True)

    async def forgetful(scope, receive, send):  # type: ignore[no-untyped-def]
        assert scope["state"]["pending_key"].settled is None
        await JSONResponse({"success": True})(scope, receive, send)

    async def refusing(scope, receive, send):  # type: ignore[no-untyped-def]
        await scope["state"]["pending_key"].settle(None)
        await JSONResponse({"nope": True}, status_code=400)(scope, receive, send)

    async def call(app) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
        svc = SimpleNamespace(session_cookie="kairos_session", access=SimpleNamespace())
        scope = {"type": "http", "method": "POST", "path": "/v1/t", "headers": [],
                 "query_string": b"", "app": SimpleNamespace(state=SimpleNamespace(svc=svc))}
        sent: list[dict] = []

        async def receive():  # type: ignore[no-untyped-def]
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message):  # type: ignore[no-untyped-def]
            sent.append(message)

        await guard(app, policy)(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    status, body = aio.run(call(forgetful))
    assert status == 401 and b"writeKey" in body and b"success" not in body
    assert aio.run(call(refusing)) == (400, b'{"nope":true}')
