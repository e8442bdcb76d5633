"""The decision logic's view of stored state, and the records it produces. Pure.

- `rule_view`: a stored `Profile` as the rules and templates see it (affinities as
  `{dimension: {key: score}}` maps), the one place that adapts `models.affinity.view`.
- `cap_states`: the per-campaign `CapState` from the visitor's campaign hashes as read.
- decision ids that carry their campaign and arm (`<campaign>.<arm>.<random>`), so a
  reaction (impression, click, dismiss) that echoes only the `decision_id` is attributable
  without a lookup, in any order relative to the decision record.
- `decision_record`: a decision as an event of type `decision` (its `event_id` is the
  decision id), which is what the `decisions` topic carries and the stream counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.logic.decisions.caps import CapState, day_key
from engine.logic.decisions.config import Config
from engine.logic.decisions.rules import Now
from engine.logic.decisions.select import Decision
from models.affinity import AffinityConfig, Profile, rules_view

DECISION_TYPE = "decision"
ID_RANDOM_CHARS = 10
MAX_ID_LEN = 64


def rule_view(profile: Profile | None, pid: str, now_ms: int, cfg: AffinityConfig,
              top: int = 20) -> dict[str, Any]:
    """The profile view the rules expect: affinities as `{dim: {key: score}}`."""
    body = rules_view(profile or Profile(), now_ms, cfg)
    body["profile_id"] = pid
    return body


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def cap_states(state: Mapping[Any, Any], sessions: Mapping[Any, Any], config: Config,
               now: Now) -> dict[str, CapState]:
    """`CapState` per campaign from the `campaign_state` and `campaign_session` hashes."""
    fields: dict[str, dict[str, str]] = {}
    for k, v in state.items():
        cid, _, name = _s(k).rpartition(":")
        if cid:
            fields.setdefault(cid, {})[name] = _s(v)
    sess = {_s(k): _int(v) for k, v in sessions.items()}
    out: dict[str, CapState] = {}
    for cid in set(fields) | set(sess):
        f = fields.get(cid, {})
        campaign = config.campaigns.get(cid)
        today = _int(f.get("today")) if campaign and f.get("day") == day_key(campaign, now) else 0
        at = f.get("at")
        out[cid] = CapState(
            today=today,
            session=sess.get(cid, 0),
            dismissed="dismissed" in f,
            clicked="clicked" in f,
            converted="converted" in f,
            assigned_at=_int(at) if at is not None else None,
            arm=f.get("arm"),
        )
    return out


def decision_id(campaign_id: str, arm: str, random_chars: str) -> str:
    """`<campaign>.<arm>.<random>`: ids are [a-z0-9_-], so the dots separate unambiguously."""
    return f"{campaign_id}.{arm}.{random_chars[:ID_RANDOM_CHARS]}"


def parse_decision_id(did: Any) -> tuple[str, str] | None:
    """(campaign, arm) of a decision id made by `decision_id` (signed by the engine's MAC as a
    fourth part, engine.logic.access.signed_decision_id, or not), else None."""
    if not isinstance(did, str):
        return None
    parts = did.split(".")
    if len(parts) not in (3, 4) or not all(parts):
        return None
    return parts[0], parts[1]


def decision_record(d: Decision, did: str, visitor_id: str, user_id: str | None, now_ms: int,
                    channel: str | None = None) -> dict[str, Any]:
    """The decision as an event (type `decision`, `event_id` = `decision_id`)."""
    rec: dict[str, Any] = {
        "event_id": did,
        "type": DECISION_TYPE,
        "visitor_id": visitor_id,
        "ts": now_ms,
        "received_at": now_ms,
        "decision_id": did,
        "props": {
            "campaign": d.campaign_id,
            "variant": d.variant_id,
            "arm": d.arm,
            "control": d.control,
            "zone": d.zone,
            "probability": d.probability,
        },
    }
    if d.policy != "fixed":
        rec["props"]["policy"] = d.policy
    if d.slot is not None:
        rec["props"]["slot"] = d.slot
    if d.features is not None:  # what the contextual policy decided on: the learner learns it
        rec["props"]["features"] = d.features
    if user_id:
        rec["user_id"] = user_id
    if channel:
        rec["channel"] = channel
    return rec
