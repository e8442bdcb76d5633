"""Access, made once per API process: who is calling (keys from an in-process cache,
sessions from PostgreSQL with a short cache), the engine's secrets, and rate limits.

The key cache never costs a database round trip on a request: all keys are loaded at start,
reloaded when PostgreSQL sends `NOTIFY kairos_access` (the store sends it in every key
change's transaction) and refreshed every `refresh_s` seconds in case a notice was missed,
so a revocation reaches every process within a second or two and at most `refresh_s`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from engine.db.control import NOTIFY_CHANNEL, ControlPlane, KeyRecord, User
from engine.logic import access

log = logging.getLogger("kairos.access")

SESSION_COOKIE = "kairos_session"
SESSION_CACHE_S = 2.0
MISS_LOOKUPS_PER_S = 20.0


@dataclass(frozen=True, slots=True)
class Secrets:
    """The engine's own secrets, kept in the control plane (made on first start)."""

    identity: str  # user_hash = HMAC-SHA256(identity, user_id), computed by the site's server
    decisions: str  # MAC of the decision ids the engine issues
    csrf: str  # per-session CSRF tokens
    tracking: str  # signed open/click tokens of distributed-marketing mail

    @classmethod
    async def load(cls, control: ControlPlane) -> Secrets:
        return cls(await control.secret("identity"), await control.secret("decisions"),
                   await control.secret("csrf"), await control.secret("tracking"))


