"""Sessions: what a visitor is doing *now*, apart from their history.

A session is a run of one visitor's events. When an event carries the beacon's session id
(`context.session_id`, as the REES46 loader and the beacon send it) the id decides: a new id
starts a new session. Without one, a gap of more than `gap_ms` (30 minutes, the usual web
analytics cut) since the session's last event starts a new session. An event that adds an id
to a session cut by gap keeps the session (it adopts the id) unless the gap was exceeded.

Pure: plain data in, plain data out; the time comes from the events. `Session` is what a
profile carries (`pack()` gives its compact msgpack-ready list, about 60 bytes plus the item ids),
`SessionTracker` keeps the current session of many visitors in process (the offline twin of the
profile field, used by the replay and by `models.reco.sessionknn`), and `split_sessions` cuts a
whole log into sessions (for derived session logs and tests).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

KIND = "kairos.sessions"
VERSION = 1
SESSION_GAP_MS = 30 * 60 * 1000
#: How many distinct items of each kind (viewed, carted, bought) a session keeps.
SESSION_MAX_ITEMS = 10
#: Longest beacon session id kept (longer ids are cut; the engine caps context at 4 KiB).
MAX_KEY_CHARS = 64
VIEW_TYPES = frozenset(("item_view", "favorite", "click"))
CART_TYPES = frozenset(("add_to_cart",))
BUY_TYPES = frozenset(("purchase",))
#: Exponential moving average factor of the gap between session starts (the visitor's rhythm).
RETURN_ALPHA = 0.3


@dataclass(frozen=True)
class SessionConfig:
    """How sessions are cut and how much of each one is kept."""

    gap_ms: int = SESSION_GAP_MS
    max_items: int = SESSION_MAX_ITEMS

    def __post_init__(self) -> None:
        if self.gap_ms <= 0:
            raise ValueError("session gap_ms must be > 0")
        if self.max_items < 1:
            raise ValueError("session max_items must be at least 1")


@dataclass(slots=True)
class Session:
    """One visitor's current session. Mutable; `pack()` / `unpack()` give its stored form.

    `seq` counts the visitor's sessions (1 for the first), so `(profile id, seq)` names a session
    everywhere without a stored random id. `return_gap_ms` is carried from session to session: an
    exponential moving average of the time between session starts (0 until a second session).
    """

    seq: int = 0
    key: str = ""  # the beacon's session id, "" when cut by gap
    start_ms: int = 0
    last_ms: int = 0
    events: int = 0
    viewed: list[str] = field(default_factory=list)  # distinct, newest first
    carted: list[str] = field(default_factory=list)  # distinct, newest first
    bought: list[str] = field(default_factory=list)  # distinct, newest first
    return_gap_ms: float = 0.0

    def items(self) -> list[str]:
        """Every distinct item of the session, newest first (viewed, then carted, then bought)."""
        return list(dict.fromkeys([*self.viewed, *self.carted, *self.bought]))

    def age_ms(self, now_ms: int) -> int:
        """How long the session has run at `now_ms`."""
        return max(0, now_ms - self.start_ms)

    def is_open(self, now_ms: int, cfg: SessionConfig) -> bool:
        """Whether an event at `now_ms` without a session id would still belong to it."""
        return self.seq > 0 and now_ms - self.last_ms <= cfg.gap_ms

    def pack(self) -> list[Any]:
        """The compact list a profile blob carries."""
        return [self.seq, self.key, self.start_ms, self.last_ms, self.events, self.viewed,
                self.carted, self.bought, int(self.return_gap_ms)]

    @classmethod
    def unpack(cls, row: Sequence[Any] | None) -> Session:
        """Inverse of `pack` (None or an empty row: no session yet)."""
        if not row:
            return cls()
        seq, key, start, last, events, viewed, carted, bought, gap = row
        return cls(int(seq), str(key), int(start), int(last), int(events), list(viewed),
                   list(carted), list(bought), float(gap))

    def view(self, now_ms: int, cfg: SessionConfig) -> dict[str, Any]:
        """The session as recipes, rules and propensity learners read it."""
        return {
            "seq": self.seq,
            "id": self.key or None,
            "start": self.start_ms,
            "last": self.last_ms,
            "open": self.is_open(now_ms, cfg),
            "events": self.events,
            "age_s": self.age_ms(now_ms) / 1000.0,
            "viewed": list(self.viewed),
            "carted": list(self.carted),
            "bought": list(self.bought),
            "return_gap_s": self.return_gap_ms / 1000.0 or None,
        }


def features(session: Session | None, now_ms: int, cfg: SessionConfig = SessionConfig()
             ) -> dict[str, float]:
    """"This session" as numbers for a propensity learner (exit intent, purchase): plain floats,
    every key always present (a visitor without a session gets zeros)."""
    if session is None or session.seq == 0:
        return dict.fromkeys(FEATURES, 0.0)
    return {
        "session_events": float(session.events),
        "session_age_s": session.age_ms(now_ms) / 1000.0,
        "session_viewed": float(len(session.viewed)),
        "session_carted": float(len(session.carted)),
        "session_bought": float(len(session.bought)),
        "session_open": 1.0 if session.is_open(now_ms, cfg) else 0.0,
        "session_idle_s": max(0, now_ms - session.last_ms) / 1000.0,
        "returning": 1.0 if session.seq > 1 else 0.0,
        "return_gap_h": session.return_gap_ms / 3_600_000.0,
    }


FEATURES = ("session_events", "session_age_s", "session_viewed", "session_carted",
            "session_bought", "session_open", "session_idle_s", "returning", "return_gap_h")


def session_key(event: Mapping[str, Any]) -> str:
    """The beacon's session id of an event (`context.session_id`), or "" if it carries none."""
    ctx = event.get("context")
    if not ctx or not isinstance(ctx, Mapping):
        return ""
    key = ctx.get("session_id")
    if isinstance(key, int) and not isinstance(key, bool):
        key = str(key)
    if not isinstance(key, str):
        return ""
    return key.strip()[:MAX_KEY_CHARS]


