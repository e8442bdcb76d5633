"""Purchase and exit propensity per event, in prequential order, for a stream of sessions. Pure.

`SessionPropensity` keeps each visitor's current session (its events, bounded) and two
`PropensityModel`s. For every event of a visitor (in their order, as one partition delivers
them) it first *predicts*: the features of the session so far (`session_features`) scored by
both models, which is what the profile shows and the rules target. It *learns* each prediction
later, as soon as its label is known:

* exit: the previous event's features are an example of "did not leave" when the next event of
  the session arrives; the last event's are an example of "left" when the session times out
  (no event for `gap_ms`);
* purchase: every example of the session so far is "bought" at its first purchase; the session's
  examples are "did not buy" when it times out without one. Events after a purchase are not
  examples of the purchase question (its score is 1 from then on).

So every score is made before its label exists (prequential), and every example is learnt
once. `advance(now_ms)` closes timed-out sessions; `snapshot()` / `restore()` are versioned
bytes of the models and the open sessions.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from models.propensity.features import session_features
from models.propensity.model import PropensityModel

KIND = "propensity.sessions"
VERSION = 1


@dataclass
class _Session:
    events: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)  # purchase examples to label
    last_x: dict[str, Any] | None = None  # the latest event's features (exit example)
    last_ts: int = 0
    purchased: bool = False


_KEEP = ("type", "ts", "item", "context", "channel")


class SessionPropensity:
    """See the module docstring.

    Parameters
    ----------
    gap_ms
        A session ends after this long without an event.
    max_visitors
        Open sessions kept (the least recently active is closed first).
    max_events
        Events kept per session (the oldest are dropped from the features).
    """

    def __init__(self, gap_ms: int = 30 * 60 * 1000, max_visitors: int = 20_000,
                 max_events: int = 50, purchase: PropensityModel | None = None,
                 exit: PropensityModel | None = None) -> None:
        self.gap_ms = gap_ms
        self.max_visitors = max_visitors
        self.max_events = max_events
        self.purchase = purchase or PropensityModel()
        self.exit = exit or PropensityModel()
        self.sessions: OrderedDict[str, _Session] = OrderedDict()
        self.learnt = 0

    def event(self, ev: Mapping[str, Any]) -> tuple[str, float, float] | None:
        """Predict for this event (then learn what its arrival labels); (visitor, purchase
        probability, exit probability), or None for an event that is not a visitor's."""
        vid = ev.get("visitor_id")
        ts = ev.get("ts")
        if not isinstance(vid, str) or isinstance(ts, bool) or not isinstance(ts, int):
            return None
        s = self.sessions.get(vid)
        if s is not None and ts - s.last_ts > self.gap_ms:
            self._close(vid)
            s = None
        if s is None:
            s = self.sessions[vid] = _Session()
            while len(self.sessions) > self.max_visitors:
                self._close(next(iter(self.sessions)))
        else:
            self.sessions.move_to_end(vid)
            if s.last_x is not None:
                self.exit.learn_one(s.last_x, False)
                self.learnt += 1
        s.events.append({k: ev[k] for k in _KEEP if k in ev})
        del s.events[:-self.max_events]
        s.last_ts = max(s.last_ts, ts)
        if ev.get("type") == "purchase" and not s.purchased:
            for x in s.pending:
                self.purchase.learn_one(x, True)
                self.learnt += 1
            s.pending.clear()
            s.purchased = True
        x = session_features(s.events, ts)
        s.last_x = x
        p_exit = self.exit.predict_one(x)
        if s.purchased:
            return vid, 1.0, p_exit
        s.pending.append(x)
        del s.pending[:-self.max_events]
        return vid, self.purchase.predict_one(x), p_exit

    def _close(self, vid: str) -> None:
        s = self.sessions.pop(vid)
        if s.last_x is not None:
            self.exit.learn_one(s.last_x, True)
            self.learnt += 1
        for x in s.pending:
            self.purchase.learn_one(x, False)
            self.learnt += 1

    def advance(self, now_ms: int) -> int:
        """Close the sessions idle for longer than `gap_ms`; how many closed."""
        done = [v for v, s in self.sessions.items() if now_ms - s.last_ts > self.gap_ms]
        for v in done:
            self._close(v)
        return len(done)

    @property
    def drift_detections(self) -> dict[str, int]:
        return {"purchase": self.purchase.detections, "exit": self.exit.detections}

    def snapshot(self) -> bytes:
        return msgpack.packb({
            "kind": KIND, "v": VERSION, "gap_ms": self.gap_ms,
            "max_visitors": self.max_visitors, "max_events": self.max_events,
            "purchase": self.purchase.snapshot(), "exit": self.exit.snapshot(),
            "learnt": self.learnt,
            "sessions": [[v, s.events, s.pending, s.last_x, s.last_ts, s.purchased]
                         for v, s in self.sessions.items()],
        }, use_bin_type=True)

    @classmethod
    def restore(cls, data: bytes) -> SessionPropensity:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if not isinstance(doc, dict) or doc.get("kind") != KIND or doc.get("v") != VERSION:
            raise ValueError("not a session-propensity snapshot of this version")
        obj = cls(doc["gap_ms"], doc["max_visitors"], doc["max_events"],
                  PropensityModel.restore(doc["purchase"]), PropensityModel.restore(doc["exit"]))
        obj.learnt = doc["learnt"]
        for v, events, pending, last_x, last_ts, purchased in doc["sessions"]:
            obj.sessions[v] = _Session(events, pending, last_x, last_ts, purchased)
        return obj
