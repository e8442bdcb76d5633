"""Privacy requests (GDPR / CCPA): export everything Kairos holds about one person, and erase
it within seconds. Each request is written to the audit log.

A subject is a visitor id or a user id, resolved as the profile API does (a visitor follows
its alias to the known user). Erasing removes the profile, the aliases of every linked
device, the activity timeline, campaign state, and the online-CF vector, and writes
tombstones (kept `tombstone_days`, at least the events topic's retention) so that events of
that person still in Kafka, redelivered after a crash or replayed later, never bring the
profile back. What is not erased, because it holds no person: counters and tables summed over
many visitors (campaign stats, segment sizes, trending, co-occurrence). The per-partition CF
model in a worker's memory forgets the vector as it ages out of its bounded table."""

from __future__ import annotations

import time
from typing import Any

from engine.db.control import ControlPlane
from engine.settings import Settings
from engine.store import keys
from engine.store.activity import ActivityStore
from engine.store.privacy import PersonStore
from engine.store.profiles import ProfileStore
from models.affinity import view

TOMBSTONE_DAYS = 8  # the events topic keeps 7 days (engine/embedded.py, docker-compose.yml)


class Privacy:
    def __init__(self, redis: Any, control: ControlPlane, profiles: ProfileStore,
                 settings: Settings, tombstone_days: float = TOMBSTONE_DAYS) -> None:
        self.people = PersonStore(redis)
        self.activity = ActivityStore(redis)
        self.control = control
        self.profiles = profiles
        self.cfg = settings.affinity
        self.keep_ms = int(tombstone_days * 86_400_000)

    async def export(self, subject: str, *, actor: str, ip: str = "") -> dict[str, Any] | None:
        """Everything held about the subject as one document; None when nothing is."""
        found = await self.profiles.find(subject)
        await self.control.audit(actor, "privacy.export", subject, ip=ip,
                                 detail={"found": found is not None and found[1].profile is not None})
        if found is None or found[1].profile is None:
            return None
        pid, stored = found
        assert stored.profile is not None
        now_ms = int(time.time() * 1000)
        linked = list(stored.profile.aliases)
        doc: dict[str, Any] = {
            "subject": subject,
            "profile_id": pid,
            "exported_at_ms": now_ms,
            "profile": view(stored.profile, now_ms, self.cfg, top=1000, explain=True),
            "linked_visitors": linked,
            "activity": await self.activity.recent(pid, 1000),
            **await self.people.state(pid),
        }
        return doc

    async def erase(self, subject: str, *, actor: str, ip: str = "") -> dict[str, Any]:
        """Erase the subject (idempotent: erasing twice, or an unknown id, is fine)."""
        found = await self.profiles.find(subject)
        visitors: list[str] = [subject]
        if found is None:
            # nothing applied yet (its events may still be in Kafka): tombstone both forms
            pids = [keys.visitor_pid(subject), keys.user_pid(subject)]
        else:
            pid, stored = found
            pids = [pid]
            if pid.startswith("u:"):
                visitors = []  # a user id is not a visitor's alias
            if stored.profile is not None:
                visitors += stored.profile.aliases
                pids += [keys.visitor_pid(v) for v in stored.profile.aliases]
        now_ms = int(time.time() * 1000)
        existed = await self.people.erase(pids, visitors, now_ms, self.keep_ms)
        result = {"subject": subject, "erased": found is not None, "keys_deleted": existed,
                  "profile_ids": sorted(set(pids)), "visitors": sorted(set(visitors)),
                  "tombstone_until_ms": now_ms + self.keep_ms}
        await self.control.audit(actor, "privacy.erase", subject, ip=ip,
                                 detail={k: v for k, v in result.items() if k != "subject"})
        return result
