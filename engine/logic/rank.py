"""The Rank/Reward API's logic (a home for Personalizer's users). Pure.

`POST /v1/rank` — context features, up to `MAX_ACTIONS` actions each with its own features,
excluded actions, an optional event id, optional slots (each with its own features and
baseline), `defer_activation`:

    {"event_id": "e-1", "context": {"device": "mobile"},
     "actions": [{"id": "news", "features": {"topic": "news"}}, {"id": "sport"}],
     "excluded_actions": ["sport"], "slots": [{"id": "top", "baseline": "news"}],
     "defer_activation": false}

answers the chosen action per slot with its probability and every action's, and the ranking
(`rank`): the chosen actions, then the others by probability. The policy is the learner's
contextual model (models/bandit/contextual.py `LinearContextual`), in apprentice mode when the
model says so (the baseline served with probability 1 until the policy agrees with it a set
share of the time). `record` is what the learner reads from the `rank` topic;
`reward_record` / `activation_record` are the answers' follow-ups.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from models.bandit.apprentice import Apprentice

MAX_ACTIONS = 50
MAX_SLOTS = 10
MAX_FEATURES_BYTES = 8_192  # per features object, as JSON
RANK_MODEL = "_rank"  # the model's name (a campaign id cannot start with "_")
RANK_TYPE = "rank"
REWARD_TYPE = "reward"
ACTIVATE_TYPE = "activate"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-:]{0,63}$")
_ACTION_ID = re.compile(r"^[^\x00-\x1f]{1,256}$")


class RankError(ValueError):
    """A request the API answers with a 4xx naming `field`."""

    def __init__(self, field: str, reason: str, status: int = 400) -> None:
        super().__init__(f"{field} {reason}")
        self.field, self.reason, self.status = field, reason, status


@dataclass(frozen=True, slots=True)
class RankRequest:
    event_id: str | None
    context: dict[str, Any]
    actions: tuple[str, ...]  # in request order, excluded ones removed
    features: dict[str, dict[str, Any]]  # action id -> its features
    slots: tuple[dict[str, Any], ...]  # each {"id", "features", "baseline"}
    deferred: bool


def _features(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RankError(field, "must be an object of features")
    if len(msgspec.json.encode(value)) > MAX_FEATURES_BYTES:
        raise RankError(field, f"must be at most {MAX_FEATURES_BYTES} bytes as JSON")
    for k, v in value.items():
        if not isinstance(v, str | int | float | bool | None) and not (
                isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise RankError(f"{field}.{k}", "must be a string, number, boolean or list of strings")
    return dict(value)


def event_id_ok(value: Any) -> bool:
    return isinstance(value, str) and bool(_ID.match(value))


def parse_rank(doc: Any) -> RankRequest:
    """Validate a rank request; RankError names the first bad field."""
    if not isinstance(doc, dict):
        raise RankError("body", "must be an object with actions")
    unknown = set(doc) - {"event_id", "context", "context_features", "actions",
                          "excluded_actions", "slots", "defer_activation"}
    if unknown:
        raise RankError(sorted(unknown)[0], "is not a known field")
    eid = doc.get("event_id")
    if eid is not None and not event_id_ok(eid):
        raise RankError("event_id", "must be 1-64 characters of A-Z, a-z, 0-9, '_', '-', ':'")
    context = _features(doc.get("context", doc.get("context_features")), "context")
    raw = doc.get("actions")
    if not isinstance(raw, list) or not raw:
        raise RankError("actions", "must be a non-empty list")
    if len(raw) > MAX_ACTIONS:
        raise RankError("actions", f"must hold at most {MAX_ACTIONS} actions")
    ids: list[str] = []
    features: dict[str, dict[str, Any]] = {}
    for i, a in enumerate(raw):
        if not isinstance(a, dict) or not isinstance(a.get("id"), str) \
                or not _ACTION_ID.match(a["id"]):
            raise RankError(f"actions[{i}].id", "must be a string of 1-256 characters")
        if a["id"] in features:
            raise RankError(f"actions[{i}].id", f"duplicates {a['id']!r}")
        features[a["id"]] = _features(a.get("features"), f"actions[{i}].features")
        ids.append(a["id"])
    excluded = doc.get("excluded_actions", [])
    if not isinstance(excluded, list) or not all(isinstance(x, str) for x in excluded):
        raise RankError("excluded_actions", "must be a list of action ids")
    for x in excluded:
        if x not in features:
            raise RankError("excluded_actions", f"names {x!r}, which is not an action")
    left = tuple(a for a in ids if a not in set(excluded))
    slots_raw = doc.get("slots")
    slots: list[dict[str, Any]] = []
    if slots_raw is None:
        slots.append({"id": "0", "features": {}, "baseline": left[0] if left else None})
    else:
        if not isinstance(slots_raw, list) or not slots_raw or len(slots_raw) > MAX_SLOTS:
            raise RankError("slots", f"must be a list of 1-{MAX_SLOTS} slots")
        for i, s in enumerate(slots_raw):
            if not isinstance(s, dict) or not isinstance(s.get("id"), str) or not s["id"]:
                raise RankError(f"slots[{i}].id", "is required (a string)")
            base = s.get("baseline", s.get("baseline_action"))
            if base is not None and base not in left:
                raise RankError(f"slots[{i}].baseline", "must name an action not excluded")
            slots.append({"id": s["id"], "features": _features(s.get("features"),
                                                               f"slots[{i}].features"),
                          "baseline": base})
        if len({s["id"] for s in slots}) != len(slots):
            raise RankError("slots", "ids must be distinct")
    if len(left) < len(slots):
        raise RankError("actions", f"must leave at least {len(slots)} action(s) after the "
                        "excluded ones (one per slot)")
    defaults = [a for a in left if a not in {s["baseline"] for s in slots}]
    for s in slots:  # a slot without a baseline takes the next action in request order
        if s["baseline"] is None:
            s["baseline"] = defaults.pop(0)
    if len({s["baseline"] for s in slots}) != len(slots):
        raise RankError("slots", "baselines must be distinct actions")
    deferred = doc.get("defer_activation", False)
    if not isinstance(deferred, bool):
        raise RankError("defer_activation", "must be true or false")
    return RankRequest(eid, context, left, features, tuple(slots), deferred)


def rank(model: Any, req: RankRequest, event_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the answer, the per-slot choices) for one request with the current model (read only).

    Slot s's probabilities are conditional on the earlier slots' choices: what was shown,
    given what was already taken, which is what the learner's estimators need."""
    arms = list(req.actions)
    n = len(req.slots)
    apprentice = isinstance(model, Apprentice) and not model.switched
    policy = model.policy if isinstance(model, Apprentice) else model
    if apprentice:
        slots = [{"arm": s["baseline"], "probability": 1.0,
                  "probabilities": {a: (1.0 if a == s["baseline"] else 0.0) for a in arms}}
                 for s in req.slots]
        mode = "apprentice"
    else:
        d = policy.decide(arms, event_id, req.context, n, action_features=req.features,
                          slot_features=[s["features"] for s in req.slots])
        slots = [{"arm": s.arm, "probability": s.probability,
                  "probabilities": dict(s.probabilities)} for s in d.slots]
        mode = "online"
    chosen = [s["arm"] for s in slots]
    first = slots[0]["probabilities"]
    rest = sorted((a for a in arms if a not in chosen), key=lambda a: (-first.get(a, 0.0), arms.index(a)))
    ranking = [{"id": a, "probability": round(first.get(a, 0.0), 9)} for a in chosen + rest]
    answer = {
        "event_id": event_id,
        "mode": mode,
        "reward_action_id": chosen[0],
        "ranking": ranking,
        "slots": [{"id": s["id"], "reward_action_id": c["arm"],
                   "probability": round(c["probability"], 9),
                   "probabilities": {a: round(p, 9) for a, p in c["probabilities"].items()}}
                  for s, c in zip(req.slots, slots, strict=True)],
        "defer_activation": req.deferred,
    }
    return answer, slots


