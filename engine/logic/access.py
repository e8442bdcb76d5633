"""Who may call what: principals, scopes, roles, the route policy check, key formats, the
identity hash, CSRF tokens, signed decision ids and rate limits. Pure: plain data in and out;
randomness and time are passed in.

Every caller becomes a `Principal` with a set of scopes:
- a public write key (`kp_…`, safe in a page or an app): `events:write` and `decide`, from
  its allowed origins only;
- a secret key (`ks_…`, for servers): the scopes it was created with (`admin` grants all);
- a signed-in user: the scopes of the user's role;
- nobody: no scopes.

A route's `Policy` names the scopes that grant it (any one is enough) and whether a public
key may call it. `authorize` answers 401 (no or bad credential), 403 naming the missing scope
or the refused origin, or allows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal
from urllib.parse import urlsplit


class Scope(StrEnum):
    EVENTS_WRITE = "events:write"
    DECIDE = "decide"
    PROFILES_READ = "profiles:read"
    CATALOG_WRITE = "catalog:write"
    STATS_READ = "stats:read"
    PRIVACY = "privacy"
    ADMIN = "admin"
    CAMPAIGNS_WRITE = "campaigns:write"
    DM = "dm"  # a partner's distributed-marketing API (scoped to one partner)
    DM_BRAND = "dm:brand"  # the brand's side: templates, releases, approvals, results
    DM_CONTACTS = "dm:contacts"  # the partners' contacts' e-mail addresses, for the brand
    METRICS = "metrics"


SECRET_SCOPES: frozenset[str] = frozenset(s.value for s in Scope if s is not Scope.METRICS)
PUBLIC_KEY_SCOPES: frozenset[str] = frozenset({Scope.EVENTS_WRITE, Scope.DECIDE})


class Role(StrEnum):
    ADMIN = "admin"  # users, keys, settings (and everything else)
    MARKETER = "marketer"  # campaigns, recipes, templates, approvals (and what analysts see)
    ANALYST = "analyst"  # dashboard, stats, profiles
    PARTNER = "partner"  # one partner's distributed marketing


ROLE_SCOPES: dict[str, frozenset[str]] = {
    Role.ADMIN: frozenset({Scope.ADMIN}),
    Role.MARKETER: frozenset({Scope.STATS_READ, Scope.PROFILES_READ, Scope.CAMPAIGNS_WRITE,
                              Scope.CATALOG_WRITE, Scope.DM_BRAND}),
    Role.ANALYST: frozenset({Scope.STATS_READ, Scope.PROFILES_READ}),
    Role.PARTNER: frozenset({Scope.DM}),
}

Kind = Literal["anonymous", "public_key", "secret_key", "user", "metrics", "loopback"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. `id` is a key prefix, a user id, or "" for nobody."""

    kind: Kind
    id: str = ""
    scopes: frozenset[str] = frozenset()
    origins: tuple[str, ...] = ()  # public keys: the allowed browser origins
    partner_id: str | None = None
    role: str | None = None
    email: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.kind != "anonymous"

    @property
    def is_key(self) -> bool:
        return self.kind in ("public_key", "secret_key")

    def has(self, scope: str) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes

    @property
    def may_identify(self) -> bool:
        """Whether this caller may name a `user_id` without the identity hash (servers)."""
        return self.kind in ("secret_key", "user")


NOBODY = Principal("anonymous")


def user_principal(user_id: str, role: str, email: str, partner_id: str | None) -> Principal:
    return Principal("user", user_id, ROLE_SCOPES.get(role, frozenset()), partner_id=partner_id,
                     role=role, email=email)


@dataclass(frozen=True, slots=True)
class Policy:
    """Who may call one route. `scopes`: any one of them grants it; `public`: a public key
    (whose scopes are PUBLIC_KEY_SCOPES) may call it; `page`: an HTML page (a refusal sends a
    browser to the login page instead of a JSON error); `open`: anybody; `metrics`: the
    metrics token, or loopback when none is set."""

    scopes: frozenset[str] = frozenset()
    public: bool = False
    page: bool = False
    open: bool = False
    metrics: bool = False
    session: bool = True  # a signed-in user may call it (with the role's scopes)
    signed_in: bool = False  # any signed-in user, whatever the role (sign out, own password)
    identify: bool = False  # with `open`: anybody, but tell the route who is signed in
    # the key may also travel in the request's body (Segment's `writeKey`: iOS and Android
    # send no Authorization header). With no credential in the headers or the URL the gate
    # lets the request on as *pending*: the route reads the key from the body and has the
    # gate check it (same checks, same answers); until it does, the route cannot answer 2xx
    body_key: bool = False

    def describe(self) -> str:
        if self.open:
            return "open"
        if self.metrics:
            return "metrics token or loopback"
        if self.signed_in:
            return "a signed-in user"
        who = " or ".join(sorted(self.scopes))
        body = " (the key in the header or the body)" if self.body_key else ""
        return f"{'public key, ' if self.public else ''}{who}{body}"


