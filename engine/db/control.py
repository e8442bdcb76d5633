"""The access store in domain words: keys, users, sessions, one-time login links, partners,
secrets and the audit log, on PostgreSQL (SQLAlchemy Core, async, psycopg 3).

Keys and session tokens are stored as SHA-256 digests; passwords as argon2id hashes (made by
`engine.logic.passwords`); a key or token is shown once, when it is made. A change to the
keys sends `NOTIFY kairos_access` in its transaction so every API process reloads its cache
at once (and a periodic refresh catches a missed notice)."""

from __future__ import annotations

import secrets as _secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import and_, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from engine.db import schema as t
from engine.logic import access

NOTIFY_CHANNEL = "kairos_access"


class Conflict(ValueError):
    """A unique value is taken (an e-mail address, a name); the message says which."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str  # the prefix shown again, e.g. ks_AbCd1234
    kind: Literal["public", "secret"]
    key_hash: bytes
    name: str
    scopes: tuple[str, ...]
    origins: tuple[str, ...]
    partner_id: str | None
    created_by: str
    created_at: datetime
    revoked_at: datetime | None
    updated_at: datetime

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def principal(self) -> access.Principal:
        if self.kind == "public":
            return access.Principal("public_key", self.id, access.PUBLIC_KEY_SCOPES,
                                    origins=self.origins, partner_id=self.partner_id)
        return access.Principal("secret_key", self.id, frozenset(self.scopes),
                                partner_id=self.partner_id)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "name": self.name, "scopes": list(self.scopes),
                "origins": list(self.origins), "partner_id": self.partner_id,
                "created_by": self.created_by, "created_at": self.created_at.isoformat(),
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    role: str
    partner_id: str | None
    password_hash: str | None
    created_at: datetime
    disabled_at: datetime | None

    def principal(self) -> access.Principal:
        return access.user_principal(self.id, self.role, self.email, self.partner_id)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "email": self.email, "role": self.role,
                "partner_id": self.partner_id, "created_at": self.created_at.isoformat(),
                "disabled": self.disabled_at is not None,
                "has_password": self.password_hash is not None}


def _key(row: Any) -> KeyRecord:
    return KeyRecord(row.id, row.kind, bytes(row.key_hash), row.name, tuple(row.scopes),
                     tuple(row.origins), row.partner_id, row.created_by, row.created_at,
                     row.revoked_at, row.updated_at)


def _user(row: Any) -> User:
    return User(row.id, row.email, row.role, row.partner_id, row.password_hash, row.created_at,
                row.disabled_at)


def _token_digest(token: str) -> bytes:
    return access.key_digest(token)


class ControlPlane:
    """One per process, made at start-up from an AsyncEngine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    # -- keys -------------------------------------------------------------------------------
    async def create_key(self, kind: Literal["public", "secret"], *, name: str = "",
                         scopes: Sequence[str] = (), origins: Sequence[str] = (),
                         partner_id: str | None = None, created_by: str = "cli",
                         ) -> tuple[KeyRecord, str]:
        """(record, the key itself — shown this once)."""
        if kind == "secret":
            bad = [s for s in scopes if s not in access.SECRET_SCOPES]
            if bad or not scopes:
                raise ValueError(f"scopes must be some of {', '.join(sorted(access.SECRET_SCOPES))}"
                                 + (f"; unknown: {', '.join(bad)}" if bad else ""))
            if origins:
                raise ValueError("origins are for public keys (a secret key is never in a page)")
        else:
            if not origins:
                raise ValueError("a public key needs at least one allowed origin (--origin URL)")
            origins = [access.normalize_origin(o) for o in origins]
            scopes = sorted(access.PUBLIC_KEY_SCOPES)
        if partner_id is not None and kind == "secret" and set(scopes) - {access.Scope.DM}:
            raise ValueError("a key tied to a partner may only have the dm scope")
        plain = access.make_key(kind, _secrets.token_bytes(access.KEY_RANDOM_CHARS))
        async with self.engine.begin() as conn:
            row = (await conn.execute(
                insert(t.api_keys).values(
                    id=access.key_prefix(plain), kind=kind, key_hash=access.key_digest(plain),
                    name=name, scopes=list(scopes), origins=list(origins), partner_id=partner_id,
                    created_by=created_by,
                ).returning(*t.api_keys.c)
            )).one()
            await self._notify(conn, "keys")
        return _key(row), plain

    async def list_keys(self, *, partner_id: str | None = None) -> list[KeyRecord]:
        q = select(t.api_keys).order_by(t.api_keys.c.created_at)
        if partner_id is not None:
            q = q.where(t.api_keys.c.partner_id == partner_id)
        async with self.engine.connect() as conn:
            return [_key(r) for r in (await conn.execute(q)).all()]

    async def keys_changed_since(self, since: datetime | None) -> list[KeyRecord]:
        q = select(t.api_keys)
        if since is not None:
            q = q.where(t.api_keys.c.updated_at > since)
        async with self.engine.connect() as conn:
            return [_key(r) for r in (await conn.execute(q)).all()]

    async def key_by_hash(self, digest: bytes) -> KeyRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(t.api_keys).where(t.api_keys.c.key_hash == digest))
                   ).one_or_none()
        return _key(row) if row is not None else None

    async def revoke_key(self, prefix: str, *, by: str = "cli") -> KeyRecord | None:
        """Revoke the key whose shown prefix is `prefix` (idempotent); None if unknown."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(
                update(t.api_keys).where(t.api_keys.c.id == prefix)
                .values(revoked_at=func.coalesce(t.api_keys.c.revoked_at, func.now()),
                        updated_at=func.clock_timestamp())
                .returning(*t.api_keys.c)
            )).one_or_none()
            if row is not None:
                await self._notify(conn, "keys")
        return _key(row) if row is not None else None

    # -- partners ---------------------------------------------------------------------------
    async def create_partner(self, name: str, partner_id: str | None = None) -> str:
        pid = partner_id or access.make_id("pt", _secrets.token_bytes(16))
        async with self.engine.begin() as conn:
            await conn.execute(insert(t.partners).values(id=pid, name=name))
        return pid

    async def partner(self, partner_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(t.partners).where(t.partners.c.id == partner_id))
                   ).one_or_none()
        return dict(row._mapping) if row is not None else None

    # -- users ------------------------------------------------------------------------------
    async def add_user(self, email: str, role: str, password_hash: str | None, *,
                       partner_id: str | None = None) -> User:
        email = normalize_email(email)
        if role not in set(access.Role):
            raise ValueError(f"role must be one of {', '.join(r.value for r in access.Role)}")
        if (role == access.Role.PARTNER) != (partner_id is not None):
            raise ValueError("a partner user needs --partner, and only a partner user has one")
        uid = access.make_id("us", _secrets.token_bytes(16))
        try:
            async with self.engine.begin() as conn:
                row = (await conn.execute(
                    insert(t.users).values(id=uid, email=email, role=role,
                                           password_hash=password_hash, partner_id=partner_id)
                    .returning(*t.users.c)
                )).one()
        except IntegrityError as exc:
            if "users_email_lower" in str(exc.orig):
                raise Conflict(f"a user with e-mail {email} exists already") from None
            if "partner" in str(exc.orig):
                raise ValueError(f"partner {partner_id!r} does not exist") from None
            raise
        return _user(row)

    async def user_by_email(self, email: str) -> User | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(t.users).where(
                func.lower(t.users.c.email) == normalize_email(email).lower()))).one_or_none()
        return _user(row) if row is not None else None

    async def user(self, user_id: str) -> User | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(t.users).where(t.users.c.id == user_id))).one_or_none()
        return _user(row) if row is not None else None

    async def list_users(self, *, partner_id: str | None = None) -> list[User]:
        q = select(t.users).order_by(t.users.c.created_at)
        if partner_id is not None:
            q = q.where(t.users.c.partner_id == partner_id)
        async with self.engine.connect() as conn:
            return [_user(r) for r in (await conn.execute(q)).all()]

    async def count_users(self, role: str | None = None) -> int:
        q = select(func.count()).select_from(t.users)
        if role is not None:
            q = q.where(t.users.c.role == role)
        async with self.engine.connect() as conn:
            return int((await conn.execute(q)).scalar_one())

    async def set_password(self, user_id: str, password_hash: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(t.users).where(t.users.c.id == user_id)
                               .values(password_hash=password_hash))
            # a new password ends every other session of the user
            await conn.execute(t.sessions.delete().where(t.sessions.c.user_id == user_id))

    async def disable_user(self, user_id: str) -> bool:
        async with self.engine.begin() as conn:
            res = await conn.execute(update(t.users).where(t.users.c.id == user_id)
                                     .values(disabled_at=func.now()))
            await conn.execute(t.sessions.delete().where(t.sessions.c.user_id == user_id))
        return bool(res.rowcount)

    # -- sessions ---------------------------------------------------------------------------
    async def create_session(self, user_id: str, ttl: timedelta, *, ip: str = "",
                             user_agent: str = "") -> str:
        token = _secrets.token_urlsafe(32)
        async with self.engine.begin() as conn:
            await conn.execute(insert(t.sessions).values(
                token_hash=_token_digest(token), user_id=user_id,
                expires_at=datetime.now(UTC) + ttl, ip=ip[:64], user_agent=user_agent[:256]))
        return token

    async def session_user(self, token: str) -> User | None:
        """The signed-in user of a session token (None: unknown, expired or disabled)."""
        if not 20 <= len(token) <= 100:
            return None
        q = (select(t.users).join(t.sessions, t.sessions.c.user_id == t.users.c.id)
             .where(and_(t.sessions.c.token_hash == _token_digest(token),
                         t.sessions.c.expires_at > func.now(),
                         t.users.c.disabled_at.is_(None))))
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).one_or_none()
        return _user(row) if row is not None else None

    async def end_session(self, token: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(t.sessions.delete().where(
                or_(t.sessions.c.token_hash == _token_digest(token),
                    t.sessions.c.expires_at < func.now())))

    # -- one-time login links ---------------------------------------------------------------
    async def create_login_link(self, user_id: str, ttl: timedelta) -> str:
        token = _secrets.token_urlsafe(32)
        async with self.engine.begin() as conn:
            await conn.execute(insert(t.login_links).values(
                token_hash=_token_digest(token), user_id=user_id,
                expires_at=datetime.now(UTC) + ttl))
        return token

    async def use_login_link(self, token: str) -> User | None:
        """The link's user, once: a used or expired link gives None."""
        if not 20 <= len(token) <= 100:
            return None
        async with self.engine.begin() as conn:
            row = (await conn.execute(
                update(t.login_links)
                .where(and_(t.login_links.c.token_hash == _token_digest(token),
                            t.login_links.c.used_at.is_(None),
                            t.login_links.c.expires_at > func.now()))
                .values(used_at=func.now()).returning(t.login_links.c.user_id)
            )).one_or_none()
            if row is None:
                return None
            user = (await conn.execute(select(t.users).where(
                and_(t.users.c.id == row.user_id, t.users.c.disabled_at.is_(None))))).one_or_none()
        return _user(user) if user is not None else None

    # -- secrets ----------------------------------------------------------------------------
    async def secret(self, name: str, *, nbytes: int = 32) -> str:
        """The named secret (identity hash, decision-id MAC, CSRF …), made on first use."""
        async with self.engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO secrets (name, value) VALUES (:n, :v) ON CONFLICT (name) DO NOTHING"
            ), {"n": name, "v": _secrets.token_urlsafe(nbytes)})
            return str((await conn.execute(select(t.secrets.c.value)
                                           .where(t.secrets.c.name == name))).scalar_one())

    async def set_secret(self, name: str, value: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO secrets (name, value) VALUES (:n, :v) "
                "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"), {"n": name, "v": value})

    async def get_secret(self, name: str) -> str | None:
        async with self.engine.connect() as conn:
            v = (await conn.execute(select(t.secrets.c.value).where(t.secrets.c.name == name))
                 ).scalar_one_or_none()
        return None if v is None else str(v)

    # -- audit log --------------------------------------------------------------------------
    async def audit(self, actor: str, action: str, target: str = "", *,
                    detail: dict[str, Any] | None = None, ip: str = "",
                    partner_id: str | None = None, conn: AsyncConnection | None = None) -> None:
        stmt = insert(t.audit_log).values(actor=actor, action=action, target=target,
                                          detail=detail or {}, ip=ip[:64], partner_id=partner_id)
        if conn is not None:
            await conn.execute(stmt)
            return
        async with self.engine.begin() as c:
            await c.execute(stmt)

    async def audit_entries(self, *, limit: int = 100, before_id: int | None = None,
                            partner_id: str | None = None, action: str | None = None,
                            ) -> list[dict[str, Any]]:
        q = select(t.audit_log).order_by(t.audit_log.c.id.desc()).limit(min(max(limit, 1), 500))
        if before_id is not None:
            q = q.where(t.audit_log.c.id < before_id)
        if partner_id is not None:
            q = q.where(t.audit_log.c.partner_id == partner_id)
        if action is not None:
            q = q.where(t.audit_log.c.action == action)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [{**dict(r._mapping), "at": r.at.isoformat()} for r in rows]

    # -- notices ----------------------------------------------------------------------------
    @staticmethod
    async def _notify(conn: AsyncConnection, what: str) -> None:
        await conn.execute(text("SELECT pg_notify(:c, :w)"), {"c": NOTIFY_CHANNEL, "w": what})


def normalize_email(email: str) -> str:
    e = email.strip()
    local, at, domain = e.rpartition("@")
    if not at or not local or "." not in domain.strip(".") or len(e) > 254 or any(c.isspace() for c in e):
        raise ValueError(f"{email!r} is not an e-mail address")
    return f"{local}@{domain.lower()}"
