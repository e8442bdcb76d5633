"""A visitor's (or a known user's) profile as the API shows it, scores decayed to now, with
the visitor's learnt purchase and exit propensity (`propensity`, from the learner) when known."""

from __future__ import annotations

from typing import Any

from engine.store.activity import ActivityStore
from engine.store.learning import PropensityStore
from engine.store.profiles import ProfileStore
from models.affinity import AffinityConfig, view


class Profiles:
    def __init__(self, store: ProfileStore, activity: ActivityStore, cfg: AffinityConfig,
                 propensity: PropensityStore | None = None) -> None:
        self.store = store
        self.propensity = propensity
        self.activity = activity
        self.cfg = cfg

    async def explain(self, some_id: str, now_ms: int, *, top: int, explain: bool,
                      with_activity: bool) -> dict[str, Any] | None:
        """The profile of a visitor id (following its alias) or a user id; None if unknown."""
        found = await self.store.find(some_id)
        if found is None or found[1].profile is None:
            return None
        pid, stored = found
        assert stored.profile is not None
        body = view(stored.profile, now_ms, self.cfg, top=top, explain=explain)
        kind, _, ident = pid.partition(":")
        body = {"profile_id": pid, "visitor_id": some_id if kind == "v" else None, **body}
        if kind == "u":
            body["user_id"] = ident
        if self.propensity is not None:
            body["propensity"] = await self.propensity.get(some_id) if kind == "v" else None
        if with_activity:
            body["activity"] = await self.activity.recent(pid)
        return body
