"""The reward join: each logged decision meets its reactions within a window, exactly once.

A pure state machine in the style of Bytewax's stateful operators: inputs are plain records,
time comes from an injected clock, outputs are returned, and `snapshot()` is an immutable copy
of the whole state (`JoinState`, with `to_bytes` / `from_bytes` for a store).

* `decision(d)` opens a window of `window` from the decision's time (or from its activation,
  for a decision logged with `active=False`: deferred activation, as Personalizer's).
* `reaction(r)` credits every open decision it belongs to: by `decision_id` (click, explicit
  reward, activation), or by visitor for a goal event (a decision logged with `goal="purchase"`
  is credited by that visitor's next `purchase` within its window). A reaction is applied at
  most once per decision, by its `event_id`, however often it is delivered; one that arrives
  before its decision waits (for at most `window`) and is applied when the decision comes.
* `advance()` closes every window whose end is at or before the clock's time and returns one
  `Reward` per closed decision: the aggregate of its reactions (`max` by default, or `sum`
  clipped to 1, or `first`), or `default_reward` when none came. A decision never activated
  within `window` is dropped (it was not shown), never rewarded.
* A decision delivered again after its window closed is ignored for `window` after the close
  (at-least-once delivery redelivers only what was not yet committed, so that is plenty).
* A reaction's time is checked against the window: one stamped after the window's end is late
  and ignored, even if it is processed before `advance()` runs.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

import msgpack

KIND = "rewards.join"
VERSION = 1
ACTIVATE = "activate"
REWARD = "reward"
DEFAULT_VALUES: Mapping[str, float] = MappingProxyType({"click": 1.0, "conversion": 1.0})


def _aware(ts: datetime, name: str) -> datetime:
    if not isinstance(ts, datetime) or ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"{name} must be a datetime with a time zone")
    return ts


@dataclass(frozen=True, slots=True)
class LoggedDecision:
    """A decision as logged: what was shown, with which probability, when, to whom."""

    decision_id: str
    campaign: str
    arm: str
    probability: float
    ts: datetime
    slot: int = 0
    visitor_id: str | None = None
    goal: str | None = None
    active: bool = True
    context: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.decision_id:
            raise ValueError("decision_id is required")
        if not 0.0 < self.probability <= 1.0:
            raise ValueError("probability must be in (0, 1]")
        _aware(self.ts, "ts")
        if self.context is not None:
            object.__setattr__(self, "context", MappingProxyType(dict(self.context)))

    @property
    def key(self) -> tuple[str, int]:
        return (self.decision_id, self.slot)


@dataclass(frozen=True, slots=True)
class Reaction:
    """Something that happened after a decision: a click, a goal event, an explicit reward."""

    event_id: str
    type: str
    ts: datetime
    decision_id: str | None = None
    slot: int | None = None
    visitor_id: str | None = None
    value: float | None = None

    def __post_init__(self) -> None:
        if not self.event_id:
            raise ValueError("event_id is required")
        _aware(self.ts, "ts")
        if self.value is not None and not 0.0 <= self.value <= 1.0:
            raise ValueError("value must be in [0, 1]")


@dataclass(frozen=True, slots=True)
class Reward:
    """A closed window: the decision, its reward and the reactions that made it."""

    decision: LoggedDecision
    reward: float
    reactions: tuple[str, ...]
    closed_at: datetime
    defaulted: bool


@dataclass(frozen=True, slots=True)
class _Open:
    decision: LoggedDecision
    end: datetime  # window end; for an inactive decision, the activation deadline
    active: bool
    credits: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class JoinState:
    """Immutable state of a `RewardJoin`: what `snapshot()` returns and `RewardJoin` resumes."""

    open: tuple[_Open, ...] = ()
    waiting: tuple[Reaction, ...] = ()
    closed: tuple[tuple[tuple[str, int], datetime], ...] = ()
    counters: tuple[tuple[str, int], ...] = ()

    def to_bytes(self) -> bytes:
        """Versioned msgpack bytes (times as ISO 8601 with their offset)."""
        return msgpack.packb(
            {
                "kind": KIND,
                "v": VERSION,
                "open": [
                    [_dec(o.decision), o.end.isoformat(), o.active, [list(c) for c in o.credits]]
                    for o in self.open
                ],
                "waiting": [_react(r) for r in self.waiting],
                "closed": [[k[0], k[1], t.isoformat()] for k, t in self.closed],
                "counters": [list(c) for c in self.counters],
            },
            use_bin_type=True,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> JoinState:
        """Inverse of `to_bytes`; ValueError for another kind or version."""
        doc = msgpack.unpackb(data, raw=False)
        if not isinstance(doc, dict) or doc.get("kind") != KIND:
            raise ValueError("not a reward-join snapshot")
        if doc.get("v") != VERSION:
            raise ValueError(f"reward-join snapshot version {doc.get('v')} is not supported")
        return cls(
            open=tuple(
                _Open(
                    _undec(d), datetime.fromisoformat(end), active, tuple((c[0], c[1]) for c in cr)
                )
                for d, end, active, cr in doc["open"]
            ),
            waiting=tuple(_unreact(r) for r in doc["waiting"]),
            closed=tuple(((k0, k1), datetime.fromisoformat(t)) for k0, k1, t in doc["closed"]),
            counters=tuple((k, v) for k, v in doc["counters"]),
        )


def _dec(d: LoggedDecision) -> list[Any]:
    return [
        d.decision_id,
        d.campaign,
        d.arm,
        d.probability,
        d.ts.isoformat(),
        d.slot,
        d.visitor_id,
        d.goal,
        d.active,
        dict(d.context) if d.context is not None else None,
    ]


def _undec(x: list[Any]) -> LoggedDecision:
    return LoggedDecision(
        x[0], x[1], x[2], x[3], datetime.fromisoformat(x[4]), x[5], x[6], x[7], x[8], x[9]
    )


def _react(r: Reaction) -> list[Any]:
    return [r.event_id, r.type, r.ts.isoformat(), r.decision_id, r.slot, r.visitor_id, r.value]


def _unreact(x: list[Any]) -> Reaction:
    return Reaction(x[0], x[1], datetime.fromisoformat(x[2]), x[3], x[4], x[5], x[6])


@dataclass
class RewardJoin:
    """Join decisions and reactions within `window`; see the module docstring.

    Parameters
    ----------
    clock
        Returns the current time (a datetime with a time zone); `advance` closes windows by it.
    window
        How long after a decision (or its activation) reactions count.
    default_reward
        The reward of a decision whose window closed with no reaction.
    values
        Reward value per reaction type (a `reward` reaction carries its own `value`; a goal
        event is worth `values.get(type, 1.0)`). Types not listed and not a goal are ignored.
    aggregate
        `max`, `sum` (clipped to 1) or `first` (by reaction time).
    max_waiting
        At most this many reactions wait for a decision not yet seen (oldest dropped first).
    """

    clock: Callable[[], datetime]
    window: timedelta = timedelta(minutes=30)
    default_reward: float = 0.0
    values: Mapping[str, float] = field(default_factory=lambda: DEFAULT_VALUES)
    aggregate: str = "max"
    max_waiting: int = 100_000
    state: JoinState | None = None

    def __post_init__(self) -> None:
        if self.window <= timedelta(0):
            raise ValueError("window must be positive")
        if not 0.0 <= self.default_reward <= 1.0:
            raise ValueError("default_reward must be in [0, 1]")
        if self.aggregate not in ("max", "sum", "first"):
            raise ValueError("aggregate must be max, sum or first")
        st = self.state or JoinState()
        self.state = None
        self._open: dict[tuple[str, int], _Open] = {o.decision.key: o for o in st.open}
        self._waiting: dict[str, dict[str, Reaction]] = {}
        self._n_waiting = 0
        for r in st.waiting:
            self._wait(r)
        self._closed: dict[tuple[str, int], datetime] = dict(st.closed)
        self.counters: dict[str, int] = dict(st.counters)
        self._heap = [(o.end, o.decision.key) for o in self._open.values()]
        heapq.heapify(self._heap)
        self._by_visitor: dict[str, set[tuple[str, int]]] = {}
        self._by_decision: dict[str, set[tuple[str, int]]] = {}
        for key, o in self._open.items():
            self._index(key, o.decision)

    # -- inputs ----------------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def _index(self, key: tuple[str, int], d: LoggedDecision) -> None:
        self._by_decision.setdefault(d.decision_id, set()).add(key)
        if d.goal and d.visitor_id:
            self._by_visitor.setdefault(d.visitor_id, set()).add(key)

    def _unindex(self, key: tuple[str, int], d: LoggedDecision) -> None:
        for index, name in ((self._by_decision, d.decision_id), (self._by_visitor, d.visitor_id)):
            if name is None or name not in index:
                continue
            index[name].discard(key)
            if not index[name]:
                del index[name]

    def decision(self, d: LoggedDecision) -> None:
        """Open the window of a logged decision (a repeated delivery changes nothing)."""
        key = d.key
        if key in self._open or key in self._closed:
            self._count("duplicate_decisions")
            return
        self._count("decisions")
        o = _Open(d, d.ts + self.window, d.active)
        self._open[key] = o
        heapq.heappush(self._heap, (o.end, key))
        self._index(key, d)
        for r in list(self._waiting.get(d.decision_id, {}).values()):
            self._apply(key, r)

    def reaction(self, r: Reaction) -> None:
        """Credit the open decisions this reaction belongs to (once per event id)."""
        keys: set[tuple[str, int]] = set()
        if r.decision_id is not None:
            keys = {
                k
                for k in self._by_decision.get(r.decision_id, ())
                if r.slot is None or k[1] == r.slot
            }
            if not keys:
                if any(k[0] == r.decision_id for k in self._closed):
                    self._count("late_reactions")
                else:
                    self._wait(r)
                return
        elif r.visitor_id is not None:
            keys = {
                k
                for k in self._by_visitor.get(r.visitor_id, ())
                if self._open[k].decision.goal == r.type
            }
        for key in sorted(keys):
            self._apply(key, r)

    def _wait(self, r: Reaction) -> None:
        box = self._waiting.setdefault(r.decision_id or "", {})
        if r.event_id in box:
            return
        box[r.event_id] = r
        self._n_waiting += 1
        while self._n_waiting > self.max_waiting:
            oldest = min(
                (x for b in self._waiting.values() for x in b.values()), key=lambda x: x.ts
            )
            self._drop_waiting(oldest)
            self._count("waiting_dropped")

    def _drop_waiting(self, r: Reaction) -> None:
        box = self._waiting.get(r.decision_id or "")
        if box and box.pop(r.event_id, None) is not None:
            self._n_waiting -= 1
            if not box:
                del self._waiting[r.decision_id or ""]

    def _value(self, o: _Open, r: Reaction) -> float | None:
        if r.type == REWARD:
            return r.value
        if o.decision.goal and r.type == o.decision.goal:
            return self.values.get(r.type, 1.0)
        return self.values.get(r.type)

    def _apply(self, key: tuple[str, int], r: Reaction) -> None:
        o = self._open[key]
        if any(eid == r.event_id for eid, _ in o.credits):
            self._count("duplicate_reactions")
            return
        if r.ts < o.decision.ts:
            self._count("early_reactions")
            return
        if r.ts > o.end:
            self._count("late_reactions")
            return
        if r.type == ACTIVATE:
            if not o.active:
                o = replace(
                    o, active=True, end=r.ts + self.window, credits=(*o.credits, (r.event_id, -1.0))
                )
                self._open[key] = o
                heapq.heappush(self._heap, (o.end, key))
                self._count("activations")
            return
        value = self._value(o, r)
        if value is None:
            self._count("ignored_reactions")
            return
        self._open[key] = replace(o, credits=(*o.credits, (r.event_id, float(value))))
        self._count("reactions")

    # -- time ------------------------------------------------------------------------------

    def advance(self) -> list[Reward]:
        """Close every window that ended by the clock's time; one `Reward` per decision shown."""
        now = _aware(self.clock(), "clock()")
        out: list[Reward] = []
        while self._heap and self._heap[0][0] <= now:
            end, key = heapq.heappop(self._heap)
            o = self._open.get(key)
            if o is None or o.end != end:
                continue  # superseded entry (activation moved the end)
            del self._open[key]
            self._unindex(key, o.decision)
            self._closed[key] = now
            if not o.active:
                self._count("never_activated")
                continue
            out.append(self._reward(o, now))
        horizon = now - self.window
        for key in [k for k, t in self._closed.items() if t < horizon]:
            del self._closed[key]
        for r in [x for b in self._waiting.values() for x in b.values() if x.ts < horizon]:
            self._drop_waiting(r)
        return out

    def _reward(self, o: _Open, now: datetime) -> Reward:
        credits = [(eid, v) for eid, v in o.credits if v >= 0.0]
        ids = tuple(eid for eid, _ in credits)
        if not credits:
            self._count("defaulted")
            return Reward(o.decision, self.default_reward, (), now, True)
        values = [v for _, v in credits]
        if self.aggregate == "max":
            value = max(values)
        elif self.aggregate == "sum":
            value = min(1.0, sum(values))
        else:
            value = values[0]
        self._count("rewarded")
        return Reward(o.decision, value, ids, now, False)

    # -- state -----------------------------------------------------------------------------

    def snapshot(self) -> JoinState:
        """An immutable copy of the whole state."""
        return JoinState(
            open=tuple(self._open[k] for k in sorted(self._open)),
            waiting=tuple(
                sorted(
                    (r for b in self._waiting.values() for r in b.values()),
                    key=lambda r: (r.ts, r.event_id),
                )
            ),
            closed=tuple(sorted(self._closed.items())),
            counters=tuple(sorted(self.counters.items())),
        )

    @property
    def open_decisions(self) -> int:
        return len(self._open)

    @property
    def waiting_reactions(self) -> int:
        return self._n_waiting


def run(join: RewardJoin, items: Iterable[LoggedDecision | Reaction]) -> list[Reward]:
    """Feed records in order, calling `advance()` after each: handy for replays and tests."""
    out: list[Reward] = []
    for item in items:
        if isinstance(item, LoggedDecision):
            join.decision(item)
        else:
            join.reaction(item)
        out.extend(join.advance())
    return out