def record(req: RankRequest, event_id: str, slots: Sequence[Mapping[str, Any]], now_ms: int,
           mode: str) -> dict[str, Any]:
    """The decision as the `rank` topic carries it (what the learner needs to learn and to
    re-check apprentice agreement)."""
    return {
        "type": RANK_TYPE, "event_id": event_id, "ts": now_ms, "mode": mode,
        "context": req.context, "actions": list(req.actions),
        "features": {a: f for a, f in req.features.items() if a in req.actions and f},
        "slots": [{"id": s["id"], "features": s["features"], "baseline": s["baseline"],
                   "arm": c["arm"], "probability": c["probability"]}
                  for s, c in zip(req.slots, slots, strict=True)],
        "active": not req.deferred,
    }


def parse_reward(doc: Any) -> tuple[float, str | None, str | None]:
    """`{"value": 0..1, "slot": "top"?, "reward_id": "r1"?}` -> (value, slot id, reward id):
    a retried call with the same `reward_id` counts once."""
    if isinstance(doc, int | float) and not isinstance(doc, bool):
        doc = {"value": doc}
    if not isinstance(doc, dict):
        raise RankError("body", "must be an object with value")
    value = doc.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise RankError("value", "must be a number in [0, 1]")
    slot = doc.get("slot", doc.get("slot_id"))
    if slot is not None and not isinstance(slot, str):
        raise RankError("slot", "must be a slot id (a string)")
    rid = doc.get("reward_id")
    if rid is not None and not event_id_ok(rid):
        raise RankError("reward_id", "must be 1-64 characters of A-Z, a-z, 0-9, '_', '-', ':'")
    return float(value), slot, rid


def reward_record(event_id: str, value: float, slot: str | None, now_ms: int,
                  token: str) -> dict[str, Any]:
    """An explicit reward on the `rank` topic (`token`, the caller's reward id or a random
    one, makes its own event id: the join counts one event id once)."""
    return {"type": REWARD_TYPE, "event_id": f"{event_id}/r/{token}", "decision_id": event_id,
            "ts": now_ms, "value": value, "slot": slot}


def activation_record(event_id: str, now_ms: int) -> dict[str, Any]:
    """`activate`: the content of a deferred decision was really shown."""
    return {"type": ACTIVATE_TYPE, "event_id": f"{event_id}/activate", "decision_id": event_id,
            "ts": now_ms}


def new_rank_model(apprentice: bool, agreement: float = 0.9, window: int = 500) -> Any:
    """The rank model before the learner published one: the river linear contextual policy,
    wrapped in apprentice mode when asked."""
    from models.bandit.contextual import LinearContextual

    policy = LinearContextual()
    return Apprentice(policy, agreement, window) if apprentice else policy


def restore_rank_model(blob: bytes | None, apprentice: bool, agreement: float = 0.9,
                       window: int = 500) -> Any:
    """The published rank model, or a fresh one (none yet, unreadable, or of the other mode)."""
    from models.bandit import restore

    if blob:
        try:
            model = restore(blob)
        except (ValueError, KeyError, TypeError):
            model = None
        if model is not None and isinstance(model, Apprentice) == apprentice:
            return model
    return new_rank_model(apprentice, agreement, window)
