"""The control plane on a real PostgreSQL: migrations, keys, users, sessions, one-time
links, secrets, the audit log, and the key cache following NOTIFY across two processes'
worth of Access objects."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from engine.db import migrate, new_engine
from engine.db.control import Conflict, ControlPlane
from engine.flows.access import Access, Secrets

pytestmark = pytest.mark.integration


@pytest.fixture
async def cp(database_url: str):
    plane = ControlPlane(new_engine(database_url, pool_size=2))
    yield plane
    await plane.close()


def test_migrations_are_idempotent(database_url: str) -> None:
    migrate(database_url)
    migrate(database_url)


async def test_keys_are_stored_hashed_and_shown_once(cp: ControlPlane) -> None:
    rec, plain = await cp.create_key("secret", scopes=["events:write"], name="server")
    assert plain.startswith("ks_") and rec.id == plain[:11]
    assert plain.encode() not in rec.key_hash
    listed = {r.id: r for r in await cp.list_keys()}
    assert listed[rec.id].scopes == ("events:write",)
    assert (await cp.revoke_key(rec.id)).revoked_at is not None
    assert await cp.revoke_key("ks_nothing0") is None


async def test_key_validation(cp: ControlPlane) -> None:
    with pytest.raises(ValueError, match="origin"):
        await cp.create_key("public")
    with pytest.raises(ValueError, match="unknown: nope"):
        await cp.create_key("secret", scopes=["nope"])
    with pytest.raises(ValueError, match="origins are for public keys"):
        await cp.create_key("secret", scopes=["decide"], origins=["https://x.io"])
    rec, _ = await cp.create_key("public", origins=["HTTPS://Shop.Example:443"])
    assert rec.origins == ("https://shop.example",)
    assert set(rec.scopes) == {"events:write", "decide"}


async def test_users_sessions_and_links(cp: ControlPlane) -> None:
    u = await cp.add_user("Ana@Example.COM", "analyst", None)
    assert u.email == "Ana@example.com"
    with pytest.raises(Conflict):
        await cp.add_user("ana@example.com", "admin", None)
    with pytest.raises(ValueError, match="partner"):
        await cp.add_user("p@example.com", "partner", None)
    assert (await cp.user_by_email("ANA@example.com")).id == u.id
    token = await cp.create_session(u.id, timedelta(hours=1))
    assert (await cp.session_user(token)).id == u.id
    assert await cp.session_user(token + "x") is None
    await cp.end_session(token)
    assert await cp.session_user(token) is None
    expired = await cp.create_session(u.id, timedelta(seconds=-1))
    assert await cp.session_user(expired) is None
    link = await cp.create_login_link(u.id, timedelta(minutes=5))
    assert (await cp.use_login_link(link)).id == u.id
    assert await cp.use_login_link(link) is None  # once
    s2 = await cp.create_session(u.id, timedelta(hours=1))
    await cp.disable_user(u.id)
    assert await cp.session_user(s2) is None


async def test_partner_users(cp: ControlPlane) -> None:
    pid = await cp.create_partner("Dealer North")
    u = await cp.add_user("dealer@north.example", "partner", None, partner_id=pid)
    assert u.partner_id == pid and u.principal().partner_id == pid
    with pytest.raises(ValueError, match="does not exist"):
        await cp.add_user("x@south.example", "partner", None, partner_id="pt_missing")


async def test_secrets_are_made_once(cp: ControlPlane) -> None:
    a, b = await cp.secret("test-secret"), await cp.secret("test-secret")
    assert a == b and len(a) >= 40


async def test_audit_log(cp: ControlPlane) -> None:
    await cp.audit("cli:test", "key.create", "ks_x", detail={"scopes": ["decide"]}, ip="127.0.0.1")
    entries = await cp.audit_entries(action="key.create", limit=5)
    assert entries[0]["actor"] == "cli:test" and entries[0]["detail"] == {"scopes": ["decide"]}


async def test_revocation_reaches_every_cache_within_seconds(database_url: str) -> None:
    planes = [ControlPlane(new_engine(database_url, pool_size=2)) for _ in range(3)]
    secrets = await Secrets.load(planes[0])
    caches = [Access(p, secrets, refresh_s=30.0) for p in planes[1:]]  # NOTIFY, not the timer
    for c in caches:
        await c.start()
    try:
        rec, plain = await planes[0].create_key("secret", scopes=["profiles:read"])
        await _until(lambda: all(c.key(plain) is not None for c in caches), 5.0)
        assert caches[0].key(plain).has("profiles:read")
        start = time.monotonic()
        await planes[0].revoke_key(rec.id)
        await _until(lambda: all(c.key(plain) is None for c in caches), 5.0)
        assert time.monotonic() - start < 5.0
    finally:
        for c in caches:
            await c.stop()
        for p in planes:
            await p.close()


async def test_refresh_alone_catches_a_change(database_url: str) -> None:
    """Even without the listener (a missed notice), the periodic refresh picks it up."""
    plane = ControlPlane(new_engine(database_url, pool_size=2))
    cache = Access(plane, await Secrets.load(plane), refresh_s=0.5)
    await cache.reload()
    refresher = asyncio.create_task(cache._refresher())
    try:
        _, plain = await plane.create_key("secret", scopes=["decide"])
        await _until(lambda: cache.key(plain) is not None, 3.0)
    finally:
        refresher.cancel()
        await plane.close()


async def _until(cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