OPEN = Policy(open=True)
OPEN_SIGNED_IN = Policy(open=True, identify=True, page=True)  # e.g. the sign-in page
SIGNED_IN = Policy(signed_in=True)
METRICS = Policy(metrics=True)


def needs(*scopes: str, public: bool = False, page: bool = False, session: bool = True,
          body_key: bool = False) -> Policy:
    return Policy(frozenset(scopes), public=public, page=page, session=session, body_key=body_key)


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    status: int = 200
    field: str = ""
    reason: str = ""

    @property
    def message(self) -> str:
        return f"{self.field} {self.reason}".strip()


ALLOW = Verdict(True)


def authorize(policy: Policy, who: Principal, origin: str | None = None,
              loopback: bool = False, metrics_token_set: bool = False) -> Verdict:
    """The route check. `origin`: the request's Origin (or Referer's origin) when a browser
    sent one; `loopback`: the peer is 127.0.0.1/::1."""
    if policy.open:
        return ALLOW
    if policy.metrics:
        if who.kind == "metrics" or who.has(Scope.METRICS):
            return ALLOW
        if not metrics_token_set and loopback:
            return ALLOW
        if not who.authenticated:
            return Verdict(False, 401, "authorization", "needs the metrics token")
        return Verdict(False, 403, "authorization", "needs the metrics token")
    if not who.authenticated:
        return Verdict(False, 401, "authorization",
                       "needs a key (Authorization: Bearer …) or a signed-in session")
    if who.kind == "public_key":
        if not policy.public:
            return Verdict(False, 403, "authorization",
                           f"a public key may not call this; needs a secret key or a user "
                           f"with {policy.describe()}")
        if origin is not None and not origin_allowed(origin, who.origins):
            return Verdict(False, 403, "origin", f"{origin} is not allowed for this key")
        if policy.scopes and not (policy.scopes & PUBLIC_KEY_SCOPES):
            return Verdict(False, 403, "scope", f"needs {policy.describe()}")
        return ALLOW
    if policy.signed_in:
        return ALLOW if who.kind == "user" else Verdict(False, 403, "authorization",
                                                         "needs a signed-in user")
    if who.kind == "user" and not policy.session:
        return Verdict(False, 403, "authorization", "needs a key")
    if Scope.ADMIN in who.scopes or policy.scopes & who.scopes:
        return ALLOW
    return Verdict(False, 403, "scope", f"needs {policy.describe()}")


# -- keys ---------------------------------------------------------------------------------
KEY_RANDOM_CHARS = 32
PREFIX_CHARS = 8  # after "kp_"/"ks_": what is shown again (the key itself never is)
_KEY = re.compile(r"^k[ps]_[A-Za-z0-9]{32}$")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def make_key(kind: Literal["public", "secret"], random_bytes: bytes) -> str:
    """A new key from at least 32 random bytes (62 symbols: ~190 bits in 32 characters)."""
    if len(random_bytes) < KEY_RANDOM_CHARS:
        raise ValueError("make_key needs at least 32 random bytes")
    body = "".join(_ALPHABET[b % 62] for b in random_bytes[:KEY_RANDOM_CHARS])
    return ("kp_" if kind == "public" else "ks_") + body


def key_kind(text: str) -> Literal["public", "secret"] | None:
    """'public' / 'secret' for a well-formed key, else None (nothing else is looked up)."""
    if not _KEY.match(text):
        return None
    return "public" if text.startswith("kp_") else "secret"


def key_digest(key: str) -> bytes:
    """What is stored: SHA-256 of the key. Keys carry ~190 random bits, so a fast hash is
    safe here (a password needs argon2; a key does not)."""
    return hashlib.sha256(key.encode()).digest()


def key_prefix(key: str) -> str:
    return key[: 3 + PREFIX_CHARS]