def starts_new(session: Session | None, event: Mapping[str, Any], cfg: SessionConfig,
               key: str | None = None) -> bool:
    """Whether `event` opens a new session after `session` (the visitor's current one); `key`:
    the event's `session_key`, if the caller has it already."""
    if session is None or session.seq == 0:
        return True
    if key is None:
        key = session_key(event)
    if key and session.key:
        return key != session.key
    return int(event["ts"]) - session.last_ms > cfg.gap_ms


def _push(lst: list[str], ids: Iterable[str], cap: int) -> None:
    for iid in ids:
        if iid in lst:
            lst.remove(iid)
        lst.insert(0, iid)
    del lst[cap:]


def _event_item_ids(event: Mapping[str, Any]) -> list[str]:
    ids: list[str] = []
    item = event.get("item")
    if isinstance(item, Mapping) and item.get("id"):
        ids.append(str(item["id"]))
    for line in event.get("items") or ():
        if isinstance(line, Mapping) and line.get("id"):
            ids.append(str(line["id"]))
    return list(dict.fromkeys(ids))


def advance(session: Session | None, event: Mapping[str, Any],
            cfg: SessionConfig = SessionConfig()) -> Session:
    """The visitor's session after `event`: `session` updated in place, or a new one (returned).

    Events older than the session's last event (late arrivals) count in the current session.
    """
    ts = int(event["ts"])
    key = session_key(event)
    if starts_new(session, event, cfg, key):
        prev = session if session is not None and session.seq else None
        gap = 0.0
        if prev is not None:
            step = float(max(0, ts - prev.start_ms))
            gap = step if not prev.return_gap_ms else (
                prev.return_gap_ms + RETURN_ALPHA * (step - prev.return_gap_ms))
        session = Session(seq=(prev.seq + 1) if prev else 1, key=key, start_ms=ts, last_ms=ts,
                          return_gap_ms=gap)
    else:
        assert session is not None
        if key and not session.key:
            session.key = key
        session.last_ms = max(session.last_ms, ts)
        session.start_ms = min(session.start_ms, ts)
    session.events += 1
    etype = event.get("type")
    ids = _event_item_ids(event)
    if ids:
        # the event's first item ends up at the front, like the profile's `recent`
        if etype in VIEW_TYPES or etype in CART_TYPES or etype in BUY_TYPES:
            _push(session.viewed, reversed(ids), cfg.max_items)
        if etype in CART_TYPES:
            _push(session.carted, reversed(ids), cfg.max_items)
        elif etype == "remove_from_cart":
            session.carted = [i for i in session.carted if i not in ids]
        elif etype in BUY_TYPES:
            _push(session.bought, reversed(ids), cfg.max_items)
            session.carted = [i for i in session.carted if i not in ids]
    return session


