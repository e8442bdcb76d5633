"""Access on real PostgreSQL + Valkey + Kafka, over HTTP against the API process: every route
against every kind of caller, the bad-credential answers, revocation across two API
processes, CORS, the Host check, security headers, trusted identity, unforgeable decision
ids, and privacy export and erase."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from engine.api import POLICY, ROUTE_MODULES, route_keys
from engine.logic import access as acl
from tests.conftest import Stack, run_async, uid

pytestmark = pytest.mark.integration

EVIL = "https://evil.example"


def _control(stack: Stack):  # type: ignore[no-untyped-def]
    from engine.db import new_engine
    from engine.db.control import ControlPlane

    return ControlPlane(new_engine(stack.settings.database_url or "", pool_size=1))


def make_key(stack: Stack, kind: str, **kw: Any) -> str:
    async def go() -> str:
        cp = _control(stack)
        try:
            return (await cp.create_key(kind, **kw))[1]  # type: ignore[arg-type]
        finally:
            await cp.close()

    return run_async(go())


def revoke(stack: Stack, key: str) -> None:
    async def go() -> None:
        cp = _control(stack)
        try:
            await cp.revoke_key(key[:11])
        finally:
            await cp.close()

    run_async(go())


def secret(stack: Stack, name: str) -> str:
    async def go() -> str:
        cp = _control(stack)
        try:
            return await cp.secret(name)
        finally:
            await cp.close()

    return run_async(go())


def sign_in(stack: Stack, role: str) -> str:
    """A session cookie of a new user with `role` (through the one-time link)."""
    partner = None
    if role == "partner":
        async def mk() -> str:
            cp = _control(stack)
            try:
                return await cp.create_partner(f"Partner {uuid.uuid4().hex[:6]}")
            finally:
                await cp.close()

        partner = run_async(mk())
    link = stack.add_user(f"{uid(role)}@example.com", role, partner_id=partner)
    r = httpx.get(link)
    assert r.status_code == 303, r.text
    return r.cookies["kairos_session"]


@pytest.fixture(scope="module")
def gate_stack(make_stack: Callable[..., Stack]) -> Iterator[Stack]:
    stack = make_stack(name="access", workers=0)
    yield stack
    stack.stop()


# -- the whole route table against every kind of caller ----------------------------------------
SAMPLE = {"visitor_id": "v-walk", "campaign_id": "cart_reminder", "item_id": "i1", "path": "shoes",
          "pid": "1", "name": "dashboard.js", "token": "x" * 43, "prefix": "ks_nothing0",
          "subject_id": "v-nobody", "contact_id": "ct_nobody", "approval_id": "ap_nobody",
          "release_id": "rl_nobody", "key": "1.M1P1.nobody", "event_id": "e-walk"}


def concrete(path: str) -> str:
    out = path
    for name, value in SAMPLE.items():
        out = out.replace(f"{{{name}:path}}", value).replace(f"{{{name}}}", value)
    assert "{" not in out, path
    return out


# Segment's tracking API is one handler under 32 paths with one policy (engine/api.py): the
# walk takes a batch path, a one-message path, one under the /segment/v1 prefix and /v1/m
SEGMENT_WALKED = {"/v1/batch", "/v1/t", "/segment/v1/identify", "/v1/m"}


def all_routes() -> list[tuple[str, str]]:
    from engine.logic.segment import is_api_path

    return [k for m in ROUTE_MODULES for r in m.routes() for k in route_keys(r)
            if not is_api_path(k[1]) or k[1] in SEGMENT_WALKED]


@pytest.fixture
def callers(gate_stack: Stack) -> dict[str, tuple[acl.Principal, dict[str, str], dict[str, str]]]:
    """name -> (the principal the engine should see, headers, cookies)."""
    s = gate_stack
    origin = {"Origin": s.base}
    pub = make_key(s, "public", origins=[s.base], name="walk")
    out: dict[str, tuple[acl.Principal, dict[str, str], dict[str, str]]] = {
        "nobody": (acl.NOBODY, {}, {}),
        "public key": (acl.Principal("public_key", "p", acl.PUBLIC_KEY_SCOPES, origins=(s.base,)),
                       {"Authorization": f"Bearer {pub}", **origin}, {}),
        "public key, wrong origin": (
            acl.Principal("public_key", "p", acl.PUBLIC_KEY_SCOPES, origins=(s.base,)),
            {"Authorization": f"Bearer {pub}", "Origin": EVIL}, {}),
    }
    for scope in sorted(acl.SECRET_SCOPES):
        key = make_key(s, "secret", scopes=[scope], name=f"walk {scope}")
        out[f"secret {scope}"] = (acl.Principal("secret_key", "s", frozenset({scope})),
                                  {"Authorization": f"Bearer {key}"}, {})
    csrf = secret(s, "csrf")
    for role in acl.Role:
        cookie = sign_in(s, role.value)
        who = acl.user_principal("u", role.value, "x@example.com", "pt" if role == "partner" else None)
        out[f"user {role.value}"] = (who, {"Origin": s.base,
                                           "X-CSRF-Token": acl.csrf_token(csrf, cookie)},
                                     {"kairos_session": cookie})
    return out


GATE_FIELDS = {"authorization", "scope", "origin", "csrf"}


_CLIENTS: dict[tuple[str, str], httpx.Client] = {}


def answer(stack: Stack, method: str, path: str, headers: dict[str, str],
           cookies: dict[str, str]) -> tuple[int, str | None]:
    """(status, the refusal's field when the gate refused, else None)."""
    url = concrete(path) if method != "*" else concrete(path) + "/shop.css"
    ident = (stack.base, repr(sorted(cookies.items())))
    c = _CLIENTS.get(ident)
    if c is None:
        c = _CLIENTS[ident] = httpx.Client(base_url=stack.base, timeout=10, cookies=cookies,
                                           follow_redirects=False)
    with c.stream("GET" if method == "*" else method, url, headers=headers,
                  content=b"{}" if method in ("POST", "DELETE") else None) as r:
        field = None
        if r.status_code in (401, 403) and r.headers.get("content-type", "").startswith("application/json"):
            r.read()
            field = r.json().get("field")
        return r.status_code, field if field in GATE_FIELDS else None


def call(stack: Stack, method: str, path: str, headers: dict[str, str],
         cookies: dict[str, str]) -> int:
    return answer(stack, method, path, headers, cookies)[0]


def test_every_route_answers_every_caller_as_its_policy_says(gate_stack: Stack, callers) -> None:
    routes = sorted(all_routes(), key=lambda k: k == ("POST", "/logout"))  # signing out last
    problems: list[str] = []
    for method, path in routes:
        policy = POLICY[(method, path)]
        for name, (who, headers, cookies) in callers.items():
            origin = headers.get("Origin") if who.kind == "public_key" else None
            want = acl.authorize(policy, who, origin=origin, loopback=True)
            got, refused_by = answer(gate_stack, method, path, headers, cookies)
            if (method, path) == ("POST", "/login") and headers.get("Origin") == EVIL:
                assert (got, refused_by) == (403, "origin")  # the sign-in form's own CSRF rule
                continue
            if want.ok and refused_by is not None:
                problems.append(f"{method} {path} as {name}: {got} ({refused_by}), should pass")
            if not want.ok:
                if policy.page and want.status == 401 and method == "GET":
                    ok = got == 303  # a browser is sent to the sign-in page
                else:
                    ok = got == want.status and refused_by is not None
                if not ok:
                    problems.append(f"{method} {path} as {name}: {got}, should be {want.status}")
    assert not problems, "\n".join(problems)


def test_what_each_kind_of_caller_can_never_do(gate_stack: Stack, callers) -> None:
    """Absolute rules, written out rather than derived from the policy table."""
    _, pub, _ = callers["public key"]
    for method, path in [("GET", "/v1/profiles/{visitor_id:path}"), ("GET", "/v1/stats/traffic"),
                         ("POST", "/v1/catalog/items"), ("DELETE", "/v1/catalog/items/{item_id:path}"),
                         ("GET", "/v1/privacy/subjects/{subject_id:path}"), ("GET", "/admin")]:
        assert call(gate_stack, method, path, pub, {}) == 403, (method, path)
    _, none, _ = callers["nobody"]
    for method, path in [("POST", "/v1/events"), ("POST", "/v1/decide"), ("GET", "/sdk/kairos.js"),
                         ("GET", "/v1/recommendations"), ("GET", "/v1/profiles/{visitor_id:path}"),
                         ("POST", "/v1/batch"), ("POST", "/segment/v1/b")]:
        assert call(gate_stack, method, path, none, {}) == 401, (method, path)
    _, partner_h, partner_c = callers["user partner"]
    assert call(gate_stack, "GET", "/v1/profiles/{visitor_id:path}", partner_h, partner_c) == 403
    assert call(gate_stack, "GET", "/dashboard", partner_h, partner_c) == 403
    for open_path in ("/healthz", "/readyz", "/docs", "/openapi.json", "/demo"):
        assert call(gate_stack, "GET", open_path, none, {}) in (200, 503), open_path


# -- bad credentials ---------------------------------------------------------------------------
def test_bad_credentials_are_named(gate_stack: Stack) -> None:
    ev = {"event_id": uid("e"), "type": "page_view", "visitor_id": uid()}
    r = gate_stack.anon.post("/v1/events", json=ev)
    assert r.status_code == 401 and r.json()["field"] == "authorization"
    r = gate_stack.anon.post("/v1/events", json=ev, headers={"Authorization": "Bearer ks_" + "A" * 32})
    assert r.status_code == 401 and "unknown or revoked" in r.json()["reason"]
    r = gate_stack.anon.post("/v1/events", json=ev, headers={"Authorization": "Bearer nonsense"})
    assert r.status_code == 401
    reader = make_key(gate_stack, "secret", scopes=["profiles:read"])
    r = gate_stack.anon.post("/v1/events", json=ev, headers={"Authorization": f"Bearer {reader}"})
    assert r.status_code == 403 and r.json()["field"] == "scope" and "events:write" in r.json()["reason"]
    # a secret key never travels in a URL
    r = gate_stack.anon.post(f"/v1/events?key={reader}", json=ev)
    assert r.status_code == 401 and "never goes in a URL" in r.json()["reason"]
    # a public key in the URL (what navigator.sendBeacon can send) works, from its origin
    pub = make_key(gate_stack, "public", origins=["https://shop.example"])
    r = gate_stack.anon.post(f"/v1/events?key={pub}", content=b'{"events": []}',
                             headers={"content-type": "text/plain", "Origin": "https://shop.example"})
    assert r.status_code == 400 and r.json()["field"] == "events"  # past the gate, then validated
    r = gate_stack.anon.post(f"/v1/events?key={pub}", json=ev, headers={"Origin": EVIL})
    assert r.status_code == 403 and r.json()["field"] == "origin"
    r = gate_stack.anon.post(f"/v1/events?key={pub}", json=ev,
                             headers={"Referer": EVIL + "/page"})  # no Origin: the Referer's
    assert r.status_code == 403
    assert "traceback" not in r.text.lower()


def test_a_revoked_key_stops_working_on_every_api_process(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(name="revoke", workers=0)
    stack.api.terminate()  # restart its API with two processes behind one port
    stack.api.wait(10)
    stack.start_api(workers=2)
    key = make_key(stack, "secret", scopes=["events:write"])
    ev = {"event_id": uid("e"), "type": "page_view", "visitor_id": uid()}

    def statuses() -> set[int]:
        out = set()
        for _ in range(12):  # new connections: both processes answer
            with httpx.Client(base_url=stack.base) as c:
                out.add(c.post("/v1/events", json=ev, headers={"Authorization": f"Bearer {key}"}).status_code)
        return out

    deadline = time.monotonic() + 5
    while statuses() != {200}:
        assert time.monotonic() < deadline, "a new key was not accepted within 5 s"
        time.sleep(0.1)
    revoked_at = time.monotonic()
    revoke(stack, key)
    while statuses() != {401}:
        assert time.monotonic() - revoked_at < 5, "the revocation took more than 5 s"
        time.sleep(0.1)


def test_rate_limits_answer_429_with_retry_after(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(name="rate", workers=0, rate_per_key=5.0, rate_per_visitor=2.0)
    key = make_key(stack, "secret", scopes=["events:write"])
    codes = []
    for i in range(30):
        r = stack.anon.post("/v1/events", headers={"Authorization": f"Bearer {key}"},
                            json={"event_id": f"r{i}", "type": "page_view", "visitor_id": uid()})
        codes.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1 and r.json()["field"] == "rate"
    assert 200 in codes and 429 in codes
    # per visitor, for a public key
    pub = make_key(stack, "public", origins=[stack.base])
    vid = uid()
    codes = [stack.anon.post(f"/v1/events?key={pub}", headers={"Origin": stack.base},
                             json={"event_id": f"p{i}", "type": "page_view", "visitor_id": vid}
                             ).status_code for i in range(12)]
    assert codes[0] == 200 and 429 in codes


def test_cors_answers_only_the_keys_origins(gate_stack: Stack) -> None:
    make_key(gate_stack, "public", origins=["https://cors.example"])
    time.sleep(0.5)  # the NOTIFY reaches the key cache
    ok = gate_stack.anon.options("/v1/events", headers={
        "Origin": "https://cors.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == "https://cors.example"
    bad = gate_stack.anon.options("/v1/events", headers={
        "Origin": EVIL, "Access-Control-Request-Method": "POST"})
    assert bad.status_code == 403 and "access-control-allow-origin" not in bad.headers
    pub = make_key(gate_stack, "public", origins=["https://cors.example"])
    r = gate_stack.anon.post(f"/v1/events?key={pub}", headers={"Origin": "https://cors.example"},
                             json={"event_id": uid("e"), "type": "page_view", "visitor_id": uid()})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://cors.example"
    for path in ("/healthz", "/sdk/kairos.js", "/demo"):
        assert gate_stack.anon.get(path).headers.get("access-control-allow-origin") != "*"


def test_host_check_and_security_headers(gate_stack: Stack) -> None:
    r = gate_stack.anon.get("/healthz", headers={"Host": "attacker.example"})
    assert r.status_code == 403 and r.json()["field"] == "host"  # DNS rebinding
    assert gate_stack.anon.get("/healthz", headers={"Host": f"localhost:{gate_stack.settings.port}"}).status_code == 200
    for path in ("/healthz", "/v1/events", "/login", "/demo", "/nothing-here"):
        assert gate_stack.anon.get(path).headers.get("x-content-type-options") == "nosniff", path
    for page in ("/login",):
        h = gate_stack.anon.get(page).headers
        assert "frame-ancestors 'none'" in h["content-security-policy"]
        assert "script-src 'self'" in h["content-security-policy"]


def test_metrics_are_loopback_only_or_need_the_token(make_stack: Callable[..., Stack],
                                                     gate_stack: Stack) -> None:
    assert gate_stack.anon.get("/metrics").status_code == 200  # loopback, no token set
    stack = make_stack(name="metrics", workers=0, metrics_token="m" * 32)
    assert stack.anon.get("/metrics").status_code == 401
    assert stack.anon.get("/metrics", headers={"Authorization": "Bearer " + "m" * 32}).status_code == 200
    assert stack.anon.get("/metrics", headers={"Authorization": "Bearer " + "x" * 32}).status_code == 401


# -- identity you can trust --------------------------------------------------------------------
def test_a_public_key_cannot_claim_a_user_without_its_hash(stack: Stack) -> None:
    pub = stack.keys.public
    user, victim_vid, attacker = uid("cust"), uid(), uid()
    # the real customer, identified by the shop's server (secret key), fills a cart
    stack.post([{"event_id": uid("e"), "type": "add_to_cart", "visitor_id": victim_vid,
                 "user_id": user, "item": {"id": "sofa-1", "categories": ["furniture"]}}])
    stack.wait_profile(user, 1)
    h = {"Origin": stack.base}
    # an attacker's page names the user id without the hash: refused, nothing merges
    r = stack.anon.post(f"/v1/events?key={pub}", headers=h, json=[
        {"event_id": uid("e"), "type": "identify", "visitor_id": attacker, "user_id": user},
        {"event_id": uid("e"), "type": "page_view", "visitor_id": attacker}])
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 1 and body["rejected"][0]["field"] == "user_hash"
    wrong = "0" * 64
    r = stack.anon.post(f"/v1/events?key={pub}", headers=h, json={
        "event_id": uid("e"), "type": "identify", "visitor_id": attacker, "user_id": user,
        "user_hash": wrong})
    assert r.status_code == 400 and r.json()["field"] == "user_hash"
    # decide naming the user without the hash is answered for the anonymous visitor only
    ctx = {"zones": ["exit_intent", "cart_reminder"], "page_type": "product", "channel": "web"}
    forged = stack.anon.post(f"/v1/decide?key={pub}", headers=h,
                             json={"visitor_id": attacker, "user_id": user, "context": ctx})
    assert forged.status_code == 200
    assert not [d for d in forged.json()["decisions"] if d["campaign"] == "cart_reminder"]
    # with the hash the shop's server computed, the same page is the customer
    good = acl.user_hash(stack.keys.identity, user)
    r = stack.anon.post(f"/v1/decide?key={pub}", headers=h,
                        json={"visitor_id": uid(), "user_id": user, "user_hash": good, "context": ctx})
    assert [d for d in r.json()["decisions"] if d["campaign"] == "cart_reminder"], r.json()
    # and the attacker's visitor never merged into the customer
    assert stack.profile(attacker).json().get("user_id") is None
    assert attacker not in stack.profile(user).json()["linked_visitors"]
    # visitor ids in the engine's own u: namespace are refused from a public key
    r = stack.anon.post(f"/v1/decide?key={pub}", headers=h, json={"visitor_id": f"u:{user}", "context": ctx})
    assert r.status_code == 400 and r.json()["field"] == "visitor_id"


def test_decisions_cannot_be_forged(stack: Stack) -> None:
    pub, h = stack.keys.public, {"Origin": stack.base}
    vid = uid()
    r = stack.anon.post(f"/v1/events?key={pub}", headers=h, json=[
        {"event_id": uid("e"), "type": "decision", "visitor_id": vid},
        {"event_id": uid("e"), "type": "click", "visitor_id": vid,
         "decision_id": "home_hero.summer.0123456789"},
        {"event_id": uid("e"), "type": "impression", "visitor_id": vid,
         "decision_id": "home_hero.summer.0123456789.AAAAAAAAAAAA"}])
    assert r.status_code == 400
    assert [x["field"] for x in r.json()["rejected"]] == ["type", "decision_id", "decision_id"]
    d = stack.anon.post(f"/v1/decide?key={pub}", headers=h, json={
        "visitor_id": vid, "context": {"zones": ["home_hero"], "page_type": "home"}}).json()
    assert d["decisions"], d
    did = d["decisions"][0]["decision_id"]
    r = stack.anon.post(f"/v1/events?key={pub}", headers=h, json={
        "event_id": uid("e"), "type": "impression", "visitor_id": vid, "decision_id": did})
    assert r.status_code == 200 and r.json()["accepted"] == 1


# -- privacy -----------------------------------------------------------------------------------
def test_privacy_export_and_erase(stack: Stack) -> None:
    user, phone, laptop = uid("person"), uid(), uid()
    stack.post([{"event_id": uid("e"), "type": "item_view", "visitor_id": phone,
                 "item": {"id": "i1", "categories": ["shoes"]}},
                {"event_id": uid("e"), "type": "identify", "visitor_id": phone, "user_id": user}])
    stack.post([{"event_id": uid("e"), "type": "identify", "visitor_id": laptop, "user_id": user}])
    stack.wait_profile(user, 3)
    pv = make_key(stack, "secret", scopes=["privacy"])
    h = {"Authorization": f"Bearer {pv}"}
    doc = stack.anon.get(f"/v1/privacy/subjects/{phone}", headers=h)
    assert doc.status_code == 200, doc.text
    body = doc.json()
    assert body["profile_id"] == f"u:{user}" and set(body["linked_visitors"]) >= {phone, laptop}
    assert body["profile"]["event_count"] == 3 and "campaign_state" in body
    gone = stack.anon.delete(f"/v1/privacy/subjects/{user}", headers=h)
    assert gone.status_code == 200 and gone.json()["erased"] is True
    for some in (user, phone, laptop):
        assert stack.profile(some).status_code == 404, some
        assert stack.anon.get(f"/v1/privacy/subjects/{some}", headers=h).status_code == 404
    assert stack.anon.delete(f"/v1/privacy/subjects/{user}", headers=h).status_code == 200  # again
    # the requests are in the audit log
    async def audit() -> list[dict[str, Any]]:
        cp = _control(stack)
        try:
            return await cp.audit_entries(limit=20)
        finally:
            await cp.close()

    actions = [(e["action"], e["target"]) for e in run_async(audit())]
    assert ("privacy.erase", user) in actions and ("privacy.export", phone) in actions

