"""What the admin pages do: keys, users and the audit log, each change audited with who did it
and from where. Also the first start's seeding (an admin and the demo shop's key)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from engine.db.control import ControlPlane, KeyRecord, User
from engine.flows.access import Access
from engine.logic import passwords
from engine.logic.access import Principal

LOGIN_LINK_TTL = timedelta(hours=24)


def actor(who: Principal) -> str:
    if who.kind == "user":
        return f"user:{who.email}"
    if who.is_key:
        return f"key:{who.id}"
    return who.kind


class Admin:
    def __init__(self, control: ControlPlane, access: Access) -> None:
        self.control = control
        self.access = access

    async def keys(self) -> list[KeyRecord]:
        return await self.control.list_keys()

    async def users(self) -> list[User]:
        return await self.control.list_users()

    async def create_key(self, who: Principal, kind: str, *, name: str, scopes: Sequence[str],
                         origins: Sequence[str], ip: str) -> tuple[KeyRecord, str]:
        if kind not in ("public", "secret"):
            raise ValueError("kind must be public or secret")
        rec, plain = await self.control.create_key(
            kind, name=name.strip()[:64], scopes=scopes, origins=origins,  # type: ignore[arg-type]
            created_by=actor(who))
        await self.control.audit(actor(who), "key.create", rec.id, ip=ip,
                                 detail={"kind": rec.kind, "scopes": list(rec.scopes),
                                         "origins": list(rec.origins), "name": rec.name})
        await self.access.reload()
        return rec, plain

    async def revoke_key(self, who: Principal, prefix: str, *, ip: str) -> KeyRecord | None:
        rec = await self.control.revoke_key(prefix, by=actor(who))
        if rec is not None:
            await self.control.audit(actor(who), "key.revoke", rec.id, ip=ip,
                                     partner_id=rec.partner_id)
            await self.access.reload()
        return rec

    async def add_user(self, who: Principal, email: str, role: str, partner_id: str | None, *,
                       ip: str) -> tuple[User, str]:
        """(the user, a one-time sign-in link token): the new user sets a password later."""
        user = await self.control.add_user(email, role, None, partner_id=partner_id or None)
        token = await self.control.create_login_link(user.id, LOGIN_LINK_TTL)
        await self.control.audit(actor(who), "user.add", user.email, ip=ip,
                                 detail={"role": role}, partner_id=user.partner_id)
        return user, token

    async def set_password(self, who: Principal, password: str, *, ip: str) -> None:
        if who.kind != "user":
            raise ValueError("only a signed-in user has a password")
        hashed = passwords.hash_password(password)  # PasswordError says why it is refused
        await self.control.set_password(who.id, hashed)
        await self.control.audit(actor(who), "user.password", who.email or who.id, ip=ip,
                                 partner_id=who.partner_id)

    async def audit(self, *, limit: int = 100, before: int | None = None,
                    partner_id: str | None = None) -> list[dict[str, Any]]:
        return await self.control.audit_entries(limit=limit, before_id=before,
                                                partner_id=partner_id)


async def seed_first_start(control: ControlPlane, *, admin_email: str,
                           demo_origins: Sequence[str], demo_secret_name: str) -> dict[str, Any]:
    """On a fresh control plane: the first admin (no password: a one-time link signs in) and
    the demo shop's public key. Idempotent; returns what it made (and a fresh login link for
    the first admin, as Jupyter prints its token URL at every start)."""
    made: dict[str, Any] = {}
    admin = await control.user_by_email(admin_email)
    if admin is None and await control.count_users("admin") == 0:
        admin = await control.add_user(admin_email, "admin", None)
        await control.audit("kairos up", "user.add", admin.email, detail={"role": "admin",
                                                                        "first_start": True})
        made["admin_created"] = True
    if admin is not None:
        made["admin_email"] = admin.email
        made["login_token"] = await control.create_login_link(admin.id, LOGIN_LINK_TTL)
    from engine.logic.access import normalize_origin

    demo = await control.get_secret(demo_secret_name)
    live = {k.id: k for k in await control.list_keys() if k.active}
    current = live.get(demo[:11]) if demo else None
    wanted = {normalize_origin(o) for o in demo_origins}
    if current is not None and not wanted <= set(current.origins):  # served elsewhere now
        await control.revoke_key(current.id, by="kairos up")
        current = None
    if current is None:
        rec, plain = await control.create_key("public", name="demo shop", origins=demo_origins,
                                              created_by="kairos up")
        await control.set_secret(demo_secret_name, plain)
        await control.audit("kairos up", "key.create", rec.id,
                            detail={"kind": "public", "origins": list(rec.origins),
                                    "name": rec.name})
        made["demo_key"] = rec.id
    return made