class Access:
    def __init__(self, control: ControlPlane, secrets: Secrets, *, refresh_s: float = 5.0,
                 key_rate: float = 1000.0, key_burst: float = 2000.0,
                 visitor_rate: float = 20.0, visitor_burst: float = 60.0,
                 login_rate: float = 0.2, login_burst: float = 5.0,
                 metrics_token: str | None = None, own_origins: tuple[str, ...] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.control = control
        self.secrets = secrets
        self.refresh_s = refresh_s
        self.metrics_token = metrics_token or None
        self.own_origins = own_origins  # the engine's own pages (CSRF: same-origin changes)
        self._origins: frozenset[str] = frozenset()
        self.clock = clock
        self._keys: dict[bytes, KeyRecord] = {}
        self._who: dict[bytes, access.Principal] = {}  # each active key's principal, made once
        self._seen: KeyRecord | None = None
        self._sessions: OrderedDict[str, tuple[float, User | None]] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self._reload = asyncio.Event()
        self.per_key = access.RateLimiter(key_rate, key_burst, max_keys=10_000)
        self.per_visitor = access.RateLimiter(visitor_rate, visitor_burst, max_keys=200_000)
        self.logins = access.RateLimiter(login_rate, login_burst, max_keys=50_000)
        self.misses = access.RateLimiter(MISS_LOOKUPS_PER_S, MISS_LOOKUPS_PER_S, max_keys=1)
        self.loaded_at = 0.0

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        await self.reload()
        self._tasks.append(asyncio.create_task(self._refresher(), name="access-refresh"))
        self._tasks.append(asyncio.create_task(self._listener(), name="access-listen"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def reload(self) -> None:
        records = await self.control.keys_changed_since(None)
        keys = {r.key_hash: r for r in records if r.active}
        self._keys, self._who = keys, {h: r.principal() for h, r in keys.items()}
        self._origins = frozenset(o for r in self._keys.values() if r.kind == "public"
                                  for o in r.origins)
        self.loaded_at = self.clock()

    async def _refresher(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reload.wait(), self.refresh_s)
            self._reload.clear()
            try:
                await self.reload()
            except Exception as exc:  # keep serving the last good cache
                log.warning("could not reload keys: %s", exc)

    async def _listener(self) -> None:
        """LISTEN on PostgreSQL; each notice wakes the refresher. Reconnects on failure."""
        import psycopg

        from engine.db import sync_url

        url = sync_url(self.control.engine.url.render_as_string(hide_password=False))
        dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._reload.set()  # anything missed while not listening
                    delay = 0.5
                    async for _ in conn.notifies():
                        self._reload.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("access listener: %s; reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    # -- who is calling ---------------------------------------------------------------------
    def key(self, token: str) -> access.Principal | None:
        """The principal of a well-formed, known, active key; None otherwise (no I/O)."""
        if access.key_kind(token) is None:
            return None
        return self._who.get(access.key_digest(token))

    async def resolve_key(self, token: str) -> access.Principal | None:
        """`key`, and for a well-formed key the cache does not know yet (made a moment ago,
        before its NOTIFY arrived) one indexed look-up, at most `MISS_LOOKUPS_PER_S` a
        second in all: random keys cannot turn into a database round trip per request."""
        who = self.key(token)
        if who is not None or access.key_kind(token) is None:
            return who
        ok, _ = self.misses.take("all", self.clock())
        if not ok:
            return None
        digest = access.key_digest(token)
        try:
            record = await self.control.key_by_hash(digest)
        except Exception as exc:  # the control plane away: the cache alone answers
            log.debug("key look-up failed: %s", exc)
            return None
        if record is None or not record.active:
            return None
        self._keys[digest] = record
        who = self._who[digest] = record.principal()
        return who

    def origin_known(self, origin: str) -> bool:
        """Whether some active public key allows `origin` (CORS preflights carry no key)."""
        return access.origin_allowed(origin, self._origins) or access.origin_allowed(
            origin, self.own_origins)

    def metrics(self, token: str) -> access.Principal | None:
        import hmac

        if self.metrics_token and hmac.compare_digest(token.encode(), self.metrics_token.encode()):
            return access.Principal("metrics", "metrics-token", frozenset({access.Scope.METRICS}))
        return None

    async def session(self, token: str) -> access.Principal | None:
        user = await self.session_user(token)
        return user.principal() if user is not None else None

    async def session_user(self, token: str) -> User | None:
        now = self.clock()
        hit = self._sessions.get(token)
        if hit is not None and now - hit[0] < SESSION_CACHE_S:
            return hit[1]
        user = await self.control.session_user(token)
        self._sessions[token] = (now, user)
        self._sessions.move_to_end(token)
        while len(self._sessions) > 10_000:
            self._sessions.popitem(last=False)
        return user

    def forget_session(self, token: str) -> None:
        self._sessions.pop(token, None)

    async def sign_in(self, user: User, *, ip: str, user_agent: str,
                      ttl: timedelta = timedelta(days=7)) -> str:
        token = await self.control.create_session(user.id, ttl, ip=ip, user_agent=user_agent)
        await self.control.audit(f"user:{user.id}", "session.start", user.email, ip=ip,
                                 partner_id=user.partner_id)
        return token

    # -- secrets in use ---------------------------------------------------------------------
    def csrf_for(self, session_token: str) -> str:
        return access.csrf_token(self.secrets.csrf, session_token)

    def csrf_ok(self, session_token: str, given: object) -> bool:
        return access.verify_csrf(self.secrets.csrf, session_token, given)

    def identity_ok(self, user_id: str, given: object) -> bool:
        return access.verify_user_hash(self.secrets.identity, user_id, given)

    def sign_decision(self, base: str) -> str:
        return access.signed_decision_id(self.secrets.decisions, base)

    def decision_ok(self, did: str) -> bool:
        return access.verify_decision_id(self.secrets.decisions, did) is not None

    # -- rate limits ------------------------------------------------------------------------
    def rate(self, who: access.Principal, visitor_id: str | None) -> float | None:
        """None when allowed, else the seconds to wait (429 Retry-After)."""
        if not who.is_key:
            return None
        ok, wait = self.per_key.take(who.id, self.clock())
        if not ok:
            return wait
        if visitor_id:
            return self.rate_visitor(who, visitor_id)
        return None

    def rate_visitor(self, who: access.Principal, visitor_id: str) -> float | None:
        """A public key's rate per visitor (a page or an app names its visitor)."""
        if who.kind != "public_key":
            return None
        ok, wait = self.per_visitor.take(f"{who.id}:{visitor_id}", self.clock())
        return None if ok else wait