def bearer(authorization: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>`, or of HTTP Basic with the key as the
    user name (what Segment's libraries send), else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer" and value:
        return value
    if scheme == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        user, _, _ = decoded.partition(":")
        return user or None
    return None


# -- origins ------------------------------------------------------------------------------
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(text: str) -> str:
    """`scheme://host[:port]`, lower case, default port dropped; `*.` allowed as the first
    label of an allowed origin (any subdomain). ValueError names what is wrong."""
    raw = text.strip()
    wildcard = "://*." in raw
    probe = raw.replace("://*.", "://wildcard.", 1) if wildcard else raw
    parts = urlsplit(probe)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{text!r}: an origin must start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"{text!r}: an origin needs a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{text!r}: an origin is scheme://host[:port], without a path")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r}: bad port") from None
    host = parts.hostname.lower()
    if wildcard:
        host = "*" + host[len("wildcard"):]
    if ":" in host:  # IPv6
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}:{port}"
    return f"{parts.scheme}://{host}"


def origin_of(url: str | None) -> str | None:
    """The origin of a Referer URL (None when there is none or it is not http(s))."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        return normalize_origin(f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}")
    except ValueError:
        return None


def origin_allowed(origin: str, allowed: tuple[str, ...] | frozenset[str]) -> bool:
    try:
        o = normalize_origin(origin)
    except ValueError:
        return False
    for a in allowed:
        if a == o:
            return True
        if "://*." in a:
            scheme, _, rest = a.partition("://*.")
            if o.startswith(scheme + "://") and o[len(scheme) + 3:].endswith("." + rest):
                return True
    return False


# -- identity you can trust -------------------------------------------------------------
def user_hash(identity_secret: str, user_id: str) -> str:
    """HMAC-SHA256(identity secret, user_id) in hex: what the site's own server computes and
    puts in the page beside the user id (as Intercom's identity verification does)."""
    return hmac.new(identity_secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def verify_user_hash(identity_secret: str, user_id: str, given: object) -> bool:
    if not isinstance(given, str) or len(given) != 64:
        return False
    return hmac.compare_digest(user_hash(identity_secret, user_id), given.lower())


# -- CSRF ---------------------------------------------------------------------------------
def csrf_token(secret: str, session_token: str) -> str:
    """A per-session token for forms and state-changing fetches (synchronizer token derived
    from the session, so nothing more is stored)."""
    mac = hmac.new(secret.encode(), b"csrf:" + session_token.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")


def verify_csrf(secret: str, session_token: str, given: object) -> bool:
    return isinstance(given, str) and hmac.compare_digest(csrf_token(secret, session_token), given)


# -- signed decision ids --------------------------------------------------------------------
DECISION_MAC_CHARS = 12


#: base64's two symbols outside [A-Za-z0-9] as the MAC writes them ('+' and '/', which the
#: URL-safe alphabet spells '-' and '_', become 'x' and 'y')
_MAC_SYMBOLS = bytes.maketrans(b"+/", b"xy")


def sign(secret: str, text: str, chars: int = DECISION_MAC_CHARS) -> str:
    """The first `chars` characters of the base64 HMAC-SHA256 of `text`, '-'/'_' as 'x'/'y'
    (only the bytes those characters encode are converted: 3 bytes per 4 characters)."""
    mac = hmac.digest(secret.encode(), text.encode(), "sha256")  # OpenSSL's one-shot HMAC
    head = mac[:-(-chars // 4) * 3]
    return binascii.b2a_base64(head, newline=False).translate(_MAC_SYMBOLS)[:chars].decode()


def signed_decision_id(secret: str, base: str) -> str:
    """`<base>.<mac>`: an id the engine issued can be told from one a client made up."""
    return f"{base}.{sign(secret, base)}"


def verify_decision_id(secret: str, did: str) -> str | None:
    """The unsigned base of a decision id the engine issued, else None."""
    base, _, mac = did.rpartition(".")
    if not base or len(mac) != DECISION_MAC_CHARS:
        return None
    return base if hmac.compare_digest(sign(secret, base), mac) else None


# -- rate limits ----------------------------------------------------------------------------
@dataclass
class RateLimiter:
    """Token buckets per key (`rate` per second, `burst` deep), at most `max_keys` buckets
    (the least recently used go first, so memory is bounded whatever the callers send).
    `take(key, now)` -> (allowed, seconds to wait before retrying)."""

    rate: float
    burst: float
    max_keys: int = 100_000
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)

    def take(self, key: str, now: float, cost: float = 1.0) -> tuple[bool, float]:
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        ok = tokens >= cost
        if ok:
            tokens -= cost
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        if ok:
            return True, 0.0
        return False, (cost - tokens) / self.rate if self.rate > 0 else 60.0

    def __len__(self) -> int:
        return len(self._buckets)


def make_id(prefix: str, random_bytes: bytes, chars: int = 16) -> str:
    """A random id (`us_…`, `pt_…`): ids are never counters, so they cannot be guessed."""
    if len(random_bytes) < chars:
        raise ValueError("make_id needs as many random bytes as characters")
    return prefix + "_" + "".join(_ALPHABET[b % 62] for b in random_bytes[:chars])
