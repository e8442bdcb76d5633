"""Session-based k-nearest neighbours (SKNN, V-SKNN, STAN), learnt online with bounded memory.

"Visitors whose sessions looked like this one went on to ...": the current session is compared
with recent past sessions that share an item with it, the `k` most similar are kept, and their
items are scored by how similar their session was (Ludewig & Jannach, "Evaluation of
session-based recommendation algorithms", 2018; Garg, Gupta, Jain, Sikka, Patel, "Sequence and
Time Aware Neighborhood for Session-based Recommendations: STAN", SIGIR 2019). With the weights
of STAN, for the current session `s` (distinct items, oldest first, `|s|` of them) at `now`:

- an item at position `p` of `s` (1 = oldest) weighs `w1 = exp((p - |s|) / lambda_pos)`, so the
  latest item weighs 1 (`lambda_pos = 0`: every item weighs 1, plain SKNN);
- a past session `n` that ended at `t_n` is similar by
  `sim(s, n) = sum over shared items of w1 / sqrt(|s| * |n|) * exp(-(now - t_n) / lambda_time)`
  (`lambda_time_s = 0`: no time decay);
- an item `j` of a neighbour scores `sim(s, n) * exp(-|pos_n(j) - pos_n(a)| / lambda_neigh)`,
  where `a` is the latest item of `s` that `n` holds (`lambda_neigh = 0`: every item of the
  neighbour counts fully), summed over the `k` most similar neighbours.

Candidates are sampled as those papers do: the `sample_size` most recent sessions that hold one
of the current session's items (`sampling="random"`: a random sample of them, drawn from a seed
and the session's items, so a query is a pure function of the state). Memory: sessions keep their
last `max_session_items` distinct items (an item seen again moves to the end), an item's index
keeps its `sessions_per_item` most recent sessions, and at most `max_sessions` sessions and
`max_items` indexed items are kept (least recently active dropped).

Sessions are cut as `models.session` cuts them (the event's session id, else a 30-minute gap);
a session's name is `<visitor>#<seq>`. A visitor's own earlier sessions are neighbours like
anyone's (a returning visitor's past sessions are often the most similar), but the current
session never is its own neighbour. `score_sessions` is the scoring on plain data, so a reader
of the same state kept elsewhere (Redis) ranks exactly like the in-process learner.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from models.reco.base import Candidate, Event, event_items, pack, top_n, unpack
from models.reco.cooccurrence import CO_VIEW_TYPES
from models.session import SESSION_GAP_MS, Session, SessionConfig, session_key, starts_new

KIND = "kairos.reco.sessionknn"
VERSION = 1
SAMPLINGS = ("recent", "random")


class PastSession(NamedTuple):
    """A neighbour candidate: its name, when it was last active, its items (oldest first)."""

    uid: str
    last_ms: int
    items: Sequence[str]


def score_sessions(
    current: Sequence[str],
    neighbours: Iterable[PastSession],
    now_ms: int,
    k: int = 100,
    lambda_pos: float = 2.0,
    lambda_time_s: float = 0.0,
    lambda_neigh: float = 2.0,
    n: int = 50,
    exclude: Iterable[str] = (),
) -> list[Candidate]:
    """STAN scores of the items of the `k` most similar `neighbours` for the session `current`
    (distinct items, oldest first). Each result comes `via` the item of `current` that linked
    its strongest neighbour. Pure: the in-process learner and an online reader both call it."""
    size = len(current)
    if not size:
        return []
    pos = {iid: p for p, iid in enumerate(current, start=1)}
    w1 = {iid: (math.exp((p - size) / lambda_pos) if lambda_pos > 0 else 1.0)
          for iid, p in pos.items()}
    scored: list[tuple[float, int, PastSession, int]] = []
    for order, past in enumerate(neighbours):
        items = past.items
        if not items:
            continue
        shared = 0.0
        anchor = -1  # index in `items` of the latest current item that `past` holds
        best_pos = 0
        for idx, iid in enumerate(items):
            p = pos.get(iid)
            if p is not None:
                shared += w1[iid]
                if p > best_pos:
                    best_pos, anchor = p, idx
        if anchor < 0:
            continue
        sim = shared / math.sqrt(size * len(items))
        if lambda_time_s > 0:
            sim *= math.exp(-max(0.0, now_ms - past.last_ms) / (lambda_time_s * 1000.0))
        if sim > 0:
            scored.append((sim, order, past, anchor))
    scored.sort(key=lambda row: (-row[0], row[1]))
    scores: dict[str, float] = {}
    best: dict[str, tuple[float, str]] = {}
    for sim, _, past, anchor in scored[:k]:
        via = past.items[anchor]
        for idx, iid in enumerate(past.items):
            w = sim
            if lambda_neigh > 0:
                w *= math.exp(-abs(idx - anchor) / lambda_neigh)
            if w <= 0:
                continue
            scores[iid] = scores.get(iid, 0.0) + w
            if w > best.get(iid, (0.0, ""))[0]:
                best[iid] = (w, via)
    return [Candidate(i, s, best[i][1]) for i, s in top_n(scores, n, exclude)]


class SessionKNN:
    """Online session-kNN (see the module docstring for the weights and the memory bounds)."""

    def __init__(
        self,
        k: int = 100,
        sample_size: int = 200,
        lambda_pos: float = 2.0,
        lambda_time_s: float = 0.0,
        lambda_neigh: float = 2.0,
        sampling: str = "recent",
        event_types: Iterable[str] = CO_VIEW_TYPES,
        gap_ms: int = SESSION_GAP_MS,
        max_session_items: int = 20,
        sessions_per_item: int = 50,
        max_sessions: int = 50_000,
        max_items: int = 50_000,
        max_visitors: int = 100_000,
        seed: int = 0,
    ) -> None:
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}")
        self.k = k
        self.sample_size = sample_size
        self.lambda_pos = lambda_pos
        self.lambda_time_s = lambda_time_s
        self.lambda_neigh = lambda_neigh
        self.sampling = sampling
        self.event_types = tuple(event_types)
        self.gap_ms = gap_ms
        self.max_session_items = max_session_items
        self.sessions_per_item = sessions_per_item
        self.max_sessions = max_sessions
        self.max_items = max_items
        self.max_visitors = max_visitors
        self.seed = seed
        self._types = frozenset(self.event_types)
        self._cfg = SessionConfig(gap_ms, 1)
        # visitor -> their current session (only its bookkeeping: seq, key, times)
        self._visitors: dict[str, Session] = {}
        # session uid -> [last ms, items oldest first]
        self._sessions: dict[str, list[Any]] = {}
        # item -> {session uid: None}, oldest first
        self._index: dict[str, dict[str, None]] = {}

    # ------------------------------------------------------------------ learning
    def learn_one(self, event: Event) -> str | None:
        """Add the event's items to its visitor's session; returns the session's uid (None for
        an event type that does not count)."""
        if event.get("type") not in self._types:
            return None
        ids = [str(it["id"]) for it in event_items(event)]
        if not ids:
            return None
        vid = str(event["visitor_id"])
        ts = int(event["ts"])
        session = self._visitors.pop(vid, None)
        key = session_key(event)
        if session is None or starts_new(session, event, self._cfg, key):
            session = Session(seq=session.seq + 1 if session else 1, key=key, start_ms=ts,
                              last_ms=ts)
        else:
            if not session.key:
                session.key = key
            if ts > session.last_ms:
                session.last_ms = ts
        self._visitors[vid] = session
        uid = f"{vid}#{session.seq}"
        self.add(uid, ids, ts)
        while len(self._visitors) > self.max_visitors:
            del self._visitors[next(iter(self._visitors))]
        return uid

    def add(self, uid: str, ids: Sequence[str], ts: int) -> None:
        """Append `ids` to session `uid` at `ts` and index it (what `learn_one` does once it
        knows the session; the online hook does the same with the profile's session)."""
        row = self._sessions.pop(uid, None) or [ts, []]
        self._sessions[uid] = row
        row[0] = max(row[0], ts)
        items: list[str] = row[1]
        for iid in ids:
            if iid in items:
                items.remove(iid)
            items.append(iid)
            sessions = self._index.pop(iid, None) or {}
            self._index[iid] = sessions
            sessions.pop(uid, None)
            sessions[uid] = None
            while len(sessions) > self.sessions_per_item:
                del sessions[next(iter(sessions))]
        if len(items) > self.max_session_items:
            del items[: len(items) - self.max_session_items]
        while len(self._sessions) > self.max_sessions:
            del self._sessions[next(iter(self._sessions))]
        while len(self._index) > self.max_items:
            del self._index[next(iter(self._index))]

    # ------------------------------------------------------------------ reading
    def current(self, visitor_id: str, now_ms: int | None = None) -> tuple[str | None, list[str]]:
        """The visitor's current session: (uid, items oldest first); (None, []) if it has ended
        by `now_ms` (or is unknown)."""
        session = self._visitors.get(visitor_id)
        if session is None:
            return None, []
        if now_ms is not None and now_ms - session.last_ms > self.gap_ms:
            return None, []
        uid = f"{visitor_id}#{session.seq}"
        row = self._sessions.get(uid)
        return uid, list(row[1]) if row else []

    def neighbours_of(self, items: Sequence[str], exclude_uid: str | None = None
                      ) -> list[PastSession]:
        """The sampled candidate sessions for a session holding `items`: the `sample_size` most
        recent (or a seeded random sample) of the indexed sessions that hold one of them."""
        seen: dict[str, int] = {}
        for iid in items:
            for uid in self._index.get(iid, ()):
                if uid == exclude_uid or uid in seen:
                    continue
                row = self._sessions.get(uid)
                if row is not None:
                    seen[uid] = row[0]
        uids = sorted(seen, key=lambda u: (-seen[u], u))
        if len(uids) > self.sample_size:
            if self.sampling == "random":
                key = zlib.crc32("\x1f".join(items).encode()) ^ (self.seed & 0xFFFFFFFF)
                uids = sorted(random.Random(key).sample(uids, self.sample_size),
                              key=lambda u: (-seen[u], u))
            else:
                uids = uids[: self.sample_size]
        return [PastSession(u, seen[u], tuple(self._sessions[u][1])) for u in uids]

    def similar(self, items: Sequence[str], now_ms: int, n: int = 50,
                exclude: Iterable[str] = (), exclude_uid: str | None = None) -> list[Candidate]:
        """Scores for a session holding `items` (oldest first) at `now_ms`."""
        items = list(dict.fromkeys(items))[-self.max_session_items:]
        return score_sessions(items, self.neighbours_of(items, exclude_uid), now_ms, self.k,
                              self.lambda_pos, self.lambda_time_s, self.lambda_neigh, n, exclude)

    def recommend(self, visitor_id: str, now_ms: int, n: int = 50, exclude: Iterable[str] = (),
                  item_id: str | None = None) -> list[Candidate]:
        """Items for the visitor's current session (plus the page's item, if any, as its
        latest)."""
        uid, items = self.current(visitor_id, now_ms)
        if item_id:
            items = [i for i in items if i != item_id] + [item_id]
        return self.similar(items, now_ms, n, exclude, uid)

    # ------------------------------------------------------------------ persistence
    def size(self) -> dict[str, int]:
        """Stored entries, by the cap that bounds them."""
        return {
            "max_sessions": len(self._sessions),
            "max_items": len(self._index),
            "max_visitors": len(self._visitors),
            "sessions_per_item": max((len(s) for s in self._index.values()), default=0),
            "max_session_items": max((len(r[1]) for r in self._sessions.values()), default=0),
        }

    def snapshot(self) -> bytes:
        """Versioned msgpack bytes of the settings and state."""
        return pack(KIND, VERSION, {
            "settings": self._settings(),
            "visitors": [[v, s.pack()] for v, s in self._visitors.items()],
            "sessions": [[u, r[0], r[1]] for u, r in self._sessions.items()],
            "index": [[i, list(s)] for i, s in self._index.items()],
        })

    @classmethod
    def restore(cls, data: bytes) -> SessionKNN:
        """A learner equal to the one that made `data`."""
        st = unpack(data, KIND, VERSION)
        model = cls(**st["settings"])
        model._visitors = {v: Session.unpack(s) for v, s in st["visitors"]}
        model._sessions = {u: [int(t), list(items)] for u, t, items in st["sessions"]}
        model._index = {i: dict.fromkeys(s) for i, s in st["index"]}
        return model

    def _settings(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "sample_size": self.sample_size,
            "lambda_pos": self.lambda_pos,
            "lambda_time_s": self.lambda_time_s,
            "lambda_neigh": self.lambda_neigh,
            "sampling": self.sampling,
            "event_types": list(self.event_types),
            "gap_ms": self.gap_ms,
            "max_session_items": self.max_session_items,
            "sessions_per_item": self.sessions_per_item,
            "max_sessions": self.max_sessions,
            "max_items": self.max_items,
            "max_visitors": self.max_visitors,
            "seed": self.seed,
        }


def session_items(session: Mapping[str, Any] | Session) -> list[str]:
    """A profile's session (`models.session.Session` or its `view()`) as `score_sessions` wants
    it: its distinct items, oldest first."""
    viewed = session.viewed if isinstance(session, Session) else session.get("viewed", [])
    return list(reversed(list(viewed)))
