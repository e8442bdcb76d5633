"""Frequency caps and campaign counters as pure functions: they return updates, never perform them.

Per visitor and campaign the store keeps a ``CapState``; per campaign and arm it keeps the stats
counters named in ``STAT_COUNTERS``. The stream applies the ``Effects`` these functions return.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.logic.decisions.config import Campaign, Caps
from engine.logic.decisions.rules import SESSION_MS, Now, as_datetime

REACTIONS = ("decision", "impression", "click", "dismiss")
STAT_COUNTERS = ("assigned", "impressions", "clicks", "dismissals", "conversions")
SESSION_TTL_MS = SESSION_MS
DAY_TTL_MS = 2 * 86_400_000


@dataclass(frozen=True, slots=True)
class CapState:
    """What the store holds for one (visitor, campaign); absent keys mean the defaults."""

    today: int = 0  # impressions on ``day_key(campaign, now)``
    session: int = 0  # impressions in the current session (sliding TTL SESSION_TTL_MS)
    dismissed: bool = False
    clicked: bool = False
    converted: bool = False
    assigned_at: int | None = None  # epoch ms of the first decision (exposure)
    arm: str | None = None  # arm of the first decision ("control" or a variant id)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> CapState:
        """Build from plain store data, ignoring unknown or ill-typed values."""
        if not data:
            return cls()

        def count(key: str) -> int:
            v = data.get(key)
            return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0

        at = data.get("assigned_at")
        arm = data.get("arm")
        return cls(
            today=count("today"),
            session=count("session"),
            dismissed=bool(data.get("dismissed")),
            clicked=bool(data.get("clicked")),
            converted=bool(data.get("converted")),
            assigned_at=int(at)
            if isinstance(at, int | float) and not isinstance(at, bool)
            else None,
            arm=arm if isinstance(arm, str) else None,
        )


@dataclass(frozen=True, slots=True)
class Effects:
    """Updates for the store: per-visitor cap state, and stats counters of one (campaign, arm)."""

    incr_today: int = 0
    incr_session: int = 0
    set_flags: frozenset[str] = frozenset()  # subset of {"dismissed", "clicked", "converted"}
    set_assigned: tuple[str, int] | None = None  # (arm, epoch ms), only if not yet assigned
    arm: str | None = None  # whose stats counters ``stats`` increments
    stats: Mapping[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (
            self.incr_today
            or self.incr_session
            or self.set_flags
            or self.set_assigned
            or self.stats
        )


NO_EFFECTS = Effects()


def day_key(campaign: Campaign, now: Now) -> str:
    """The calendar day (``YYYY-MM-DD``, campaign time zone) a per-day counter belongs to."""
    return as_datetime(now, campaign.schedule.timezone).date().isoformat()


def cap_reason(caps: Caps, state: CapState) -> str | None:
    """Why the visitor is capped for this campaign, or ``None`` when not capped."""
    if "dismiss" in caps.stop_after and state.dismissed:
        return "dismissed"
    if "conversion" in caps.stop_after and state.converted:
        return "converted"
    if "click" in caps.stop_after and state.clicked:
        return "clicked"
    if caps.per_session is not None and state.session >= caps.per_session:
        return "per_session"
    if caps.per_day is not None and state.today >= caps.per_day:
        return "per_day"
    return None


def reaction_effects(
    campaign: Campaign, state: CapState, reaction: str, arm: str, event_ms: int
) -> Effects:
    """Updates for a campaign-scoped event: decision, impression, click or dismiss."""
    if reaction == "decision":
        if state.assigned_at is not None:
            return NO_EFFECTS
        return Effects(set_assigned=(arm, event_ms), arm=arm, stats={"assigned": 1})
    stats_arm = state.arm or arm
    if reaction == "impression":
        return Effects(incr_today=1, incr_session=1, arm=stats_arm, stats={"impressions": 1})
    if reaction == "click":
        return Effects(set_flags=frozenset({"clicked"}), arm=stats_arm, stats={"clicks": 1})
    if reaction == "dismiss":
        return Effects(set_flags=frozenset({"dismissed"}), arm=stats_arm, stats={"dismissals": 1})
    raise ValueError(f"unknown reaction {reaction!r} (expected one of {REACTIONS})")


def conversion_effects(
    campaign: Campaign, state: CapState, event_type: str, event_ms: int
) -> Effects:
    """Updates when any visitor event may be this campaign's goal (first conversion only).

    Attribution is from the first decision (assignment), so the control group converts too.
    """
    goal = campaign.goal
    if goal is None or event_type != goal.event or state.converted or state.assigned_at is None:
        return NO_EFFECTS
    if not 0 <= event_ms - state.assigned_at <= goal.window_ms or state.arm is None:
        return NO_EFFECTS
    return Effects(set_flags=frozenset({"converted"}), arm=state.arm, stats={"conversions": 1})
