"""The learner's state machine: logged decisions and reactions in, bandit updates out. Pure.

`OfferLearner` owns the model of every learning campaign (`policy: thompson | epsilon_greedy |
contextual`) and one `models.rewards.join.RewardJoin`:

* `decision(record)` takes a decision record from the `decisions` topic (what
  engine/logic/decisions/state.py `decision_record` writes) of a learning campaign's variant;
  the control group and fixed-split campaigns are not learnt; a contextual campaign's record
  carries the features it decided on (`props.features`) and a multi-slot one its `props.slot`,
  which ride with the decision through the join and are what the model learns the reward on;
* `event(record)` takes an event from the `events` topic: a `click` or `conversion` carrying a
  decision id of a learning campaign, an explicit `reward` (with `props.value` in [0, 1]), or
  any event whose type is a learning campaign's goal (credited to that visitor's open decisions);
* `advance()` closes the windows that ended (the injected clock), and each closed decision's
  reward (or the default reward) updates its campaign's model once;
* `snapshot()` is the whole state as versioned bytes — the join, every model, the consumer
  offsets given to `seen(...)` and the counters — so a restarted learner resumes exactly where
  the bytes were taken: what it reads again after them it had not yet counted.

Times on the wire are epoch milliseconds; inside, datetimes in UTC.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack

from engine.logic.decisions.config import Config, PolicySpec
from engine.logic.decisions.policy import Bandit, new_model, restore_model
from engine.logic.decisions.state import DECISION_TYPE, parse_decision_id
from engine.logic.rank import ACTIVATE_TYPE, RANK_MODEL, RANK_TYPE, REWARD_TYPE
from models.bandit.apprentice import Apprentice
from models.propensity.online import SessionPropensity
from models.rewards.join import REWARD, JoinState, LoggedDecision, Reaction, RewardJoin

KIND = "learner.offers"
VERSION = 1
REACTION_TYPES = frozenset({"click", "conversion", REWARD})


def _ts(ms: Any) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000.0, UTC)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


@dataclass
class OfferLearner:
    """See the module docstring. `clock` returns an aware datetime (the join closes by it)."""

    clock: Callable[[], datetime]
    window: timedelta = timedelta(minutes=30)
    default_reward: float = 0.0
    models: dict[str, Bandit] = field(default_factory=dict)
    specs: dict[str, PolicySpec] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> next offset
    join_state: JoinState | None = None
    rank_model: Any = None  # the Rank/Reward API's model (engine/logic/rank.py)
    rank_slots: dict[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)
    propensity: SessionPropensity | None = None  # purchase and exit, per event

    def __post_init__(self) -> None:
        self.join = RewardJoin(self.clock, self.window, self.default_reward,
                               state=self.join_state)
        self.join_state = None
        self.active: set[str] = set()  # the learning campaigns of the configuration
        self.goals: dict[str, str] = {}  # campaign -> goal event type
        self.goal_types: frozenset[str] = frozenset()
        self.changed: set[str] = set(self.models)  # published at the next commit
        self.rows: dict[str, list[dict[str, Any]]] = {}  # joined rows since the last snapshot
        self.scores: dict[str, tuple[float, float, int]] = {}  # visitor -> (buy, exit, ts)

    # -- configuration ---------------------------------------------------------------------

    def configure(self, config: Config) -> None:
        """Follow the campaigns: a new learning campaign gets a fresh model, one whose policy
        changed starts again, one no longer learning keeps its model (and is not fed)."""
        goals: dict[str, str] = {}
        for cid, c in config.campaigns.items():
            if not c.learns:
                continue
            if cid not in self.models or self.specs.get(cid) != c.policy:
                self.models[cid] = new_model(c.policy)
                self.specs[cid] = c.policy
                self.changed.add(cid)
            if c.goal is not None:
                goals[cid] = c.goal.event
        self.active = {cid for cid, c in config.campaigns.items() if c.learns}
        self.goals = goals
        self.goal_types = frozenset(goals.values())

    # -- inputs ----------------------------------------------------------------------------

    def seen(self, topic: str, partition: int, offset: int) -> None:
        """The record at `offset` was taken in: resume after it."""
        self.offsets[f"{topic}:{partition}"] = offset + 1

    def decision(self, rec: Mapping[str, Any]) -> bool:
        """A decision record; True when it opened a window (a learning campaign's variant)."""
        if rec.get("type") != DECISION_TYPE:
            return False
        props = rec.get("props") or {}
        cid = props.get("campaign")
        if cid not in self.active or props.get("control") or not props.get("variant"):
            return False
        try:
            features, slot = props.get("features"), props.get("slot")
            context = None
            if isinstance(features, dict) or isinstance(slot, int):
                context = {"features": features if isinstance(features, dict) else None,
                           "slot": slot if isinstance(slot, int) else None}
            d = LoggedDecision(
                decision_id=str(rec.get("decision_id") or rec["event_id"]),
                campaign=str(cid), arm=str(props["variant"]),
                probability=float(props["probability"]), ts=_ts(rec["ts"]),
                visitor_id=rec.get("visitor_id"), goal=self.goals.get(cid),
                context=context,
            )
        except (KeyError, TypeError, ValueError):
            return False
        self.join.decision(d)
        return True

    def event(self, ev: Mapping[str, Any]) -> bool:
        """An event of the `events` topic: scored (then learnt) by the propensity models, and
        given to the join when it may reward an open decision (then True)."""
        if self.propensity is not None:
            scored = self.propensity.event(ev)
            if scored is not None:
                self.scores[scored[0]] = (scored[1], scored[2], int(ev["ts"]))
        etype = ev.get("type")
        did = ev.get("decision_id")
        if etype in REACTION_TYPES and isinstance(did, str):
            ref = parse_decision_id(did)
            if ref is None or ref[0] not in self.active:
                return False
            value = None
            if etype == REWARD:
                raw = (ev.get("props") or {}).get("value")
                if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw <= 1:
                    return False
                value = float(raw)
            try:
                self.join.reaction(Reaction(str(ev["event_id"]), str(etype), _ts(ev["ts"]),
                                            decision_id=did, value=value))
            except (KeyError, TypeError, ValueError):
                return False
            return True
        if etype in self.goal_types and isinstance(ev.get("visitor_id"), str):
            try:
                self.join.reaction(Reaction(str(ev["event_id"]), str(etype), _ts(ev["ts"]),
                                            visitor_id=ev["visitor_id"]))
            except (KeyError, TypeError, ValueError):
                return False
            return True
        return False

    # -- the Rank/Reward API -----------------------------------------------------------------

    def rank(self, rec: Mapping[str, Any]) -> bool:
        """A record of the `rank` topic: a decision (one window per slot), a reward or an
        activation; True when it was given to the join."""
        kind = rec.get("type")
        try:
            if kind == RANK_TYPE:
                return self._rank_decision(rec)
            eid = str(rec["decision_id"])
            ts = _ts(rec["ts"])
            if kind == ACTIVATE_TYPE:
                self.join.reaction(Reaction(str(rec["event_id"]), "activate", ts, decision_id=eid))
                return True
            if kind == REWARD_TYPE:
                slot = None
                if rec.get("slot") is not None:
                    ids = self.rank_slots.get(eid, (0, ()))[1]
                    if rec["slot"] not in ids:
                        return False
                    slot = ids.index(rec["slot"])
                self.join.reaction(Reaction(str(rec["event_id"]), REWARD, ts, decision_id=eid,
                                            slot=slot, value=float(rec["value"])))
                return True
        except (KeyError, TypeError, ValueError):
            return False
        return False

    def _rank_decision(self, rec: Mapping[str, Any]) -> bool:
        if self.rank_model is None:
            return False
        eid = str(rec["event_id"])
        ts = _ts(rec["ts"])
        slots = list(rec["slots"])
        actions = [str(a) for a in rec["actions"]]
        features = dict(rec.get("features") or {})
        context = dict(rec.get("context") or {})
        if isinstance(self.rank_model, Apprentice) and not self.rank_model.switched \
                and rec.get("mode") == "apprentice":
            # the owner keeps the agreement count: would the policy have shown the baseline?
            self.rank_model.decide(actions, eid, [str(s["baseline"]) for s in slots], context,
                                   len(slots), action_features=features,
                                   slot_features=[s.get("features") or {} for s in slots])
            self.changed.add(RANK_MODEL)
        self.rank_slots[eid] = (_ms(ts), tuple(str(s["id"]) for s in slots))
        for i, s in enumerate(slots):
            self.join.decision(LoggedDecision(
                decision_id=eid, campaign=RANK_MODEL, arm=str(s["arm"]),
                probability=float(s["probability"]), ts=ts, slot=i,
                active=bool(rec.get("active", True)),
                context={"context": {**context, **(s.get("features") or {})},
                         "features": features},
            ))
        return True

    def advance(self) -> int:
        """Close the windows that ended; update each model once per closed decision."""
        n = 0
        for r in self.join.advance():
            cid = r.decision.campaign
            if cid == RANK_MODEL:
                if self.rank_model is not None:
                    ctx = r.decision.context or {}
                    self.rank_model.update(r.decision.arm, r.reward, ctx.get("context"),
                                           action_features=ctx.get("features"))
                    self.changed.add(RANK_MODEL)
                    self.rows.setdefault(cid, []).append({
                        "decision_id": r.decision.decision_id, "slot": r.decision.slot,
                        "arm": r.decision.arm, "probability": r.decision.probability,
                        "reward": r.reward, "ts": _ms(r.decision.ts), "defaulted": r.defaulted,
                    })
                    n += 1
                continue
            model = self.models.get(cid)
            if model is None or cid not in self.active:
                continue
            row: dict[str, Any] = {
                "decision_id": r.decision.decision_id, "arm": r.decision.arm,
                "probability": r.decision.probability, "reward": r.reward,
                "ts": _ms(r.decision.ts), "defaulted": r.defaulted,
            }
            logged = r.decision.context
            if logged is None:
                model.update(r.decision.arm, r.reward)
            else:
                x = dict(logged.get("features") or {})
                if logged.get("slot") is not None:
                    row["slot"] = logged["slot"]
                    x["slot"] = str(logged["slot"])  # as policy.slot_features gave it
                if logged.get("features") is not None:
                    row["features"] = dict(logged["features"])
                model.update(r.decision.arm, r.reward, x)
            self.changed.add(cid)
            self.rows.setdefault(cid, []).append(row)
            n += 1
        if self.propensity is not None:
            self.propensity.advance(_ms(self.clock()))
        horizon = _ms(self.clock() - 2 * self.window)
        for eid in [e for e, (t, _) in self.rank_slots.items() if t < horizon]:
            del self.rank_slots[eid]
        return n

    # -- state -----------------------------------------------------------------------------

    @property
    def counters(self) -> dict[str, int]:
        return dict(self.join.counters)

    def model_bytes(self, cid: str) -> bytes:
        if cid == RANK_MODEL:
            return bytes(self.rank_model.snapshot())
        return self.models[cid].snapshot()

    def take_changed(self) -> dict[str, bytes]:
        """The bytes of every model changed since the last call (to publish)."""
        out = {cid: self.model_bytes(cid) for cid in sorted(self.changed)
               if cid in self.models or (cid == RANK_MODEL and self.rank_model is not None)}
        self.changed.clear()
        return out

    def take_scores(self) -> dict[str, tuple[float, float, int]]:
        """The visitors' new propensity scores since the last call (to write)."""
        scores, self.scores = self.scores, {}
        return scores

    @property
    def drift_detections(self) -> dict[str, int]:
        """Detected drifts per watched model: each bandit arm's reward rate, each propensity
        model's error."""
        out: dict[str, int] = {}
        for cid, m in self.models.items():
            for arm, n in getattr(m, "drift_detections", {}).items():
                out[f"{cid}:{arm}"] = n
        if self.propensity is not None:
            for name, n in self.propensity.drift_detections.items():
                out[f"propensity:{name}"] = n
        return out

    def take_rows(self) -> dict[str, list[dict[str, Any]]]:
        """The joined rows since the last call (they go out with the snapshot)."""
        rows, self.rows = self.rows, {}
        return rows

    def snapshot(self) -> bytes:
        """Versioned msgpack bytes of the whole state (see the module docstring)."""
        return msgpack.packb({
            "kind": KIND, "v": VERSION,
            "join": self.join.snapshot().to_bytes(),
            "models": {cid: [spec.kind, [list(p) for p in spec.params], self.model_bytes(cid)]
                       for cid, spec in self.specs.items() if cid in self.models},
            "offsets": dict(self.offsets),
            "rank": self.rank_model.snapshot() if self.rank_model is not None else None,
            "rank_slots": {e: [t, list(ids)] for e, (t, ids) in self.rank_slots.items()},
            "propensity": self.propensity.snapshot() if self.propensity is not None else None,
        }, use_bin_type=True)

    @classmethod
    def restore(cls, data: bytes | None, clock: Callable[[], datetime],
                window: timedelta, default_reward: float,
                rank_model: Callable[[bytes | None], Any] | None = None,
                propensity: Callable[[bytes | None], SessionPropensity] | None = None
                ) -> OfferLearner:
        """A learner from `snapshot()` bytes (a fresh one for None); ValueError if unreadable.
        `rank_model(bytes or None)` makes the Rank/Reward model, `propensity(bytes or None)`
        the propensity models (None: none)."""
        if not data:
            return cls(clock, window, default_reward,
                       rank_model=rank_model(None) if rank_model else None,
                       propensity=propensity(None) if propensity else None)
        doc = msgpack.unpackb(data, raw=False)
        if not isinstance(doc, dict) or doc.get("kind") != KIND or doc.get("v") != VERSION:
            raise ValueError("not a learner snapshot of this version")
        specs: dict[str, PolicySpec] = {}
        models: dict[str, Bandit] = {}
        for cid, (kind, params, blob) in doc["models"].items():
            spec = PolicySpec(kind, tuple((str(k), float(v)) for k, v in params))
            specs[cid] = spec
            models[cid] = restore_model(spec, blob)
        learner = cls(clock, window, default_reward, models=models, specs=specs,
                      offsets={str(k): int(v) for k, v in doc["offsets"].items()},
                      join_state=JoinState.from_bytes(doc["join"]),
                      rank_model=rank_model(doc.get("rank")) if rank_model else None,
                      rank_slots={str(e): (int(t), tuple(ids))
                                  for e, (t, ids) in (doc.get("rank_slots") or {}).items()},
                      propensity=propensity(doc.get("propensity")) if propensity else None)
        learner.changed.clear()
        return learner
