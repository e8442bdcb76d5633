"""What a caller may claim in an event, by who the caller is. Pure.

- Type `decision` is the engine's own (it logs its decisions on the decisions topic); a
  client that sends it gets a field error.
- A reaction (`impression`, `click`, `dismiss`, `conversion`) that names a `decision_id`
  must name one the engine issued (its MAC checks), or it is refused: a forged id is never
  counted in a campaign's stats.
- Through a public key (a page or an app), naming a `user_id` needs its `user_hash`,
  HMAC-SHA256(identity secret, user_id) computed by the site's server; without a valid one
  the event is refused and nothing merges. Visitor ids starting with `u:` are the engine's
  (user-only messages of server libraries) and are refused too.
- `user_hash` is a credential, not data: it is dropped from every accepted event.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from engine.logic.access import Principal
from engine.logic.events import Event, Rejection

RESERVED_VISITOR_PREFIX = "u:"
ENGINE_TYPES = frozenset({"decision"})


def screen(events: Sequence[Event], indices: Sequence[int], who: Principal,
           identity_ok: Callable[[str, str | None], bool],
           decision_ok: Callable[[str], bool]) -> tuple[list[Event], list[Rejection]]:
    """(events the caller may send, as they will be logged; rejections at their indices)."""
    good: list[Event] = []
    bad: list[Rejection] = []
    public = not who.may_identify
    for ev, i in zip(events, indices, strict=True):
        why = _refusal(ev, public, identity_ok, decision_ok)
        if why is not None:
            bad.append(Rejection(i, *why))
            continue
        good.append(msgspec.structs.replace(ev, user_hash=None) if ev.user_hash else ev)
    return good, bad


def _refusal(ev: Event, public: bool, identity_ok: Callable[[str, str | None], bool],
             decision_ok: Callable[[str], bool]) -> tuple[str, str] | None:
    if ev.type in ENGINE_TYPES:
        return "type", f"{ev.type} is reserved to the engine"
    if ev.decision_id is not None and not decision_ok(ev.decision_id):
        return "decision_id", "is not a decision this engine issued"
    if public:
        if ev.visitor_id.startswith(RESERVED_VISITOR_PREFIX):
            return "visitor_id", f"may not start with {RESERVED_VISITOR_PREFIX!r} (reserved)"
        if ev.user_id is not None and not identity_ok(ev.user_id, ev.user_hash):
            return "user_hash", ("must be HMAC-SHA256(identity secret, user_id) from your "
                                 "server to send user_id with a public key")
    return None


def trusted_user(who: Principal, user_id: str | None, user_hash: object,
                 identity_ok: Callable[[str, str | None], bool]) -> str | None:
    """The user id a decide or recommendations call may act for: a public caller without a
    valid hash is answered for the anonymous visitor only (None)."""
    if user_id is None:
        return None
    if who.may_identify:
        return user_id
    return user_id if isinstance(user_hash, str) and identity_ok(user_id, user_hash) else None