def session_uid(profile_id: str, session: Session) -> str:
    """A name for the session that is the same in every process: `<profile id>#<seq>`."""
    return f"{profile_id}#{session.seq}"


def shared_session_name(profile_id: str, session: Session) -> str:
    """The session's name in tables many visitors share (the served session-kNN state): the
    first 16 hex digits of BLAKE2b of `session_uid`, so the tables carry no visitor id."""
    uid = session_uid(profile_id, session)
    return hashlib.blake2b(uid.encode(), digest_size=8).hexdigest()


class SessionTracker:
    """The current session of up to `max_visitors` visitors (least recently active dropped).

    The in-process twin of the session a profile carries: `learn_one` is `advance` per visitor.
    """

    def __init__(self, gap_ms: int = SESSION_GAP_MS, max_items: int = SESSION_MAX_ITEMS,
                 max_visitors: int = 100_000) -> None:
        self.gap_ms = gap_ms
        self.max_items = max_items
        self.max_visitors = max_visitors
        self.cfg = SessionConfig(gap_ms, max_items)
        self._v: dict[str, Session] = {}

    def learn_one(self, event: Mapping[str, Any]) -> Session:
        """Advance the event's visitor's session; returns it."""
        vid = str(event["visitor_id"])
        session = advance(self._v.pop(vid, None), event, self.cfg)
        self._v[vid] = session
        while len(self._v) > self.max_visitors:
            del self._v[next(iter(self._v))]
        return session

    def get(self, visitor_id: str) -> Session | None:
        """The visitor's current (or last) session, if known."""
        return self._v.get(visitor_id)

    def size(self) -> dict[str, int]:
        """Stored entries, by the cap that bounds them."""
        per = [max(len(s.viewed), len(s.carted), len(s.bought)) for s in self._v.values()]
        return {"max_visitors": len(self._v), "max_items": max(per, default=0)}

    def snapshot(self) -> bytes:
        """Versioned msgpack bytes of the settings and every visitor's session."""
        return msgpack.packb({"kind": KIND, "v": VERSION, "state": {
            "settings": {"gap_ms": self.gap_ms, "max_items": self.max_items,
                         "max_visitors": self.max_visitors},
            "visitors": [[v, s.pack()] for v, s in self._v.items()],
        }}, use_bin_type=True)

    @classmethod
    def restore(cls, data: bytes) -> SessionTracker:
        """A tracker equal to the one that made `data`."""
        doc = msgpack.unpackb(data, raw=False)
        if not isinstance(doc, dict) or doc.get("kind") != KIND:
            raise ValueError(f"not a {KIND} snapshot")
        if doc.get("v") != VERSION:
            raise ValueError(f"{KIND} snapshot version {doc.get('v')} is not supported")
        st = doc["state"]
        model = cls(**st["settings"])
        model._v = {v: Session.unpack(row) for v, row in st["visitors"]}
        return model


def split_sessions(events: Iterable[Mapping[str, Any]],
                   cfg: SessionConfig = SessionConfig()) -> Iterator[tuple[str, int]]:
    """For each event (in the order given, which should be time order), (visitor, session seq)."""
    current: dict[str, Session] = {}
    for event in events:
        vid = str(event["visitor_id"])
        session = advance(current.get(vid), event, cfg)
        current[vid] = session
        yield vid, session.seq
